"""The ledger: copydicom's durable state in one SQLite database (WAL).

Tables
------
``checkpoints(route, seq)``
    The low-watermark of each route's changes feed: every change with a
    sequence number ``<= seq`` is stored at every destination or quarantined.
    It never moves backwards.
``delivered(destination, target_id, source_id, route, outcome, at, source_md5)``
    What each destination holds, keyed by the Orthanc ID of what was *sent*
    (after de-identification), so a second run sends nothing. ``source_md5``
    (nullable; added in place to older databases) is the MD5 of the source's
    bytes that were delivered: a source that announces the instance again with
    other bytes (same SOP Instance UID, new content) is noticed. ``outcome`` is
    ``changed`` while a destination keeps an older version (policy ``report``).
``quarantine(route, source_id, code, reason, path, at)``
    Instances that could not be processed, with the reason; their bytes are
    kept in the quarantine directory.
``audit(target_id, route, stage, actions)``
    What a stage did to an instance (tags and action codes, never values).

All writes from worker threads go through :meth:`Ledger.record_*`, which
queue rows; :meth:`Ledger.flush` writes them in one transaction.  The
checkpoint is only advanced by :meth:`Ledger.advance_checkpoint`, which
flushes first, so the watermark never runs ahead of the deliveries it covers.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copydicom.errors import LedgerError

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    route TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS delivered (
    destination TEXT NOT NULL, target_id TEXT NOT NULL, source_id TEXT NOT NULL,
    route TEXT NOT NULL, outcome TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (destination, target_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_source ON delivered (route, source_id);
CREATE TABLE IF NOT EXISTS quarantine (
    route TEXT NOT NULL, source_id TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL,
    path TEXT, at REAL NOT NULL, PRIMARY KEY (route, source_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    target_id TEXT NOT NULL, route TEXT NOT NULL, stage TEXT NOT NULL, actions TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (route, target_id, stage)) WITHOUT ROWID;
"""


@dataclass(frozen=True)
class QuarantineEntry:
    route: str
    source_id: str
    code: str
    reason: str
    path: str | None
    at: float


def _wrap(exc: sqlite3.Error, what: str) -> LedgerError:
    return LedgerError(f"ledger {what} failed: {exc}")


class Ledger:
    """The state database.

    Parameters
    ----------
    path
        SQLite file; created with mode 0600 (it names instances of patients).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._pending_delivered: list[tuple[str, str, str, str, str, float, str | None]] = []
        self._pending_audit: list[tuple[str, str, str, str, float]] = []
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if not self.path.exists():
                fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
                os.close(fd)
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=30)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            self._add_source_md5()
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
        except sqlite3.Error as exc:
            raise _wrap(exc, f"open of {self.path}") from None
        except OSError as exc:
            raise LedgerError(f"cannot create the ledger {self.path}: {exc.strerror}") from None

    def _add_source_md5(self) -> None:
        """Add the nullable ``delivered.source_md5`` column to a database that lacks it (first version).

        One idempotent ``ALTER TABLE ... ADD COLUMN`` (no rewrite of the table); the state store's
        migration framework can take it over as a numbered step.
        """
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(delivered)")}
        if "source_md5" not in columns:
            self._db.execute("ALTER TABLE delivered ADD COLUMN source_md5 TEXT")

    @property
    def connection(self) -> sqlite3.Connection:
        """The shared connection (other components keep their own tables here)."""
        return self._db

    # -- writes --------------------------------------------------------------------------

    def _write(self, what: str, statements: Iterable[tuple[str, Any]]) -> None:
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                for sql, params in statements:
                    if isinstance(params, list):
                        self._db.executemany(sql, params)
                    else:
                        self._db.execute(sql, params)
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                try:
                    self._db.execute("ROLLBACK")
                except sqlite3.Error:
                    pass
                raise _wrap(exc, what) from None

    def record_delivered(
        self, destination: str, target_id: str, source_id: str, route: str, outcome: str,
        source_md5: str | None = None,
    ) -> None:
        """Queue a delivery (``outcome`` ``stored``, ``existing`` or ``changed``); written by :meth:`flush`.

        ``source_md5`` is the MD5 (hex) of the source bytes delivered, when they were downloaded.
        """
        with self._lock:
            self._pending_delivered.append(
                (destination, target_id, source_id, route, outcome, time.time(), source_md5)
            )

    def record_audit(self, route: str, target_id: str, stage: str, actions: Any) -> None:
        """Queue a stage's audit entry (tags and action codes only)."""
        with self._lock:
            self._pending_audit.append((target_id, route, stage, json.dumps(actions), time.time()))

    def flush(self, *, checkpoint: tuple[str, int] | None = None) -> None:
        """Write queued rows, and optionally a checkpoint, in one transaction."""
        with self._lock:
            delivered, self._pending_delivered = self._pending_delivered, []
            audit, self._pending_audit = self._pending_audit, []
        statements: list[tuple[str, Any]] = []
        if delivered:
            statements.append((
                "INSERT OR REPLACE INTO delivered (destination, target_id, source_id, route, outcome, at, "
                "source_md5) VALUES (?,?,?,?,?,?,?)", delivered,
            ))
        if audit:
            statements.append(("INSERT OR REPLACE INTO audit VALUES (?,?,?,?,?)", audit))
        if checkpoint is not None:
            route, seq = checkpoint
            upsert = (
                "INSERT INTO checkpoints VALUES (?,?,?) ON CONFLICT(route) DO UPDATE SET "
                "seq = max(seq, excluded.seq), updated = excluded.updated"
            )
            statements.append((upsert, (route, seq, time.time())))
        if not statements:
            return
        try:
            self._write("flush", statements)
        except LedgerError:
            with self._lock:  # keep the rows for the next attempt
                self._pending_delivered[:0] = delivered
                self._pending_audit[:0] = audit
            raise

    def advance_checkpoint(self, route: str, seq: int) -> None:
        """Flush pending rows and move the route's watermark forward (never backwards)."""
        self.flush(checkpoint=(route, seq))

    def quarantine(self, route: str, source_id: str, code: str, reason: str, path: str | None) -> None:
        """Record an instance in quarantine (written at once: it is rare and must not be lost)."""
        self._write(
            "quarantine",
            [("INSERT OR REPLACE INTO quarantine VALUES (?,?,?,?,?,?)",
              (route, source_id, code, reason, path, time.time()))],
        )

    def release(self, route: str, source_id: str) -> None:
        """Remove a quarantine entry (after a successful retry or a purge)."""
        self._write("release", [("DELETE FROM quarantine WHERE route=? AND source_id=?", (route, source_id))])

    # -- reads ---------------------------------------------------------------------------

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        with self._lock:
            try:
                return self._db.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise _wrap(exc, "read") from None

    def checkpoint(self, route: str) -> int | None:
        rows = self._read("SELECT seq FROM checkpoints WHERE route=?", (route,))
        return int(rows[0][0]) if rows else None

    def delivered_among(self, destination: str, target_ids: list[str]) -> set[str]:
        """Which of ``target_ids`` the ledger knows ``destination`` holds (pending rows included)."""
        found: set[str] = set()
        wanted = set(target_ids)
        with self._lock:
            found.update(row[1] for row in self._pending_delivered if row[0] == destination and row[1] in wanted)
        for start in range(0, len(target_ids), 500):
            chunk = target_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT target_id FROM delivered WHERE destination=? AND target_id IN ({marks})",
                (destination, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def delivered_md5(self, destination: str, target_ids: list[str]) -> dict[str, str]:
        """``{target_id: source MD5}`` of the deliveries to ``destination`` whose source MD5 is known."""
        found: dict[str, str] = {}
        wanted = set(target_ids)
        for start in range(0, len(target_ids), 500):
            chunk = target_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT target_id, source_md5 FROM delivered WHERE destination=? AND target_id IN ({marks}) "
                "AND source_md5 IS NOT NULL",
                (destination, *chunk),
            )
            found.update((r[0], r[1]) for r in rows)
        with self._lock:  # rows not flushed yet are newer
            for row in self._pending_delivered:
                if row[0] == destination and row[1] in wanted and row[6] is not None:
                    found[row[1]] = row[6]
        return found

    def is_quarantined(self, route: str, source_id: str) -> bool:
        return bool(self._read("SELECT 1 FROM quarantine WHERE route=? AND source_id=?", (route, source_id)))

    def quarantined(self, route: str | None = None) -> list[QuarantineEntry]:
        sql = "SELECT route, source_id, code, reason, path, at FROM quarantine"
        rows = self._read(sql + (" WHERE route=?" if route else "") + " ORDER BY at", (route,) if route else ())
        return [QuarantineEntry(*row) for row in rows]

    def counts(self) -> dict[str, dict[str, int]]:
        """``{route: {outcome: n, "quarantined": n}}`` for ``status``."""
        result: dict[str, dict[str, int]] = {}
        for route, outcome, n in self._read("SELECT route, outcome, count(*) FROM delivered GROUP BY route, outcome"):
            result.setdefault(route, {})[outcome] = n
        for route, n in self._read("SELECT route, count(*) FROM quarantine GROUP BY route"):
            result.setdefault(route, {})["quarantined"] = n
        return result

    def quarantine_reasons(self) -> dict[str, dict[str, int]]:
        """``{route: {code: n}}``: quarantine grouped by reason code."""
        result: dict[str, dict[str, int]] = {}
        for route, code, n in self._read("SELECT route, code, count(*) FROM quarantine GROUP BY route, code"):
            result.setdefault(route, {})[code] = n
        return result

    def audit_of(self, route: str, target_id: str) -> dict[str, Any]:
        rows = self._read("SELECT stage, actions FROM audit WHERE route=? AND target_id=?", (route, target_id))
        return {stage: json.loads(actions) for stage, actions in rows}

    def iter_delivered(self, destination: str) -> Iterator[tuple[str, str]]:
        for row in self._read("SELECT target_id, source_id FROM delivered WHERE destination=?", (destination,)):
            yield row[0], row[1]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            with self._lock:
                self._db.close()
