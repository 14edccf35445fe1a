"""The rule table: CTP's DicomPixelAnonymizer rules converted from deid 0.4.13, and the config's own rules."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
from pydicom import dcmread

from copydicom.errors import ConfigError
from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from copydicom.stages.pixels import PixelSettings, builtin_rules, matching, rule_from_config, table_info
from copydicom.stages.pixels._rules import matches
from tests.support.ultrasound import us_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "tools"))
import gen_pixel_rules  # noqa: E402

KEY = b"pixel-rules-key-0123456789abcdef"
OPTIONS = ["retain_long_modified_dates", "clean_structured_content", "clean_pixel_data"]


def _bytes(ds: object) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)  # type: ignore[attr-defined]
    return buf.getvalue()


def test_builtin_table_is_the_converted_ctp_script_with_its_provenance() -> None:
    rules = builtin_rules()
    assert len(rules) == 109
    assert sum(1 for r in rules if r.rects) == 105
    assert sum(len(r.rects) for r in rules) == 117
    info = table_info()
    assert "deid 0.4.13" in info["source"] and "MIT" in info["licence"] and len(info["source_sha256"]) == 64
    assert all(x0 < x1 and y0 < y1 for r in rules for x0, y0, x1, y1 in r.rects)


def test_generator_reads_both_rectangle_conventions_and_deid_operators() -> None:
    recipe = """FORMAT dicom
%filter whitelist
LABEL Skipped # (whitelist is not a masking rule)
  contains Modality CT
%filter graylist
LABEL CTP style # (someone)
  contains Modality US
  + contains ManufacturerModelName SOMATOM Definition AS+
  + equals Rows 480 || equals Rows 476
  ctpcoordinates 10,20,30,40
coordinates 1,2, 3,4
LABEL Misspelt
  contains Manfacturer ADAC
  ctpcoordinates 0,0,5,5
%filter blacklist
LABEL Any REPORTDATA
  contains ImageType REPORTDATA
"""
    rules, fixes = gen_pixel_rules.convert(recipe)
    assert [r["label"] for r in rules] == ["CTP style", "Misspelt"]
    first = rules[0]
    assert first["rects"] == [[10, 20, 40, 60], [1, 2, 3, 4]]
    assert [[(c["op"], c["field"], c["value"]) for c in clause] for clause in first["all"]] == [
        [("contains", "Modality", "US")],
        [("contains", "ManufacturerModelName", "SOMATOM Definition AS+")],
        [("equals", "Rows", "480"), ("equals", "Rows", "476")],
    ]
    assert rules[1]["all"][0][0]["field"] == "Manufacturer" and fixes == ["Misspelt: Manfacturer -> Manufacturer"]


def test_conditions_follow_deid_semantics() -> None:
    ds = us_dataset([np.zeros((476, 640), np.uint8)], manufacturer="ATL Ultrasound", model="HDI 5000 SonoCT")
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.SeriesDescription = ""

    def rule(when: dict[str, object]) -> bool:
        return matches(ds, rule_from_config({"when": when, "rects": [[0, 0, 1, 1]]}, where="r"))

    assert rule({"Manufacturer": {"contains": "atl"}})  # case-insensitive search
    assert rule({"Modality": {"contains": "CT|US"}})  # a regular expression, as in CTP's scripts
    assert rule({"ImageType": {"contains": "SCREEN SAVE"}})  # multiple values
    assert rule({"Rows": 476, "Columns": "640"}) and not rule({"Rows": 480})
    assert rule({"Rows": [480, 476]})  # any of the listed values
    assert rule({"SeriesDescription": {"empty": None}}) and not rule({"SeriesDescription": {"missing": None}})
    assert rule({"ProtocolName": {"missing": None}}) and rule({"Manufacturer": {"notcontains": "GE"}})
    assert rule({"ImplementationVersionName": {"missing": None}})  # file meta is looked at too
    assert [r.label for r in matching(ds, builtin_rules())] == ["ATL HDI 5000"]


def test_a_matching_builtin_rule_masks_exactly_its_rectangles() -> None:
    # CTP's "ATL HDI 5000": US, ATL, 476 x 640, HDI 5000 -> x,y,w,h 40,0,200,40 and 240,0,190,16.
    flat = np.full((476, 640), 200, np.uint8)
    ds = us_dataset([flat], manufacturer="ATL", model="HDI 5000")
    stage = DeidStage(DeidProfile.from_mapping("us", {"options": OPTIONS}, where="p"), KEY)
    out = dcmread(io.BytesIO(stage.process(Instance(InstanceRef("a"), _bytes(ds))).data))
    expected = flat.copy()
    expected[0:40, 40:240] = 0
    expected[0:16, 240:430] = 0
    assert np.array_equal(out.pixel_array, expected)
    assert out.BurnedInAnnotation == "NO"


def test_config_rules_add_to_the_table_and_can_replace_it() -> None:
    flat = np.full((480, 640), 200, np.uint8)
    data = {"options": OPTIONS, "builtin_pixel_rules": False, "pixel_rules": [
        {"label": "ACME SONO 1", "when": {"Manufacturer": "ACME", "ManufacturerModelName": "SONO 1", "Rows": 480},
         "rects": [[0, 0, 640, 30]], "ctp_rects": [[600, 440, 40, 40]]},
        {"label": "other model", "when": {"ManufacturerModelName": "SONO 2"}, "rects": [[0, 100, 640, 200]]},
    ]}
    profile = DeidProfile.from_mapping("us", data, where="profiles.us")
    assert profile.pixels.rules[0].rects == ((0, 0, 640, 30), (600, 440, 640, 480))
    out = DeidStage(profile, KEY).process(Instance(InstanceRef("a"), _bytes(us_dataset([flat]))))
    arr = dcmread(io.BytesIO(out.data)).pixel_array
    expected = flat.copy()
    expected[0:30, :] = 0
    expected[440:480, 600:640] = 0
    assert np.array_equal(arr, expected)
    assert ["(7FE0,0010)", "C(clean_pixel_data rules=1 rects=2 frames=1 ocr_frames=1 ocr_masked=0 "
            "ts=1.2.840.10008.1.2.1)"] in out.audit["deid"]


@pytest.mark.parametrize(("data", "message"), [
    ({"pixel_rules": [{"when": {}, "rects": [[0, 0, 10]]}]}, r"pixel_rules\[0\].rects\[0\]: expected 4"),
    ({"pixel_rules": [{"when": {}, "rects": [[5, 5, 5, 9]]}]}, r"rects\[0\]: empty rectangle"),
    ({"pixel_rules": [{"when": {"Rows": {"like": 1}}, "rects": [[0, 0, 1, 1]]}]}, "unknown operator 'like'"),
    ({"pixel_rules": [{"when": {"Rows": 1}}]}, "needs rects, ctp_rects or allow_text"),
    ({"pixel_rules": [{"when": {}, "rects": [], "colour": 1}]}, r"pixel_rules\[0\].colour: unknown key"),
    ({"ocr_text": "names"}, "ocr_text: must be 'any' or 'identifiers'"),
    ({"ocr_redact": "yes"}, "ocr_redact: expected true or false"),
    ({"ocr_min_confidence": 101}, "ocr_min_confidence"),
    ({"ocr_scale": 4}, "ocr_scale: 1, 2 or 3"),
])
def test_config_errors_name_the_key(data: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        PixelSettings.from_profile(data, where="profiles.us")


def test_unknown_option_lists_clean_pixel_data() -> None:
    with pytest.raises(ConfigError, match="clean_pixel_data"):
        DeidProfile.from_mapping("r", {"options": ["clean_pixels"]}, where="profiles.r")
