"""The state store: schema version and in-place upgrade of a first-release file, one connection policy."""

from __future__ import annotations

import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from copydicom.cli import main
from copydicom.ledger import Ledger
from copydicom.model import FeedPosition
from copydicom.sinks.spool import Spool
from copydicom.stages.deid import MappingStore
from copydicom.state import SCHEMA_VERSION, SchemaTooNew, SqliteStore, open_store

V1 = Path(__file__).resolve().parents[2] / "data" / "state-v1.db"


@pytest.fixture
def v1(tmp_path: Path) -> Path:
    path = tmp_path / "state.db"
    shutil.copyfile(V1, path)
    path.chmod(0o600)
    return path


def test_fixture_is_a_first_release_file() -> None:
    db = sqlite3.connect(f"file:{V1}?mode=ro&immutable=1", uri=True)  # creates no -wal/-shm beside it
    try:
        assert db.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone() == ("1",)
        columns = [r[1] for r in db.execute("PRAGMA table_info(checkpoints)")]
        assert columns == ["route", "seq", "updated"]
    finally:
        db.close()


def test_first_release_file_upgrades_in_place_and_keeps_everything(v1: Path) -> None:
    ledger = Ledger(v1)
    try:
        assert ledger.store.schema_version() == SCHEMA_VERSION == 4
        assert ledger.position("copy") == FeedPosition(42, None)
        assert ledger.delivered_among("dest", ["t0", "t1", "t2", "t3"]) == {"t0", "t1", "t2"}
        assert ledger.audit_of("copy", "t0") == {"deid": {"0010,0010": "Z"}}
        # Index deliveries of the first release are recognised as index documents, not images.
        assert ledger.counts() == {"copy": {"stored": 3, "quarantined": 1}}
        assert ledger.destination_counts()["copy"]["idx"] == {"kind": "index", "stored": 3}
        (entry,) = ledger.quarantined()
        assert entry.reason == 'RejectedByDestination: { "Message": "bad" }'  # one line now
        assert entry.files == ("/q/copy/s9.dcm",)
        spool = Spool(v1)
        assert spool.pending("idx") == 1 and spool.rejected("idx") == {"d1": "mapping error"}
        spool.close()
        mapping = MappingStore(v1)
        assert mapping.pairs("uid") == [("1.2.3", "2.25.1"), ("1.2.4", "2.25.2")]
        mapping.close()
        # New writes use the new columns.
        ledger.advance_checkpoint("copy", 50, "res-50")
        assert ledger.position("copy") == FeedPosition(50, "res-50")
    finally:
        ledger.close()
    again = Ledger(v1)  # a second start finds version 2 and migrates nothing
    try:
        assert again.store.schema_version() == SCHEMA_VERSION
        assert again.position("copy") == FeedPosition(50, "res-50")
    finally:
        again.close()


def test_status_of_an_upgraded_file_shows_images_and_index_documents_apart(
    v1: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["status", "--state", str(v1)]) == 0
    out = capsys.readouterr().out
    assert "  instances: stored: 3   already present: 0   quarantined: 1" in out
    assert "    image destination dest: stored 3, already present 0" in out
    assert "    index idx (instance documents): stored 3, already present 0" in out


def test_a_file_from_a_newer_release_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    Ledger(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value='99' WHERE key='schema_version'")
    db.commit()
    db.close()
    with pytest.raises(SchemaTooNew, match="schema version 99"):
        SqliteStore(path)


def test_views_share_one_store_and_one_connection_policy(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ledger, spool, mapping = Ledger(path), Spool(path), MappingStore(path)
    try:
        assert ledger.store is spool.store is mapping.store is open_store(path)
        ledger.store.close()  # the extra reference taken just above
        seen: list[tuple[object, ...]] = []

        def pragmas() -> None:
            conn = ledger.connection
            seen.append(tuple(conn.execute(f"PRAGMA {p}").fetchone()[0]
                              for p in ("journal_mode", "synchronous", "busy_timeout", "foreign_keys")))

        pragmas()
        worker = threading.Thread(target=pragmas)
        worker.start()
        worker.join()
        assert seen == [("wal", 2, 30000, 1), ("wal", 2, 30000, 1)]  # per-thread connections, same pragmas
    finally:
        mapping.close()
        spool.close()
        ledger.close()


def test_index_deliveries_are_counted_apart_from_images(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    ledger = Ledger(path)
    spool = Spool(path)
    spool.register_sink("es")
    try:
        for i in range(51):
            ledger.record_delivered("orthanc-b", f"t{i}", f"s{i}", "r", "stored")
            ledger.record_delivered("es", f"t{i}", f"s{i}", "r", "stored")
        ledger.flush()
        assert ledger.counts() == {"r": {"stored": 51}}
        assert ledger.destination_counts()["r"] == {
            "orthanc-b": {"kind": "image", "stored": 51}, "es": {"kind": "index", "stored": 51},
        }
    finally:
        spool.close()
        ledger.close()
