"""Defects the round-2 review left open, against Orthanc and its DICOMweb plugin (notes/leftovers.md)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from copydicom.cli import main
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration


def _quarantined(state: Path) -> int:
    with sqlite3.connect(state) as db:
        return int(db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0])


def test_dicomweb_destination_with_a_wrong_base_path_is_a_config_error(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every instance was quarantined (STOW-RS HTTP 404); now exit 2 naming the endpoint's url, nothing quarantined."""
    src, dst = dw
    for i in range(4):
        src.upload(to_bytes(ct_dataset(5, 0, 0, i, rows=8, cols=8, seed="wrongpath")))
    wrong = dst.dicomweb_url.replace("/dicom-web", "/dicomweb")
    state = tmp_path / "s.db"
    status = main(["replicate", "--src", src.url_with_credentials, "--dest", wrong, "--state", str(state)])
    err = capsys.readouterr().err
    assert status == 2
    assert "configuration error" in err and ".url" in err and "not the base of a DICOMweb service" in err
    assert dst.password not in err
    assert _quarantined(state) == 0
    assert dst.statistics()["CountInstances"] == 0
