"""``copydicom tags`` and ``copydicom dose``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from copydicom.cli import main
from tests.unit.dose import builder as b


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_tags_prints_one_json_document(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "r.dcm", b.to_bytes(b.ct_report([b.ct_event("1.2.3.1")])))
    assert main(["tags", path]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["StudyDate"] == "2024-01-31"
    assert doc["ContentSequence"][0]["ConceptNameCodeSequence"][0]["CodeValue"] == "121058"
    assert main(["tags", path, "--scheme", "tag"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["0008,0020"] == "2024-01-31"


def test_tags_bad_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["tags", str(tmp_path / "missing.dcm")]) == 2
    path = write(tmp_path, "empty.dcm", b"")
    assert main(["tags", path]) == 1


def test_dose_json_lines_and_table(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rep = write(tmp_path, "r.dcm", b.to_bytes(b.ct_report([b.ct_event("1.2.3.1"), b.ct_event("1.2.3.2")],
                                                          n_events="2")))
    scr = write(tmp_path, "s.dcm", b.to_bytes(b.dose_screen()))
    assert main(["dose", rep, scr, "--json"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [d["_id"] for d in lines] == ["1.2.3.1", "1.2.3.2", "summary-1.2.826.0.1.3680043.8.498.1",
                                         "screen-1.2.826.0.1.3680043.8.498.77"]
    assert main(["dose", rep, scr]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4
    assert "CTDIvol 12.3 mGy  DLP 456.7 mGy.cm" in out[0]
    assert "DLP total mGy.cm 456.7" in out[2]
    assert "dose screen" in out[3]


def test_dose_non_dose_file_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ds = b.dose_screen("Axial 5mm")
    path = write(tmp_path, "ct.dcm", b.to_bytes(ds))
    assert main(["dose", path, "--json"]) == 1
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "not a dose report or dose screen" in captured.err
