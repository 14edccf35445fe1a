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


SUMMARY_TAIL = "seconds="


def test_transfer_syntax_the_server_cannot_serve_is_quarantined_or_a_config_error(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Orthanc cannot send a 16-bit CT as JPEG Baseline (HTTP 500): it was retried 4x per instance, failed=N,
    forever in a daemon. A syntax it does not know at all (HTTP 400) is the endpoint's configuration."""
    src, dst = dw
    for i in range(3):
        src.upload(to_bytes(ct_dataset(6, 0, 0, i, rows=8, cols=8, seed="tsyntax")))
    state = tmp_path / "s.db"
    jpeg = src.dicomweb_url + "?transfer_syntax=1.2.840.10008.1.2.4.50"
    status = main(["replicate", "--src", jpeg, "--dest", dst.url_with_credentials, "--state", str(state)])
    out, err = capsys.readouterr()
    assert status == 1
    assert out.splitlines()[-1].startswith("replicated=0 skipped_existing=0 quarantined=3 failed=0 ")
    with sqlite3.connect(state) as db:
        reasons = [r for (r,) in db.execute("SELECT reason FROM quarantine")]
    assert len(reasons) == 3 and all("transfer syntax 1.2.840.10008.1.2.4.50" in r for r in reasons)
    assert dst.statistics()["CountInstances"] == 0

    unknown = src.dicomweb_url + "?transfer_syntax=1.2.3.4.5"
    status = main(["replicate", "--src", unknown, "--dest", dst.url_with_credentials, "--state",
                   str(tmp_path / "t.db")])
    err = capsys.readouterr().err
    assert status == 2 and "transfer_syntax" in err and src.password not in err
    assert _quarantined(tmp_path / "t.db") == 0
