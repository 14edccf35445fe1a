"""``quarantine retry`` of instances that came from a DICOMweb source (real Orthanc + DICOMweb plugin).

The source ID of a DICOMweb reference is a digest of its UIDs; the retry reads the UIDs back from the
owner-only quarantine file and fetches the instance again by WADO-RS.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import requests

from copydicom import app as app_module
from copydicom.cli import main
from copydicom.errors import RejectedByDestination
from tests.integration.dicomweb.test_dicomweb_cli import load_mixed
from tests.integration.test_quarantine_retry import _Refuse, _summary
from tests.support.orthanc import OrthancServer

pytestmark = pytest.mark.integration


def _file(server: OrthancServer, instance_id: str) -> bytes:
    reply = requests.get(f"{server.url}/instances/{instance_id}/file", auth=server.auth, timeout=60)
    reply.raise_for_status()
    return reply.content


def _quarantined(state: Path) -> list[tuple[str, str | None]]:
    db = sqlite3.connect(state)
    try:
        return [(str(a), b) for a, b in db.execute("SELECT source_id, path FROM quarantine").fetchall()]
    finally:
        db.close()


def test_retry_refetches_a_dicomweb_instance_by_its_uids(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, dst = dw
    load_mixed(src)
    bad = sorted(src.instance_ids())[2]  # Orthanc's ID of the identity: also the DICOMweb source ID
    real = app_module.make_destination
    monkeypatch.setattr(app_module, "make_destination",
                        lambda t, e, *, pool_size: _Refuse(real(t, e, pool_size=pool_size), bad))
    state = tmp_path / "state.db"
    endpoints = ["--src", src.dicomweb_url, "--dest", dst.url_with_credentials, "--state", str(state)]

    _Refuse.error = RejectedByDestination("HTTP 400 from the test")
    assert main(["replicate", *endpoints]) == 1
    assert _summary(capsys) == ("7", "0", "1", "0")
    ((source_id, path),) = _quarantined(state)
    assert source_id == bad and path is not None and Path(path).exists()

    # Refused again: the instance WAS fetched again from the server (else: "fetches by UIDs" failure), entry kept.
    assert main(["quarantine", "retry", *endpoints]) == 1
    assert _summary(capsys) == ("0", "0", "1", "0")
    ((_, reason),) = sqlite3.connect(state).execute("SELECT source_id, reason FROM quarantine").fetchall()
    assert "HTTP 400 from the test" in reason

    _Refuse.error = None
    assert main(["quarantine", "retry", *endpoints]) == 0
    assert _summary(capsys) == ("1", "0", "0", "0")
    assert sorted(dst.instance_ids()) == sorted(src.instance_ids())
    assert _quarantined(state) == [] and not Path(path).exists()
    # The bytes delivered are the source's, fetched again (not rebuilt from the header).
    assert _file(dst, bad) == _file(src, bad)


def test_retry_without_a_file_naming_the_instance_keeps_the_entry_and_says_why(
    dw: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    src, dst = dw
    load_mixed(src)
    ids = sorted(src.instance_ids())
    bad = ids[0]
    real = app_module.make_destination
    monkeypatch.setattr(app_module, "make_destination",
                        lambda t, e, *, pool_size: _Refuse(real(t, e, pool_size=pool_size), bad))
    state = tmp_path / "state.db"
    endpoints = ["--src", src.dicomweb_url, "--dest", dst.url_with_credentials, "--state", str(state)]
    _Refuse.error = RejectedByDestination("HTTP 400 from the test")
    assert main(["replicate", *endpoints]) == 1
    capsys.readouterr()
    ((_, path),) = _quarantined(state)
    assert path is not None
    # A file of another instance put in its place: its UIDs do not hash to the entry's ID, so it is not used.
    Path(path).write_bytes(_file(src, ids[1]))
    _Refuse.error = None
    assert main(["quarantine", "retry", *endpoints]) == 1
    assert _summary(capsys) == ("0", "0", "1", "0")
    ((source_id, reason),) = sqlite3.connect(state).execute("SELECT source_id, reason FROM quarantine").fetchall()
    assert source_id == bad and "fetches by UIDs" in reason
    assert bad not in dst.instance_ids()
