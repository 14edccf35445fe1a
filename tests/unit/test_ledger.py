"""Ledger: pending rows, flush on failure, quarantine and release, file mode."""

from __future__ import annotations

import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from copydicom.errors import LedgerError
from copydicom.ledger import Ledger


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "sub" / "state.db")
    yield led
    led.close()


def rows(path: Path, sql: str) -> list[Any]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


def test_created_owner_only_in_wal_mode(ledger: Ledger) -> None:
    assert stat.S_IMODE(ledger.path.stat().st_mode) == 0o600
    assert rows(ledger.path, "PRAGMA journal_mode") == [("wal",)]


def test_delivered_among_includes_pending_rows(ledger: Ledger) -> None:
    ledger.record_delivered("d", "t1", "s1", "r", "stored")
    assert rows(ledger.path, "SELECT count(*) FROM delivered") == [(0,)]  # not yet written
    assert ledger.delivered_among("d", ["t1", "t2"]) == {"t1"}
    assert ledger.delivered_among("other", ["t1"]) == set()
    ledger.flush()
    assert rows(ledger.path, "SELECT destination, target_id, source_id, route, outcome FROM delivered") == [
        ("d", "t1", "s1", "r", "stored")
    ]
    assert ledger.delivered_among("d", ["t1", "t2"]) == {"t1"}


def test_delivered_among_many_ids(ledger: Ledger) -> None:
    for i in range(1200):
        ledger.record_delivered("d", f"t{i}", f"s{i}", "r", "existing")
    ledger.flush()
    wanted = [f"t{i}" for i in range(0, 2400, 2)]
    assert ledger.delivered_among("d", wanted) == {f"t{i}" for i in range(0, 1200, 2)}


def test_flush_failure_keeps_rows_for_the_next_attempt(ledger: Ledger, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger.record_delivered("d", "t1", "s1", "r", "stored")
    ledger.record_audit("r", "t1", "deid", [["(0010,0010)", "Z"]])
    real = ledger.store.write_batch

    def broken(**_: Any) -> None:
        raise LedgerError("ledger flush failed: disk I/O error")

    monkeypatch.setattr(ledger.store, "write_batch", broken)
    with pytest.raises(LedgerError):
        ledger.advance_checkpoint("r", 5)
    assert ledger.delivered_among("d", ["t1"]) == {"t1"}  # still pending
    monkeypatch.setattr(ledger.store, "write_batch", real)
    ledger.record_delivered("d", "t2", "s2", "r", "stored")
    ledger.advance_checkpoint("r", 5)
    assert sorted(rows(ledger.path, "SELECT target_id FROM delivered")) == [("t1",), ("t2",)]
    assert ledger.audit_of("r", "t1") == {"deid": [["(0010,0010)", "Z"]]}
    assert ledger.checkpoint("r") == 5


def test_checkpoint_is_monotonic_and_per_route(ledger: Ledger) -> None:
    assert ledger.checkpoint("r") is None
    ledger.advance_checkpoint("r", 7)
    ledger.advance_checkpoint("r", 3)
    ledger.advance_checkpoint("q", 1)
    assert (ledger.checkpoint("r"), ledger.checkpoint("q")) == (7, 1)


def test_quarantine_and_release(ledger: Ledger) -> None:
    ledger.quarantine("r", "s1", "rejected", "RejectedByDestination: HTTP 400", "/q/r/s1.dcm")
    ledger.quarantine("r2", "s2", "invalid", "InvalidInstance: x", None)
    assert ledger.is_quarantined("r", "s1") and not ledger.is_quarantined("r", "s2")
    assert [(e.route, e.source_id, e.code, e.reason, e.path) for e in ledger.quarantined("r")] == [
        ("r", "s1", "rejected", "RejectedByDestination: HTTP 400", "/q/r/s1.dcm")
    ]
    assert len(ledger.quarantined()) == 2
    assert ledger.quarantine_reasons() == {"r": {"rejected": 1}, "r2": {"invalid": 1}}
    ledger.release("r", "s1")
    assert not ledger.is_quarantined("r", "s1")
    assert [e.source_id for e in ledger.quarantined()] == ["s2"]


def test_counts_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    led = Ledger(path)
    led.record_delivered("d", "t1", "s1", "r", "stored")
    led.record_delivered("d", "t2", "s2", "r", "existing")
    led.quarantine("r", "s3", "invalid", "x", None)
    led.close()  # close flushes pending rows
    led = Ledger(path)
    try:
        assert led.counts() == {"r": {"stored": 1, "existing": 1, "quarantined": 1}}
        assert sorted(led.iter_delivered("d")) == [("t1", "s1"), ("t2", "s2")]
    finally:
        led.close()


def test_unwritable_location_is_a_ledger_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(LedgerError):
        Ledger(blocker / "state.db")


def test_first_version_database_gains_the_source_md5_column(tmp_path: Path) -> None:
    """A state.db written before ``delivered.source_md5`` existed opens, keeps its rows and records MD5s."""
    import sqlite3

    path = tmp_path / "old.db"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE delivered (destination TEXT NOT NULL, target_id TEXT NOT NULL, source_id TEXT NOT NULL,"
        " route TEXT NOT NULL, outcome TEXT NOT NULL, at REAL NOT NULL, PRIMARY KEY (destination, target_id))"
        " WITHOUT ROWID;"
        "INSERT INTO delivered VALUES ('d', 't-old', 's-old', 'r', 'stored', 1.0);"
    )
    db.commit()
    db.close()
    ledger = Ledger(path)
    try:
        assert ledger.delivered_among("d", ["t-old"]) == {"t-old"}
        assert ledger.delivered_md5("d", ["t-old"]) == {}
        ledger.record_delivered("d", "t-new", "s-new", "r", "stored", "0" * 32)
        assert ledger.delivered_md5("d", ["t-new"]) == {"t-new": "0" * 32}  # pending rows count
        ledger.flush()
        assert ledger.delivered_md5("d", ["t-old", "t-new"]) == {"t-new": "0" * 32}
    finally:
        ledger.close()
    Ledger(path).close()  # opening again does not add the column twice
