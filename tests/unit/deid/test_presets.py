"""Named presets: private_only and hipaa_safe_harbor, and their extension in the config."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from copydicom.errors import ConfigError
from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage, profiles_from_config, scan_dataset
from tests.support.synthetic import ct_dataset, to_bytes

KEY = b"presets-key-0123456789abcdef0123"


def _hipaa(ds: Dataset, profile: DeidProfile | None = None) -> Dataset:
    profile = profile or DeidProfile.named("hipaa_safe_harbor")
    assert profile is not None
    out = DeidStage(profile, KEY).process(Instance(InstanceRef("h"), to_bytes(ds)))
    assert out.dataset is not None
    return out.dataset


def test_hipaa_dates_reduced_to_year_at_any_depth() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.StudyDate = "20250317"
    item = Dataset()
    item.ValueType = "DATETIME"
    item.DateTime = "20240229101500"
    ds.ContentSequence = Sequence([item])
    ds.PatientAge = "045Y"
    ds.PatientBirthDate = "19800704"
    out = _hipaa(ds)
    assert out.StudyDate == "20250101" and out.ContentDate.endswith("0101")
    assert out.ContentSequence[0].DateTime == "2024"
    assert out.PatientAge == "045Y" and out.PatientBirthDate == "19800101"
    assert out.LongitudinalTemporalInformationModified == "MODIFIED"
    assert "StudyTime" not in out or out.StudyTime in ("", None)
    assert [str(f) for f in scan_dataset(out)] == []


@pytest.mark.parametrize("age,birth,want_age,want_birth", [
    ("092Y", "19330210", "090Y", "19350101"),
    ("", "19200101", None, "19350101"),    # over 89 by birth year and study year
    ("089Y", "19360101", "089Y", "19360101"),
])
def test_hipaa_ages_over_89_aggregated(age: str, birth: str, want_age: str | None, want_birth: str) -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = ds.ContentDate = "20250317"
    if age:
        ds.PatientAge = age
    ds.PatientBirthDate = birth
    out = _hipaa(ds)
    assert out.get("PatientAge") == want_age
    assert out.PatientBirthDate == want_birth


@pytest.mark.parametrize("address,zip3", [
    ("1 Main St, Springfield, MA 01103-1234", "011"),
    ("PO Box 1, Berlin NH 03601", "000"),  # a restricted three-digit area
    ("Flat 2, Some Street", None),
])
def test_hipaa_zip_beyond_three_digits_removed(address: str, zip3: str | None) -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.PatientAddress = address
    out = _hipaa(ds)
    assert out.get("PatientAddress") == zip3


def test_hipaa_free_text_and_identifiers() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.StudyDescription = "CT for SYNTHETIC0001, call 555-0101"
    out = _hipaa(ds)
    assert out.StudyDescription == "CLEANED"
    assert out.PatientID.startswith("ANON") and out.AccessionNumber in ("", None)
    assert out.get("InstitutionName") in ("", None)
    assert "SYNTHETIC0001" not in str(out)


def test_private_only_keeps_everything_public() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "DS", "12.5")
    ds.add_new(0x00091001, "LO", "vendor secret")
    profile = DeidProfile.named("private_only")
    assert profile is not None
    out = DeidStage(profile, KEY).process(Instance(InstanceRef("p"), to_bytes(ds)))
    assert out.dataset is not None and out.identity is not None
    for kw in ("PatientName", "PatientID", "StudyDate", "AccessionNumber", "SOPInstanceUID", "InstitutionName"):
        assert out.dataset.get(kw) == ds.get(kw), kw
    assert [e for e in out.dataset if e.tag.is_private] == []
    assert out.identity.sop_uid == ds.SOPInstanceUID


def test_presets_extended_in_config() -> None:
    profiles = profiles_from_config({"profiles": {
        "export": {"preset": "hipaa_safe_harbor", "options": ["retain_safe_private"], "free_text": "scrub"},
        "private_only": {"options": ["retain_safe_private"]},
    }})
    exp = profiles["export"]
    assert exp.preset == "hipaa_safe_harbor" and exp.free_text == "scrub"
    assert set(exp.options) == {"retain_patient_characteristics", "clean_descriptors",
                                "clean_structured_content", "retain_safe_private"}
    po = profiles["private_only"]
    assert po.preset == "private_only" and po.options == ("retain_safe_private",)
    ds = ct_dataset(1, rows=8, cols=8)
    ds.add_new(0x00E10010, "LO", "ELSCINT1")
    ds.add_new(0x00E11021, "DS", "12.5")  # safe (Table E.3.10-1)
    ds.add_new(0x00E11099, "LO", "unsafe")
    out, _ = DeidStage(po, KEY).deidentify_dataset(ds)
    assert [int(e.tag) for e in out if e.tag.is_private] == [0x00E10010, 0x00E11021]
    with pytest.raises(ConfigError, match=r"profiles.x.preset: unknown preset 'hippa'"):
        profiles_from_config({"profiles": {"x": {"preset": "hippa"}}})


def test_preset_through_the_config_file_and_cli(tmp_path: Path) -> None:
    import yaml
    from pydicom import dcmread

    from copydicom.cli import main

    key = tmp_path / "deid.key"
    key.write_text("0123456789abcdef0123456789abcdef")
    key.chmod(0o600)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"state": str(tmp_path / "s.db"), "profiles": {
        "export": {"preset": "hipaa_safe_harbor", "key_file": str(key), "options": ["retain_safe_private"]}}}))
    src = tmp_path / "in"
    src.mkdir()
    ds = ct_dataset(1, rows=8, cols=8)
    ds.StudyDate = "20250317"
    (src / "a.dcm").write_bytes(to_bytes(ds))
    out = tmp_path / "out"
    assert main(["deidentify", str(src), "--out", str(out), "--config", str(cfg), "--profile", "export"]) == 0
    [written] = list(out.iterdir())
    assert dcmread(written).StudyDate == "20250101"
    assert main(["deidentify", str(src), "--out", str(tmp_path / "o2"), "--profile", "private_only",
                 "--key-file", str(key)]) == 0
    [kept] = list((tmp_path / "o2").iterdir())
    assert dcmread(kept).PatientID == ds.PatientID
