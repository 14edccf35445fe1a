"""Profiles from config, key custody, mapping store and export, pixel gate, CLI."""

from __future__ import annotations

import csv
import os
import stat
from pathlib import Path

import pytest
import yaml
from pydicom import dcmread

from copydicom.cli import main
from copydicom.errors import ConfigError, DeidentificationError, InvalidInstance, PixelRiskError
from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import (
    DeidProfile,
    DeidStage,
    MappingStore,
    keyed_uid,
    load_key,
    profiles_from_config,
)
from tests.support.synthetic import ct_dataset, to_bytes

KEY = b"cli-key-0123456789abcdef-0123456"


def _private(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o600)
    return path


def test_profile_from_mapping_and_errors(tmp_path: Path) -> None:
    p = DeidProfile.from_mapping("r", {"options": ["retain_uids", "clean-descriptors"], "free_text": "scrub",
                                       "date_shift_days": [-10, -5]}, where="profiles.r")
    assert p.options == ("retain_uids", "clean_descriptors") and p.free_text == "scrub"
    assert p.date_shift_days == (-10, -5)
    with pytest.raises(ConfigError, match=r"profiles.r.options\[0\]: unknown option 'retain_all'"):
        DeidProfile.from_mapping("r", {"options": ["retain_all"]}, where="profiles.r")
    with pytest.raises(ConfigError, match=r"profiles.r.colour: unknown key"):
        DeidProfile.from_mapping("r", {"colour": 1}, where="profiles.r")
    with pytest.raises(ConfigError, match="exclude each other"):
        DeidProfile.from_mapping("r", {"options": ["retain_long_full_dates", "retain_long_modified_dates"]},
                                 where="profiles.r")
    with pytest.raises(ConfigError, match=r"profiles.r.patient_map.missing"):
        DeidProfile.from_mapping("r", {"patient_map": {"csv": "x", "missing": "drop"}}, where="profiles.r")
    assert DeidProfile.default().options == ("retain_long_modified_dates", "clean_structured_content")


def test_patient_map(tmp_path: Path) -> None:
    mapfile = _private(tmp_path / "map.csv", "patient_id,research_id\nSYN000001,STUDY-001\n")
    cfg = {"profiles": {"r": {"patient_map": {"csv": str(mapfile), "missing": "quarantine"}},
                        "p": {"patient_map": {"csv": str(mapfile), "missing": "pseudonym"}}}}
    profiles = profiles_from_config(cfg)
    stage = DeidStage(profiles["r"], KEY)
    out = stage.process(Instance(InstanceRef("x"), to_bytes(ct_dataset(1, rows=8, cols=8))))
    assert out.dataset is not None and out.dataset.PatientID == "STUDY-001" and out.dataset.PatientName == "STUDY-001"
    with pytest.raises(DeidentificationError, match="not in the patient map"):
        stage.process(Instance(InstanceRef("x"), to_bytes(ct_dataset(2, rows=8, cols=8))))
    other = DeidStage(profiles["p"], KEY).process(Instance(InstanceRef("x"), to_bytes(ct_dataset(2, rows=8, cols=8))))
    assert other.identity is not None and other.identity.patient_id.startswith("ANON")
    mapfile.chmod(0o644)
    with pytest.raises(ConfigError, match="accessible by group or others"):
        profiles_from_config(cfg)


def test_load_key_refuses_readable_files(tmp_path: Path) -> None:
    key = _private(tmp_path / "k", "0123456789abcdef0123456789abcdef\n")
    assert load_key(key) == b"0123456789abcdef0123456789abcdef"
    key.chmod(0o640)
    with pytest.raises(ConfigError, match="mode 0640"):
        load_key(key)
    short = _private(tmp_path / "s", "short")
    with pytest.raises(ConfigError, match="at least 16"):
        load_key(short)


def test_pixel_gate_and_invalid_input() -> None:
    stage = DeidStage(DeidProfile.default(), KEY)
    burned = ct_dataset(1, rows=8, cols=8)
    burned.BurnedInAnnotation = "YES"
    with pytest.raises(PixelRiskError, match="Burned In Annotation"):
        stage.process(Instance(InstanceRef("x"), to_bytes(burned)))
    us = ct_dataset(1, rows=8, cols=8)
    us.Modality = "US"
    with pytest.raises(PixelRiskError, match="modality US"):
        stage.process(Instance(InstanceRef("x"), to_bytes(us)))
    sc = ct_dataset(1, rows=8, cols=8)
    sc.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    with pytest.raises(PixelRiskError):
        stage.process(Instance(InstanceRef("x"), to_bytes(sc)))
    shot = ct_dataset(1, rows=8, cols=8)
    shot.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    with pytest.raises(PixelRiskError, match="SCREEN SAVE"):
        stage.process(Instance(InstanceRef("x"), to_bytes(shot)))
    accepting = DeidStage(DeidProfile(accept_pixel_risk=True), KEY)
    assert accepting.process(Instance(InstanceRef("x"), to_bytes(us))).dataset is not None
    with pytest.raises(InvalidInstance):
        stage.process(Instance(InstanceRef("x"), b"not dicom at all" * 20))


def test_mapping_store_and_export(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    store = MappingStore(db, batch=3)
    assert stat.S_IMODE(os.stat(db).st_mode) == 0o600
    stage = DeidStage(DeidProfile.default(), KEY, store)
    ds = ct_dataset(1, rows=8, cols=8)
    stage.process(Instance(InstanceRef("x"), to_bytes(ds)))
    store.close()
    out = tmp_path / "export"
    assert main(["deid-map", "export", "--out", str(out), "--state", str(db)]) == 0
    with open(out / "uids.csv", newline="") as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["id_old", "id_new"]
    assert sorted(rows[1:]) == sorted([u, keyed_uid(KEY, u)] for u in
                                      (ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                       ds.FrameOfReferenceUID))
    with open(out / "patient_ids.csv", newline="") as fh:
        assert list(csv.reader(fh)) == [["id_old", "id_new"], ["SYN000001", stage.pseudonym("SYN000001")[0]]]
    assert stat.S_IMODE(os.stat(out / "uids.csv").st_mode) == 0o600


def test_cli_deidentify_and_scan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in" / "sub"
    src.mkdir(parents=True)
    (src / "a.dcm").write_bytes(to_bytes(ct_dataset(1, 0, 0, 0, rows=8, cols=8)))
    (src / "b.dcm").write_bytes(to_bytes(ct_dataset(1, 0, 0, 1, rows=8, cols=8)))
    us = ct_dataset(1, 0, 0, 2, rows=8, cols=8)
    us.Modality = "US"
    (src / "c.dcm").write_bytes(to_bytes(us))
    key = _private(tmp_path / "deid.key", "0123456789abcdef0123456789abcdef")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"profiles": {"research": {"options": ["retain_uids"], "key_file": str(key)}}}))
    out = tmp_path / "out"
    status = main(["deidentify", str(tmp_path / "in"), "--out", str(out), "--profile", "research",
                   "--config", str(cfg)])
    assert status == 1
    err = capsys.readouterr().err
    assert "c.dcm: pixel-risk: modality US" in err
    files = sorted(out.iterdir())
    assert len(files) == 2
    assert {dcmread(f).SOPInstanceUID for f in files} == {ct_dataset(1, 0, 0, i).SOPInstanceUID for i in (0, 1)}
    assert main(["scan", str(out)]) == 0
    assert main(["scan", str(src / "a.dcm")]) == 1
    printed = capsys.readouterr().out
    assert "(0010,0010): person name" in printed and "SYNTHETIC" not in printed
    assert main(["deidentify", str(src), "--out", str(out), "--profile", "nope", "--config", str(cfg)]) == 2
    key.chmod(0o644)
    assert main(["deidentify", str(src), "--out", str(out), "--profile", "research", "--config", str(cfg)]) == 2
