"""Owner-only files whatever the umask; one process per route feed; retention of PHI at rest."""

from __future__ import annotations

import logging
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from copydicom.config import parse_config
from copydicom.errors import ConfigError, InvalidInstance
from copydicom.ledger import Ledger
from copydicom.model import InstanceRef
from copydicom.pipeline import Pipeline
from copydicom.sinks.spool import Spool
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from copydicom.stages.deid import MappingStore
from copydicom.state import DEFAULT_RETAIN, Retention, RouteLocked, purge_expired
from tests.unit.fakes import FakeDestination, FakeSource, RaisingStage


@pytest.fixture
def umask_022() -> Iterator[None]:
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_every_file_that_can_hold_phi_is_owner_only_under_umask_022(tmp_path: Path, umask_022: None) -> None:
    state = tmp_path / "new" / "state.db"
    ledger = Ledger(state)
    try:
        stage = RaisingStage(InvalidInstance("bad"), {"a"})
        pipe = Pipeline("r", FakeSource({"a": b"A"}), [stage], [FakeDestination()], ledger,  # type: ignore[arg-type]
                        quarantine_dir=tmp_path / "var" / "quarantine")
        pipe.run([[InstanceRef("a")]])
        pipe.close()
        lock = ledger.store.lock_route("r")
        mapping = MappingStore(state)
        mapping.record_many("uid", [("1.2", "2.25.9")])
        exported = mapping.export(tmp_path / "export")
        mapping.close()
        index = SqliteIndex(SqliteIndexConfig(name="idx", path=tmp_path / "idx" / "index.db"))
        index.open()
        index.close()
        (entry,) = ledger.quarantined()
        files = [state, Path(f"{state}-wal"), Path(f"{state}-shm"), Path(entry.path or ""), lock.path,
                 *exported.values(), tmp_path / "idx" / "index.db"]
        for f in files:
            assert mode(f) == 0o600, f
        for d in [state.parent, tmp_path / "var" / "quarantine", tmp_path / "var" / "quarantine" / "r",
                  lock.path.parent, tmp_path / "export"]:
            assert mode(d) == 0o700, d
        lock.release()
    finally:
        ledger.close()


def test_a_second_lock_on_the_same_route_is_refused_naming_the_route(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.db")
    try:
        first = ledger.store.lock_route("ct-copy")
        other = ledger.store.lock_route("mr-copy")  # another route is independent
        with pytest.raises(RouteLocked, match=rf"route ct-copy: another copydicom process \(pid {os.getpid()}\)"):
            ledger.store.lock_route("ct-copy")
        first.release()
        ledger.store.lock_route("ct-copy").release()  # free again
        other.release()
    finally:
        ledger.close()


def test_route_locked_is_a_configuration_error_exit_2() -> None:
    assert issubclass(RouteLocked, ConfigError) and RouteLocked("x").exit_status == 2


def test_retention_purges_old_quarantine_entries_and_refused_documents(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    state = tmp_path / "state.db"
    ledger = Ledger(state)
    spool = Spool(state)
    try:
        old_file = tmp_path / "old.dcm"
        old_file.write_bytes(b"PHI")
        ledger.quarantine("r", "/import/DOE^JOHN.dcm", "invalid", "bad", str(old_file))
        ledger.quarantine("r", "fresh", "invalid", "bad", None)
        spool.enqueue("es", [{"_id": "d1"}])
        spool.mark_rejected("es", spool.next_batch("es", 1), {"d1": "mapping"})
        with ledger.store.transaction("age") as conn:  # make the first entry and the document 40 days old
            conn.execute("UPDATE quarantine SET at = at - 40 * 86400 WHERE source_id != 'fresh'")
            conn.execute("UPDATE spool_rejected SET rejected_at = rejected_at - 40 * 86400")
        caplog.set_level(logging.INFO)
        assert purge_expired(ledger.store, Retention()) == (1, 1)
        assert [e.source_id for e in ledger.quarantined()] == ["fresh"]
        assert not old_file.exists() and spool.rejected("es") == {}
        lines = [r.getMessage() for r in caplog.records if "retention" in r.getMessage()]
        assert len(lines) == 2 and not any("DOE" in line for line in lines)
        assert purge_expired(ledger.store, Retention(quarantine=None, rejected_documents=None),
                             now=time.time() + 10**9) == (0, 0)
    finally:
        spool.close()
        ledger.close()


def test_retention_config(tmp_path: Path) -> None:
    base = {"state": str(tmp_path / "s.db")}
    assert parse_config(base).retention == Retention(DEFAULT_RETAIN, DEFAULT_RETAIN)
    cfg = parse_config({**base, "quarantine": {"retain": "7d"}, "index_spool": {"retain": "off"}})
    assert cfg.retention == Retention(7 * 86400.0, None)
    with pytest.raises(ConfigError, match="quarantine.retain"):
        parse_config({**base, "quarantine": {"retain": "soon"}})
    with pytest.raises(ConfigError, match="quarantine: unknown key"):
        parse_config({**base, "quarantine": {"keep": "7d"}})


def test_an_existing_database_file_is_never_opened_by_hand(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Closing a descriptor of the database drops this process's SQLite (POSIX) locks on it: a second
    process could then reset the WAL under our open connections (rows lost, seen in the two-daemon test)."""
    from copydicom.state import private_file

    path = tmp_path / "state.db"
    Ledger(path).close()
    path.chmod(0o644)

    def no_open(*_: object, **__: object) -> int:
        raise AssertionError("an existing database file was opened outside SQLite")

    monkeypatch.setattr(os, "open", no_open)
    private_file(path)
    assert mode(path) == 0o600
    ledger = Ledger(path)  # new connections (any thread) open nothing by hand either
    ledger.record_delivered("d", "t", "s", "r", "stored")
    ledger.close()
