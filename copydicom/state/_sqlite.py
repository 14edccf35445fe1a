"""The SQLite state store: one file, one connection policy, per-thread connections.

Connection policy (:func:`connect`, the only place copydicom opens its state database):
the file is created owner-only before SQLite touches it; ``journal_mode=WAL``
(readers never block the writer), ``synchronous=FULL`` (a committed delivery or
spooled document survives a power cut: the spool may hold the only copy of a
document), ``busy_timeout=30000`` (another process's write waits instead of
failing), ``foreign_keys=ON``.

Each thread gets its own connection (``threading.local``): reads from the pipeline's
planner, the spool's flusher and the metrics probe never wait on one another.  Writes
of one process are serialised by one lock, so threads never spin in SQLite's busy
handler against each other; other processes are handled by ``busy_timeout``.

One :class:`SqliteStore` per database file per process (:func:`open_store` shares it
between the ledger, the spool and the mapping store, and counts references).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from copydicom.errors import LedgerError
from copydicom.model import FeedPosition
from copydicom.state._files import private_file, restrict_sqlite_companions
from copydicom.state._lock import RouteLock
from copydicom.state._protocol import (
    Audit,
    Delivery,
    DeliveryCount,
    FeedReset,
    QuarantineEntry,
    ReconcileRunRow,
    SpoolRow,
)
from copydicom.state._schema import current_version, migrate

PRAGMAS = (
    "PRAGMA journal_mode=WAL",
    "PRAGMA synchronous=FULL",
    "PRAGMA busy_timeout=30000",
    "PRAGMA foreign_keys=ON",
)


def connect(path: str | Path, *, create: bool = True) -> sqlite3.Connection:
    """Open the state database with copydicom's connection policy (see the module docstring).

    ``create=False`` refuses a missing file instead of creating it.
    """
    p = Path(path)
    if create and not p.exists():
        private_file(p)
    elif not p.exists():
        raise LedgerError(f"no state database at {p}")
    conn = sqlite3.connect(str(p), check_same_thread=False, isolation_level=None, timeout=30)
    for pragma in PRAGMAS:
        conn.execute(pragma)
    restrict_sqlite_companions(p)
    return conn


def probe_write(path: str | Path) -> None:
    """Write one row to ``meta`` in its own transaction on a new connection (health check)."""
    conn = connect(path, create=False)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('health_probe', ?)", (str(time.time()),))
        conn.execute("COMMIT")
    finally:
        conn.close()


def _wrap(exc: sqlite3.Error, what: str) -> LedgerError:
    return LedgerError(f"ledger {what} failed: {exc}")


def _entry(row: Any) -> QuarantineEntry:
    route, source_id, code, reason, path, at, files = row
    return QuarantineEntry(route, source_id, code, reason, path, at, tuple(json.loads(files or "[]")))


_Q_COLUMNS = "route, source_id, code, reason, path, at, files"


class SqliteStore:
    """The :class:`~copydicom.state.Store` in one SQLite file.

    Parameters
    ----------
    path
        The database file (created ``0600``; its folder ``0700`` if created here).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.location = str(self.path)
        self._local = threading.local()
        self._all: list[tuple[threading.Thread, sqlite3.Connection]] = []
        self._all_lock = threading.Lock()
        self._write_lock = threading.RLock()
        self._index_names: set[str] = set()
        self._refs = 0
        try:
            private_file(self.path)  # owner-only even if an older release or another tool made it
            migrate(self._conn(), str(self.path))
        except sqlite3.Error as exc:
            self.close_connections()
            raise _wrap(exc, f"open of {self.path}") from None
        except OSError as exc:
            self.close_connections()
            raise LedgerError(f"cannot create the state {self.path}: {exc.strerror}") from None

    # -- connections -------------------------------------------------------------------------

    def _conn(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = connect(self.path)
            self._local.conn = conn
            with self._all_lock:
                # Close the connections of threads that ended (short-lived request threads).
                dead = [c for t, c in self._all if not t.is_alive()]
                self._all = [(t, c) for t, c in self._all if t.is_alive()]
                self._all.append((threading.current_thread(), conn))
            for old in dead:
                old.close()
        return conn

    @property
    def connection(self) -> sqlite3.Connection:
        """This thread's connection (for read-only helpers outside the store; prefer the methods)."""
        return self._conn()

    @contextmanager
    def transaction(self, what: str) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` ... ``COMMIT`` on this thread's connection, under the process's write lock."""
        with self._write_lock:
            conn = self._conn()
            if conn.in_transaction:  # re-entered from inside a transaction of this thread
                yield conn
                return
            try:
                conn.execute("BEGIN IMMEDIATE")
                yield conn
                conn.execute("COMMIT")
            except sqlite3.Error as exc:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise _wrap(exc, what) from None
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        try:
            return self._conn().execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _wrap(exc, "read") from None

    def schema_version(self) -> int:
        return current_version(self._conn())

    def probe_write(self) -> None:
        """A one-row write on a fresh connection (it must not share a healthy connection's luck)."""
        probe_write(self.path)

    def lock_route(self, route: str) -> RouteLock:
        return RouteLock(self.path, route)

    def close_connections(self) -> None:
        with self._all_lock:
            conns, self._all = self._all, []
        for _thread, conn in conns:
            try:
                conn.close()
            except sqlite3.Error:
                pass
        self._local = threading.local()

    def close(self) -> None:
        """Release one reference (see :func:`open_store`); the last one closes every connection."""
        with _STORES_LOCK:
            self._refs -= 1
            if self._refs > 0:
                return
            if _STORES.get(self.path.resolve()) is self:
                del _STORES[self.path.resolve()]
        self.close_connections()

    # -- ledger ------------------------------------------------------------------------------

    def register_index(self, destination: str) -> None:
        self._index_names.add(destination)

    def write_batch(
        self,
        *,
        deliveries: list[Delivery] | None = None,
        audits: list[Audit] | None = None,
        checkpoint: tuple[str, FeedPosition] | None = None,
        settled: list[tuple[str, str]] | None = None,
    ) -> list[QuarantineEntry]:
        released: list[QuarantineEntry] = []
        if not (deliveries or audits or checkpoint or settled):
            return released
        with self.transaction("write") as conn:
            if deliveries:
                conn.executemany(
                    "INSERT OR REPLACE INTO delivered (destination, target_id, source_id, route, outcome, at, "
                    "source_md5, kind) VALUES (?,?,?,?,?,?,?,?)",
                    [(*row, "index" if row[0] in self._index_names else "image") for row in deliveries],
                )
            if audits:
                conn.executemany("INSERT OR REPLACE INTO audit VALUES (?,?,?,?,?)", audits)
            if checkpoint is not None:
                route, pos = checkpoint
                conn.execute(
                    "INSERT INTO checkpoints (route, seq, updated, resource) VALUES (?,?,?,?) "
                    "ON CONFLICT(route) DO UPDATE SET seq = max(seq, excluded.seq), updated = excluded.updated, "
                    "resource = CASE WHEN excluded.seq > seq OR (excluded.seq = seq AND excluded.resource IS NOT NULL) "
                    "THEN excluded.resource ELSE resource END",
                    (route, pos.seq, time.time(), pos.resource),
                )
            if settled and conn.execute("SELECT 1 FROM quarantine LIMIT 1").fetchone():
                for route, source_id in settled:
                    row = conn.execute(
                        f"SELECT {_Q_COLUMNS} FROM quarantine WHERE route=? AND source_id=?", (route, source_id)
                    ).fetchone()
                    if row is not None:
                        conn.execute("DELETE FROM quarantine WHERE route=? AND source_id=?", (route, source_id))
                        released.append(_entry(row))
        return released

    def deliveries_among(self, destination: str, target_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(target_ids), 500):
            chunk = target_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT target_id FROM delivered WHERE destination=? AND target_id IN ({marks})",
                (destination, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def deliveries_md5(self, destination: str, target_ids: list[str]) -> dict[str, str]:
        found: dict[str, str] = {}
        for start in range(0, len(target_ids), 500):
            chunk = target_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT target_id, source_md5 FROM delivered WHERE destination=? AND target_id IN ({marks}) "
                "AND source_md5 IS NOT NULL",
                (destination, *chunk),
            )
            found.update((r[0], r[1]) for r in rows)
        return found

    def iter_deliveries(self, destination: str) -> Iterator[tuple[str, str]]:
        for row in self._read("SELECT target_id, source_id FROM delivered WHERE destination=?", (destination,)):
            yield row[0], row[1]

    def delivery_counts(self) -> list[DeliveryCount]:
        rows = self._read(
            "SELECT route, destination, kind, outcome, count(*) FROM delivered "
            "GROUP BY route, destination, kind, outcome ORDER BY route, kind, destination, outcome"
        )
        return [DeliveryCount(*row) for row in rows]

    def checkpoint(self, route: str) -> FeedPosition | None:
        rows = self._read("SELECT seq, resource FROM checkpoints WHERE route=?", (route,))
        return FeedPosition(int(rows[0][0]), rows[0][1]) if rows else None

    def rebase_checkpoint(self, route: str, position: FeedPosition) -> None:
        with self.transaction("rebase") as conn:
            conn.execute(
                "INSERT OR REPLACE INTO checkpoints (route, seq, updated, resource) VALUES (?,?,?,?)",
                (route, position.seq, time.time(), position.resource),
            )
            conn.execute("DELETE FROM feed_resets WHERE route=?", (route,))

    def audit_of(self, route: str, target_id: str) -> dict[str, Any]:
        rows = self._read("SELECT stage, actions FROM audit WHERE route=? AND target_id=?", (route, target_id))
        return {stage: json.loads(actions) for stage, actions in rows}

    # -- quarantine ----------------------------------------------------------------------------

    def quarantine_put(self, route: str, source_id: str, code: str, reason: str, path: str | None) -> None:
        with self.transaction("quarantine") as conn:
            row = conn.execute(
                "SELECT path, files FROM quarantine WHERE route=? AND source_id=?", (route, source_id)
            ).fetchone()
            files: list[str] = json.loads(row[1] or "[]") if row else []
            if row is not None and path is None:
                path = row[0]  # a retry that could not fetch the bytes keeps the saved file
            if path and path not in files:
                files.append(path)
            conn.execute(
                f"INSERT OR REPLACE INTO quarantine ({_Q_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                (route, source_id, code, reason, path, time.time(), json.dumps(files)),
            )

    def quarantine_release(self, route: str, source_id: str) -> QuarantineEntry | None:
        with self.transaction("release") as conn:
            row = conn.execute(
                f"SELECT {_Q_COLUMNS} FROM quarantine WHERE route=? AND source_id=?", (route, source_id)
            ).fetchone()
            conn.execute("DELETE FROM quarantine WHERE route=? AND source_id=?", (route, source_id))
        return _entry(row) if row else None

    def quarantine_entries(self, route: str | None = None) -> list[QuarantineEntry]:
        sql = f"SELECT {_Q_COLUMNS} FROM quarantine"
        rows = self._read(sql + (" WHERE route=?" if route else "") + " ORDER BY at", (route,) if route else ())
        return [_entry(row) for row in rows]

    def quarantine_older_than(self, when: float) -> list[QuarantineEntry]:
        rows = self._read(f"SELECT {_Q_COLUMNS} FROM quarantine WHERE at < ? ORDER BY at", (when,))
        return [_entry(row) for row in rows]

    def quarantine_oldest(self) -> float | None:
        rows = self._read("SELECT min(at) FROM quarantine")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- feed resets ---------------------------------------------------------------------------

    def feed_reset_put(self, reset: FeedReset) -> None:
        with self.transaction("feed reset") as conn:
            conn.execute(
                "INSERT INTO feed_resets VALUES (?,?,?,?,?,?) ON CONFLICT(route) DO UPDATE SET "
                "checkpoint = excluded.checkpoint, resource = excluded.resource, "
                "source_last = excluded.source_last, reason = excluded.reason",
                (reset.route, reset.detected, reset.checkpoint, reset.resource, reset.source_last, reset.reason),
            )

    def feed_reset_clear(self, route: str) -> None:
        with self.transaction("feed reset") as conn:
            conn.execute("DELETE FROM feed_resets WHERE route=?", (route,))

    def feed_resets(self) -> dict[str, FeedReset]:
        rows = self._read("SELECT route, detected, checkpoint, resource, source_last, reason FROM feed_resets")
        return {row[0]: FeedReset(*row) for row in rows}

    # -- index spool ---------------------------------------------------------------------------

    def spool_enqueue(self, sink: str, documents: Iterable[tuple[str, str, str]]) -> int:
        queued = 0
        now = time.time()
        with self.transaction("spool enqueue") as conn:
            for doc_id, digest, body in documents:
                row = conn.execute(
                    "SELECT doc_hash FROM spool_delivered WHERE sink = ? AND doc_id = ?", (sink, doc_id)
                ).fetchone()
                if row is not None and row[0] == digest:
                    continue
                conn.execute(
                    "INSERT INTO spool_pending (sink, doc_id, doc_hash, body, queued_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(sink, doc_id) DO UPDATE SET doc_hash = excluded.doc_hash, body = excluded.body",
                    (sink, doc_id, digest, body, now),
                )
                queued += 1
        return queued

    def spool_next(self, sink: str, limit: int) -> list[SpoolRow]:
        rows = self._read(
            "SELECT seq, doc_hash, body FROM spool_pending WHERE sink = ? ORDER BY seq LIMIT ?", (sink, limit)
        )
        return [(int(seq), str(h), str(body)) for seq, h, body in rows]

    def spool_mark_delivered(self, sink: str, rows: list[tuple[int, str, str]]) -> None:
        now = time.time()
        with self.transaction("spool delivered") as conn:
            for seq, digest, doc_id in rows:
                # Only drop the pending row if it was not replaced by newer content meanwhile.
                conn.execute("DELETE FROM spool_pending WHERE seq = ? AND doc_hash = ?", (seq, digest))
                conn.execute("INSERT OR REPLACE INTO spool_delivered VALUES (?, ?, ?, ?)", (sink, doc_id, digest, now))

    def spool_mark_rejected(self, sink: str, rows: list[tuple[int, str, str]], reasons: dict[str, str]) -> int:
        now = time.time()
        count = 0
        with self.transaction("spool rejected") as conn:
            for seq, doc_id, body in rows:
                reason = reasons.get(doc_id)
                if reason is None:
                    continue
                conn.execute("DELETE FROM spool_pending WHERE seq = ?", (seq,))
                conn.execute("INSERT OR REPLACE INTO spool_rejected VALUES (?, ?, ?, ?, ?)",
                             (sink, doc_id, reason, body, now))
                count += 1
        return count

    def spool_mark_failed(self, sink: str, seqs: list[int], error: str) -> None:
        with self.transaction("spool failed") as conn:
            conn.executemany("UPDATE spool_pending SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                             [(error[:500], seq) for seq in seqs])

    def spool_pending(self, sink: str) -> int:
        return int(self._read("SELECT count(*) FROM spool_pending WHERE sink = ?", (sink,))[0][0])

    def spool_delivered_among(self, sink: str, doc_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for i in range(0, len(doc_ids), 500):
            chunk = doc_ids[i : i + 500]
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self._read(
                f"SELECT doc_id FROM spool_delivered WHERE sink = ? AND doc_id IN ({marks})", [sink, *chunk]))
        return found

    def spool_forget_delivered(self, sink: str, doc_ids: list[str]) -> None:
        with self.transaction("spool forget") as conn:
            conn.executemany("DELETE FROM spool_delivered WHERE sink = ? AND doc_id = ?", [(sink, d) for d in doc_ids])

    def spool_rejected(self, sink: str) -> dict[str, str]:
        rows = self._read("SELECT doc_id, reason FROM spool_rejected WHERE sink = ? ORDER BY rejected_at", (sink,))
        return {r[0]: r[1] for r in rows}

    def spool_sizes(self) -> dict[str, int]:
        rows = self._read("SELECT sink, count(*) FROM spool_pending GROUP BY sink ORDER BY sink")
        return {str(sink): int(n) for sink, n in rows}

    def spool_rejected_older_than(self, when: float) -> list[tuple[str, str, float]]:
        rows = self._read("SELECT sink, doc_id, rejected_at FROM spool_rejected WHERE rejected_at < ?", (when,))
        return [(str(s), str(d), float(t)) for s, d, t in rows]

    def spool_drop_rejected(self, sink: str, doc_id: str) -> None:
        with self.transaction("spool purge") as conn:
            conn.execute("DELETE FROM spool_rejected WHERE sink = ? AND doc_id = ?", (sink, doc_id))

    def spool_rejected_oldest(self) -> float | None:
        rows = self._read("SELECT min(rejected_at) FROM spool_rejected")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- de-identification mapping ---------------------------------------------------------------

    def mapping_add(self, rows: Iterable[tuple[str, str, str]]) -> None:
        with self.transaction("mapping") as conn:
            conn.executemany("INSERT OR IGNORE INTO deid_map (kind, id_old, id_new) VALUES (?, ?, ?)", rows)

    def mapping_pairs(self, kind: str) -> list[tuple[str, str]]:
        rows = self._read("SELECT id_old, id_new FROM deid_map WHERE kind = ? ORDER BY id_old", (kind,))
        return [(str(a), str(b)) for a, b in rows]

    # -- reconcile and the console ----------------------------------------------------------

    def routed_among(self, destination: str, route: str, target_ids: list[str]) -> set[str]:
        found: set[str] = set()
        for start in range(0, len(target_ids), 500):
            chunk = target_ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = self._read(
                f"SELECT target_id FROM delivered WHERE destination=? AND route=? AND target_id IN ({marks})",
                (destination, route, *chunk),
            )
            found.update(r[0] for r in rows)
        return found

    def forget_deliveries(self, destination: str, target_ids: list[str]) -> None:
        if target_ids:
            with self.transaction("forget") as conn:
                conn.executemany("DELETE FROM delivered WHERE destination=? AND target_id=?",
                                 [(destination, t) for t in target_ids])

    def delivered_per_slot(self, since: float, slot_seconds: float) -> list[tuple[str, int, int]]:
        rows = self._read(
            "SELECT route, CAST((at - ?) / ? AS INTEGER) AS slot, count(*) FROM delivered "
            "WHERE at >= ? AND kind = 'image' GROUP BY route, slot", (since, slot_seconds, since))
        return [(str(r), int(slot), int(n)) for r, slot, n in rows]

    def reconcile_run_put(self, row: ReconcileRunRow) -> None:
        with self.transaction("reconcile run") as conn:
            conn.execute("INSERT OR REPLACE INTO reconcile_runs VALUES (?,?,?,?,?,?,?,?,?)",
                         (*row[:8], int(row[8])))

    def reconcile_runs(self) -> list[ReconcileRunRow]:
        rows = self._read("SELECT route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run "
                          "FROM reconcile_runs ORDER BY route")
        return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in rows]


_STORES: dict[Path, SqliteStore] = {}
_STORES_LOCK = threading.Lock()


def open_store(path: str | Path) -> Any:
    """The process's store for a database file or a PostgreSQL URL (shared; each caller calls ``close()`` once).

    ``postgresql://...`` (a :class:`~copydicom.state._postgres.PostgresTarget` carries its password)
    opens the PostgreSQL store; anything else is a SQLite file.
    """
    from copydicom.state._postgres import is_postgres, open_postgres

    if is_postgres(path):
        return open_postgres(str(path), getattr(path, "password", None))
    key = Path(path).resolve()
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = SqliteStore(path)
            _STORES[key] = store
        store._refs += 1
        return store
