"""Every row of PS3.15 Table E.1-1, for the Basic Profile and each option alone."""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest
from pydicom import Dataset
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.sequence import Sequence

from copydicom.stages.deid import OPTIONS, DeidProfile, DeidStage
from copydicom.stages.deid._keyed import date_offset_days, is_valid_uid, keyed_uid

KEY = b"conformance-key-0123456789abcdef"
ROWS: list[dict[str, Any]] = json.loads(
    resources.files("copydicom.stages.deid").joinpath("data").joinpath("ps315_e1_1.json").read_text()
)["rows"]
SINGLE = [r for r in ROWS if all(c in "0123456789ABCDEF" for c in r["tag"])]
ALLOWED = {"X": {"X"}, "Z": {"Z"}, "D": {"D"}, "K": {"K"}, "C": {"C"}, "U": {"U"},
           "X/Z": {"X", "Z"}, "X/D": {"X", "D"}, "X/Z/D": {"X", "Z", "D"}, "Z/D": {"Z", "D"},
           "X/Z/U*": {"X", "Z", "U"}}
BASE_TAGS = {0x00080016, 0x00080018, 0x0020000D, 0x0020000E, 0x00100020, 0x00100010}


def test_table_loaded_whole() -> None:
    from copydicom.stages.deid._tables import edition

    assert len(ROWS) == 656
    assert len(SINGLE) == 652
    assert edition() == "DICOM PS3.15 2026c"


def _vr(tag: int) -> str:
    try:
        return str(dictionary_VR(tag)).split(" or ")[0]
    except KeyError:
        return "LO"


def _value(vr: str, n: int) -> Any:
    values: dict[str, Any] = {
        "PN": f"CANARY^ROW{n}", "DA": "20200115", "DT": "20200115103000", "TM": "103000",
        "UI": f"1.2.3.4.{n}", "DS": "1.5", "IS": "7", "AS": "045Y", "CS": "CANARY", "AE": "CANARY",
        "UR": "http://canary.example/x", "AT": 0x00100010,
    }
    if vr in values:
        return values[vr]
    if vr in ("US", "SS", "UL", "SL", "UV", "SV"):
        return 7
    if vr in ("FL", "FD"):
        return 7.5
    if vr in ("OB", "OW", "OD", "OF", "OL", "OV", "UN"):
        return b"CANARY\x00\x00"
    return f"CANARY ROW {n}"


def _dataset(tag: int, vr: str, value: Any) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.SOPInstanceUID = "1.2.3.100"
    ds.StudyInstanceUID = "1.2.3.101"
    ds.SeriesInstanceUID = "1.2.3.102"
    ds.PatientID = "PID-CONF"
    if vr == "SQ":
        item = Dataset()
        item.ReferencedSOPInstanceUID = "1.2.3.103"
        item.PersonName = "CANARY^NESTED"
        value = Sequence([item])
    ds.add(DataElement(tag, vr, value))
    return ds


@pytest.mark.parametrize("option", ("basic",) + OPTIONS)
def test_every_row(option: str) -> None:
    options = [] if option == "basic" else [option]
    stage = DeidStage(DeidProfile(name=option, options=tuple(options)), KEY)
    offset = date_offset_days(KEY, "PID-CONF", -3650, -1)
    failures: list[str] = []
    for n, row in enumerate(SINGLE):
        tag = int(row["tag"], 16)
        if tag in BASE_TAGS or tag >> 16 == 0x0002:
            continue
        expected = row["options"].get(option, row["basic"]) if option != "basic" else row["basic"]
        vr = _vr(tag)
        original = _value(vr, n)
        out, audit = stage.deidentify_dataset(_dataset(tag, vr, original))
        label = f"({tag >> 16:04X},{tag & 0xFFFF:04X})"
        got = [a for t, a in audit if t == label]
        if len(got) != 1 or got[0] not in ALLOWED[expected]:
            failures.append(f"{label} {row['keyword']}: expected {expected}, audit {got}")
            continue
        action = got[0]
        elem = out.get(tag)
        if action == "X":
            ok = elem is None
        elif action == "K":
            ok = elem is not None and (vr == "SQ" or elem.value == original)
        elif action == "Z":
            ok = elem is not None and elem.value in (None, "", b"", [])
        elif action == "D":
            ok = elem is not None and elem.value not in (None, "") and (vr == "SQ" or elem.value != original)
            if vr == "SQ":  # one item of dummies of the right VRs (a Type 1 sequence keeps its item)
                ok = (elem is not None and len(elem.value) == 1
                      and elem.value[0].PersonName == "ANONYMOUS"
                      and elem.value[0].ReferencedSOPInstanceUID == keyed_uid(KEY, "1.2.3.103"))
        elif action == "U":
            if vr == "UI":
                ok = elem is not None and elem.value == keyed_uid(KEY, original) and is_valid_uid(elem.value)
            else:
                ok = elem is not None and vr == "SQ" and elem.value[0].ReferencedSOPInstanceUID == keyed_uid(
                    KEY, "1.2.3.103")
        else:  # C
            if vr == "DA":
                import datetime as dt

                want = (dt.date(2020, 1, 15) + dt.timedelta(days=offset)).strftime("%Y%m%d")
                ok = elem is not None and elem.value == want
            elif vr == "DT":
                import datetime as dt

                want = (dt.date(2020, 1, 15) + dt.timedelta(days=offset)).strftime("%Y%m%d") + "103000"
                ok = elem is not None and elem.value == want
            elif vr == "SQ":
                ok = elem is not None and len(elem.value) == 1 and elem.value[0].get("PersonName") != "CANARY^NESTED"
            elif vr in ("PN", "LO", "SH", "ST", "LT", "UT", "UC"):
                ok = elem is not None and "CANARY" not in str(elem.value)
            else:
                ok = elem is None or "CANARY" not in str(elem.value)
        if not ok:
            failures.append(f"{label} {row['keyword']}: action {action} not applied ({vr})")
    assert failures == []


def _private_ds() -> Dataset:
    ds = _dataset(0x00080050, "SH", "ACC")
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "DS", "12.5")  # safe: DLP (Table E.3.10-1)
    ds.add_new(0x00E11099, "LO", "CANARY UNSAFE")
    ds.add_new(0x00090010, "LO", "CANARYCORP")
    ds.add_new(0x00091001, "LO", "CANARY PRIVATE")
    return ds


def test_private_removed_by_basic_profile() -> None:
    out, audit = DeidStage(DeidProfile(options=()), KEY).deidentify_dataset(_private_ds())
    assert [e.tag for e in out if e.tag.is_private] == []
    assert ["(00E1,xx21)", "X"] in audit


def test_retain_safe_private_keeps_table_e3_10_1_only() -> None:
    out, audit = DeidStage(DeidProfile(options=("retain_safe_private",)), KEY).deidentify_dataset(_private_ds())
    assert [int(e.tag) for e in out if e.tag.is_private] == [0x00E10010, 0x00E11021]
    assert out[0x00E11021].value == 12.5
    assert ["(00E1,xx21)", "K"] in audit and ["(00E1,xx99)", "X"] in audit


@pytest.mark.parametrize("option,kept", [("basic", False), ("clean_graphics", True)])
def test_curves_and_overlays(option: str, kept: bool) -> None:
    ds = _dataset(0x00080050, "SH", "ACC")
    ds.add_new(0x50003000, "OB", b"CANARYCURVE")
    ds.add_new(0x50022500, "LO", "CANARY CURVE LABEL")
    ds.add_new(0x60003000, "OB", b"CANARYOVERLAY")
    ds.add_new(0x60004000, "LT", "CANARY OVERLAY COMMENT")
    ds.add_new(0x60000010, "US", 16)
    options = () if option == "basic" else (option,)
    out, audit = DeidStage(DeidProfile(options=options), KEY).deidentify_dataset(ds)
    assert 0x50003000 not in out and 0x60003000 not in out
    assert "CANARY" not in str(out.get(0x60004000, "")) and "CANARY" not in str(out.get(0x50022500, ""))
    # X, and C when not cleaned, remove the whole overlay group: a partial module breaks readers.
    assert [e.tag for e in out if e.tag.group == 0x6000] == []
    assert ["(6000,xxxx)", "X"] in audit
    code = "C" if kept else "X"
    assert ["(5002,2500)", code] in audit and ["(6000,3000)", code] in audit and ["(5000,3000)", code] in audit
