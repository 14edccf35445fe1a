"""``import`` dedupes by the instance's identity, never by its file path (issue 11 item 6, issue 10).

Regressions: the destination received ``GET /instances/<dir>/<file name>/metadata`` (file names are
often patient names and MRNs); a re-import with a fresh state uploaded everything again; and
``import --dry-run`` reported ``replicated=1`` for an instance the destination already held.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from copydicom.cli import main
from copydicom.model import Identity
from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_dataset, to_bytes

pytestmark = pytest.mark.integration

SECRET = "DOE^JOHN_MRN4711"  # a file name that names a patient


@pytest.fixture
def verbose_orthanc() -> Iterator[OrthancServer]:
    server = OrthancServer(name="IMPDEST").start()
    try:
        requests.put(f"{server.url}/tools/log-level", data="verbose", auth=server.auth,
                     timeout=10).raise_for_status()
        yield server
    finally:
        server.cleanup()


def _summary(out: str) -> dict[str, str]:
    return dict(part.split("=", 1) for part in out.strip().splitlines()[-1].split())


def _log(server: OrthancServer) -> str:
    time.sleep(0.2)  # Orthanc writes its log asynchronously
    assert server.workdir is not None
    return (server.workdir / "orthanc.log").read_text(errors="replace")


def test_reimport_with_fresh_state_sends_nothing_and_paths_stay_local(
    verbose_orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = verbose_orthanc
    folder = tmp_path / f"{SECRET}_dir"
    folder.mkdir()
    datasets = [ct_dataset(7, 0, 0, i, rows=8, cols=8) for i in range(3)]
    for i, ds in enumerate(datasets):
        (folder / f"{SECRET}_{i}.dcm").write_bytes(to_bytes(ds))
    args = ["import", str(folder), "--dest", dest.url_with_credentials]

    assert main([*args, "--state", str(tmp_path / "first.db")]) == 0
    assert _summary(capsys.readouterr().out)["replicated"] == "3"
    assert set(dest.instance_ids()) == {Identity.from_dataset(ds).orthanc_id for ds in datasets}

    # a fresh state: the destination is asked by Orthanc ID and already holds everything
    assert main([*args, "--state", str(tmp_path / "second.db"), "--dry-run"]) == 0
    summary = _summary(capsys.readouterr().out)
    assert (summary["replicated"], summary["skipped_existing"]) == ("0", "3")
    assert main([*args, "--state", str(tmp_path / "third.db")]) == 0
    summary = _summary(capsys.readouterr().out)
    assert (summary["replicated"], summary["skipped_existing"]) == ("0", "3")

    log = _log(dest)
    assert "(http) GET /series/" in log  # the destination's log records request paths (one look-up per series)...
    assert "MRN4711" not in log  # ...and no file name ever reached it


def test_dry_run_counts_only_what_is_missing(
    verbose_orthanc: OrthancServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    dest = verbose_orthanc
    folder = tmp_path / "in"
    folder.mkdir()
    held, new = ct_dataset(8, 0, 0, 0, rows=8, cols=8), ct_dataset(8, 0, 0, 1, rows=8, cols=8)
    (folder / "a.dcm").write_bytes(to_bytes(held))
    (folder / "b.dcm").write_bytes(to_bytes(new))
    dest.upload(to_bytes(held))
    assert main(["import", str(folder), "--dest", dest.url_with_credentials, "--state", str(tmp_path / "s.db"),
                 "--dry-run"]) == 0
    summary = _summary(capsys.readouterr().out)
    assert (summary["replicated"], summary["skipped_existing"]) == ("1", "1")
    assert len(dest.instance_ids()) == 1  # a dry run sends nothing
