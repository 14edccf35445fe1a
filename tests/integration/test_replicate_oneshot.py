"""One-shot ``copydicom replicate`` and ``copydicom quarantine`` against two real Orthanc servers."""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import pytest

from copydicom import app as app_module
from copydicom.cli import main
from copydicom.errors import RejectedByDestination
from copydicom.model import Destination, Instance, StoreOutcome
from tests.support.orthanc import OrthancServer
from tests.integration.conftest import changes_of, last_seq, load_ct

pytestmark = pytest.mark.integration

SUMMARY = re.compile(
    r"^replicated=(\d+) skipped_existing=(\d+) quarantined=(\d+) failed=(\d+) seconds=\d+\.\d$"
)


def _replicate(capsys: pytest.CaptureFixture[str], source: OrthancServer, dest: OrthancServer, state: Path,
               *extra: str) -> tuple[int, tuple[int, int, int, int], str]:
    status = main([
        "replicate", "--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
        "--state", str(state), "--workers", "4", *extra,
    ])
    out = capsys.readouterr().out
    last = out.rstrip("\n").splitlines()[-1]
    match = SUMMARY.match(last)
    assert match is not None, f"last line {last!r} is not the summary"
    counts = tuple(int(g) for g in match.groups())
    return status, counts, last  # type: ignore[return-value]


def test_replicate_copies_everything_then_nothing(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    start = last_seq(dest)
    ids = load_ct(source, 24)

    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "state.db")
    assert status == 0
    assert counts == (24, 0, 0, 0)
    assert set(dest.instance_ids()) == ids

    # Second run, same state: the ledger knows everything.
    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "state.db")
    assert (status, counts) == (0, (0, 24, 0, 0))

    # Second run, fresh state: the destination is asked (per series) and nothing is sent.
    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "fresh.db")
    assert (status, counts) == (0, (0, 24, 0, 0))

    assert set(dest.instance_ids()) == ids
    received = [c["ID"] for c in changes_of(dest, "NewInstance", since=start)]
    assert sorted(received) == sorted(ids)  # each instance arrived exactly once


def test_replicate_selection_and_dry_run(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    load_ct(source, 8, series=2)
    series = source.get("/series")
    assert len(series) == 2
    wanted = set(source.get(f"/series/{series[0]}")["Instances"])

    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "state.db", "--dry-run")
    assert (status, counts) == (0, (8, 0, 0, 0))
    assert dest.instance_ids() == []

    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "state.db", "--ids", series[0])
    assert (status, counts) == (0, (len(wanted), 0, 0, 0))
    assert set(dest.instance_ids()) == wanted


class _RejectOne:
    """Wraps a real destination; refuses one target ID with a permanent rejection."""

    def __init__(self, inner: Destination, reject: set[str]) -> None:
        self.inner = inner
        self.name = inner.name
        self.reject = reject

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        return self.inner.has(target_ids, series_hint=series_hint)

    def store(self, instance: Instance) -> StoreOutcome:
        if instance.target_id in self.reject:
            raise RejectedByDestination("POST /instances on test: HTTP 400: refused by the test")
        return self.inner.store(instance)

    def close(self) -> None:
        self.inner.close()


def test_quarantine_list_retry_purge(
    servers: tuple[OrthancServer, OrthancServer],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    source, dest = servers
    ids = sorted(load_ct(source, 6, series=1))
    bad = ids[2]
    real = app_module.make_destination

    def rejecting(type_name: str, endpoint: Any, *, pool_size: int) -> Destination:
        return _RejectOne(real(type_name, endpoint, pool_size=pool_size), {bad})

    monkeypatch.setattr(app_module, "make_destination", rejecting)
    state = tmp_path / "state.db"
    status, counts, _ = _replicate(capsys, source, dest, state)
    assert status == 1
    assert counts == (5, 0, 1, 0)
    assert set(dest.instance_ids()) == set(ids) - {bad}

    db = sqlite3.connect(state)
    rows = db.execute("SELECT source_id, code, reason, path FROM quarantine").fetchall()
    db.close()
    assert len(rows) == 1
    source_id, code, reason, path = rows[0]
    assert (source_id, code) == (bad, "rejected")
    assert reason == "RejectedByDestination: POST /instances on test: HTTP 400: refused by the test"
    assert Path(path).parent.parent == tmp_path / "quarantine"
    assert Path(path).read_bytes() == source_download(source, bad)

    common = ["--state", str(state)]
    assert main(["quarantine", "list", *common]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == "1 quarantined"
    assert out[0].split("\t")[1:4] == [bad, "rejected", reason]

    # Retry while the destination still refuses: quarantined again, exit 1.
    retry = ["quarantine", "retry", *common, "--src", source.url_with_credentials,
             "--dest", dest.url_with_credentials]
    assert main(retry) == 1
    assert SUMMARY.match(capsys.readouterr().out.splitlines()[-1]).groups() == ("0", "0", "1", "0")  # type: ignore[union-attr]

    # Retry once the destination accepts it: delivered, released, bytes removed.
    monkeypatch.setattr(app_module, "make_destination", real)
    assert main(retry) == 0
    assert SUMMARY.match(capsys.readouterr().out.splitlines()[-1]).groups() == ("1", "0", "0", "0")  # type: ignore[union-attr]
    assert set(dest.instance_ids()) == set(ids)
    assert not Path(path).exists()
    assert main(["quarantine", "list", *common]) == 0
    assert capsys.readouterr().out.splitlines() == ["0 quarantined"]

    # A second run sees nothing to do.
    status, counts, _ = _replicate(capsys, source, dest, state)
    assert (status, counts) == (0, (0, 6, 0, 0))

    # Purge: quarantine something again, then purge it: row and bytes gone.
    monkeypatch.setattr(app_module, "make_destination", rejecting)
    dest.clear()
    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "other.db")
    assert (status, counts) == (1, (5, 0, 1, 0))
    other = ["--state", str(tmp_path / "other.db")]
    assert main(["quarantine", "purge", *other]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "purged 1"
    assert list((tmp_path / "quarantine").rglob("*.dcm")) == []
    assert main(["quarantine", "list", *other]) == 0
    assert capsys.readouterr().out.splitlines() == ["0 quarantined"]


def source_download(server: OrthancServer, instance_id: str) -> bytes:
    import requests

    reply = requests.get(f"{server.url}/instances/{instance_id}/file", auth=server.auth, timeout=30)
    reply.raise_for_status()
    return reply.content


def test_replicate_with_config_names(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from tests.integration.conftest import write_config

    source, dest = servers
    ids = load_ct(source, 5, series=1)
    monkeypatch.setenv("CD_TEST_SRC_PW", source.password)
    monkeypatch.setenv("CD_TEST_DST_PW", dest.password)
    config = write_config(tmp_path, source, dest)
    status = main(["replicate", "--config", str(config), "--src", "src", "--dest", "dst"])
    last = capsys.readouterr().out.splitlines()[-1]
    assert status == 0
    assert SUMMARY.match(last).groups() == ("5", "0", "0", "0")  # type: ignore[union-attr]
    assert set(dest.instance_ids()) == ids
    assert (tmp_path / "state.db").exists()  # the config's state, not the default one


def test_replicate_to_unreachable_destination_fails_with_status_1(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from copydicom import retry as retry_module
    from tests.support.orthanc import free_port

    source, _ = servers
    load_ct(source, 6, series=2)
    monkeypatch.setattr(retry_module, "wait", lambda seconds, stop: stop.is_set())  # no backoff waits
    status = main([
        "replicate", "--src", source.url_with_credentials,
        "--dest", f"http://orthanc:orthanc@127.0.0.1:{free_port()}", "--state", str(tmp_path / "s.db"),
    ])
    captured = capsys.readouterr()
    assert status == 1
    assert SUMMARY.match(captured.out.splitlines()[-1]).groups() == ("0", "0", "0", "6")  # type: ignore[union-attr]
    assert "first failure: " in captured.err and "ConnectionError" in captured.err
    assert "orthanc:orthanc@" not in captured.err


def test_replicate_selection_by_study_instance_uid(
    servers: tuple[OrthancServer, OrthancServer], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source, dest = servers
    wanted = load_ct(source, 6, seed="study-a", series=2)
    load_ct(source, 5, seed="study-b", series=1)
    study_id = source.get(f"/instances/{min(wanted)}/study")["ID"]
    study_uid = source.get(f"/studies/{study_id}")["MainDicomTags"]["StudyInstanceUID"]
    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "s.db", "--ids", study_uid, "not-a-uid")
    # What was found is copied; the identifier that matched nothing makes the run exit 1 (notes/leftovers.md).
    assert (status, counts) == (1, (6, 0, 0, 0))
    assert set(dest.instance_ids()) == wanted
    missing = "0a1b2c3d-4e5f6a7b-8c9d0e1f-2a3b4c5d-6e7f8a9b"
    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "s.db", "--ids", study_uid, missing)
    assert (status, counts) == (1, (0, 6, 0, 0))
    status, counts, _ = _replicate(capsys, source, dest, tmp_path / "s.db", "--ids", study_uid)
    assert (status, counts) == (0, (0, 6, 0, 0))
