"""A durable spool in front of any index sink: nothing lost while an index is down.

Documents are first written to a local SQLite database (tables prefixed
``spool_``, WAL journal), then delivered in submission order by :meth:`SpooledIndex.flush`.
Delivered documents are remembered per sink with a hash of their content, so
submitting the same document again sends nothing; a changed document (same
``_id``, new content) is sent again and overwrites where the index can.

Delivery is at-least-once: a batch that failed half-way is resent whole, which
Elasticsearch and SQLite absorb (deterministic ``_id``) and Splunk searches
collapse on ``doc_id``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable, LedgerError
from copydicom.model import IndexSink
from copydicom.retry import Backoff, scaled

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spool_pending (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    sink     TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    body     TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    queued_at REAL NOT NULL,
    UNIQUE (sink, doc_id)
);
CREATE TABLE IF NOT EXISTS spool_delivered (
    sink     TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (sink, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool_rejected (
    sink     TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    body     TEXT NOT NULL,
    rejected_at REAL NOT NULL,
    PRIMARY KEY (sink, doc_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spool_pending_order ON spool_pending(sink, seq);
"""


def canonical_json(doc: dict[str, Any]) -> str:
    """The canonical JSON text of a document (keys sorted, no spaces): stored and hashed."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), default=str)


def document_hash(doc: dict[str, Any]) -> str:
    """SHA-1 of the canonical JSON of a document."""
    return hashlib.sha1(canonical_json(doc).encode()).hexdigest()


@dataclass(frozen=True)
class FlushResult:
    """What one :meth:`SpooledIndex.flush` did."""

    delivered: int
    rejected: int
    pending: int
    error: str | None = None


def spool_sizes(conn: sqlite3.Connection) -> dict[str, int]:
    """Pending documents per index sink, read from any connection to the spool database.

    Returns ``{}`` when the spool tables do not exist (no index configured yet).
    """
    try:
        rows = conn.execute("SELECT sink, count(*) FROM spool_pending GROUP BY sink ORDER BY sink").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {str(sink): int(n) for sink, n in rows}


class Spool:
    """The spool database, shared by all sinks of a process (one connection, one lock).

    ``path`` may be the ledger's own database file: the spool opens its own
    connection and only touches tables prefixed ``spool_``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None,
                                         timeout=30.0)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=FULL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise LedgerError(f"spool {self.path}: cannot open: {exc}") from None

    def _tx(self, fn: Any, *args: Any) -> Any:
        with self._lock:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                out = fn(*args)
                self._conn.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise LedgerError(f"spool {self.path}: {exc}") from None
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def enqueue(self, sink: str, documents: list[dict[str, Any]]) -> int:
        """Queue documents not already delivered with the same content; return how many were queued."""

        def run() -> int:
            queued = 0
            now = time.time()
            for doc in documents:
                doc_id = doc.get("_id")
                if not isinstance(doc_id, str) or not doc_id:
                    raise ConfigError("spool: an index document has no string _id")
                body = canonical_json(doc)
                digest = hashlib.sha1(body.encode()).hexdigest()
                row = self._conn.execute("SELECT doc_hash FROM spool_delivered WHERE sink = ? AND doc_id = ?",
                                         (sink, doc_id)).fetchone()
                if row is not None and row[0] == digest:
                    continue
                self._conn.execute(
                    "INSERT INTO spool_pending (sink, doc_id, doc_hash, body, queued_at) VALUES (?, ?, ?, ?, ?) "
                    "ON CONFLICT(sink, doc_id) DO UPDATE SET doc_hash = excluded.doc_hash, body = excluded.body",
                    (sink, doc_id, digest, body, now))
                queued += 1
            return queued

        return int(self._tx(run))

    def next_batch(self, sink: str, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        with self._lock:
            rows = self._conn.execute("SELECT seq, doc_hash, body FROM spool_pending WHERE sink = ? ORDER BY seq "
                                      "LIMIT ?", (sink, limit)).fetchall()
        return [(int(seq), str(h), json.loads(body)) for seq, h, body in rows]

    def mark_delivered(self, sink: str, batch: list[tuple[int, str, dict[str, Any]]]) -> None:
        def run() -> None:
            now = time.time()
            for seq, digest, doc in batch:
                # Only drop the pending row if it was not replaced by newer content meanwhile.
                self._conn.execute("DELETE FROM spool_pending WHERE seq = ? AND doc_hash = ?", (seq, digest))
                self._conn.execute("INSERT OR REPLACE INTO spool_delivered VALUES (?, ?, ?, ?)",
                                   (sink, doc["_id"], digest, now))

        self._tx(run)

    def mark_rejected(self, sink: str, batch: list[tuple[int, str, dict[str, Any]]], reasons: dict[str, str]) -> int:
        def run() -> int:
            now = time.time()
            count = 0
            for seq, _digest, doc in batch:
                reason = reasons.get(doc["_id"])
                if reason is None:
                    continue
                self._conn.execute("DELETE FROM spool_pending WHERE seq = ?", (seq,))
                self._conn.execute("INSERT OR REPLACE INTO spool_rejected VALUES (?, ?, ?, ?, ?)",
                                   (sink, doc["_id"], reason, json.dumps(doc, sort_keys=True, default=str), now))
                count += 1
            return count

        return int(self._tx(run))

    def mark_failed(self, sink: str, batch: list[tuple[int, str, dict[str, Any]]], error: str) -> None:
        def run() -> None:
            for seq, _d, _doc in batch:
                self._conn.execute("UPDATE spool_pending SET attempts = attempts + 1, last_error = ? WHERE seq = ?",
                                   (error[:500], seq))

        self._tx(run)

    def pending(self, sink: str) -> int:
        with self._lock:
            return int(self._conn.execute("SELECT count(*) FROM spool_pending WHERE sink = ?", (sink,)).fetchone()[0])

    def delivered(self, sink: str, doc_ids: list[str]) -> set[str]:
        """The subset of ``doc_ids`` already delivered to ``sink``."""
        found: set[str] = set()
        with self._lock:
            for i in range(0, len(doc_ids), 500):
                chunk = doc_ids[i : i + 500]
                marks = ",".join("?" * len(chunk))
                found.update(r[0] for r in self._conn.execute(
                    f"SELECT doc_id FROM spool_delivered WHERE sink = ? AND doc_id IN ({marks})", [sink, *chunk]))
        return found

    def rejected(self, sink: str) -> dict[str, str]:
        with self._lock:
            return {r[0]: r[1] for r in self._conn.execute(
                "SELECT doc_id, reason FROM spool_rejected WHERE sink = ? ORDER BY rejected_at", (sink,))}

    def close(self) -> None:
        with self._lock:
            self._conn.close()


class SpooledIndex:
    """Wrap an :class:`~copydicom.model.IndexSink` with the durable spool.

    :meth:`submit` only writes to the local spool, so image replication never waits for an
    index; :meth:`flush` (or the background thread of :meth:`start`) delivers what it can.
    """

    def __init__(self, sink: IndexSink, spool: Spool, *, batch_size: int = 500) -> None:
        self.sink = sink
        self.spool = spool
        self.name = sink.name
        self.batch_size = batch_size
        self._flush_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: Called with ``(sink name, result)`` after every flush (metrics).
        self.on_flush: Callable[[str, FlushResult], None] | None = None

    def submit(self, documents: list[dict[str, Any]]) -> int:
        """Queue documents durably; returns how many were new or changed."""
        return self.spool.enqueue(self.name, documents) if documents else 0

    def send(self, documents: list[dict[str, Any]]) -> None:
        """IndexSink protocol: queue, then deliver what can be delivered now (never raises IndexUnavailable)."""
        self.submit(documents)
        self.flush()

    def flush(self, *, max_batches: int | None = None) -> FlushResult:
        """Deliver pending documents in order until the spool is empty or the index fails.

        Raises
        ------
        ConfigError
            The sink's configuration is wrong (bad credentials, token): retrying cannot help.
        """
        delivered = rejected = batches = 0
        error: str | None = None
        with self._flush_lock:
            while max_batches is None or batches < max_batches:
                batch = self.spool.next_batch(self.name, self.batch_size)
                if not batch:
                    break
                batches += 1
                try:
                    self.sink.send([doc for _s, _h, doc in batch])
                except IndexUnavailable as exc:
                    error = str(exc)
                    self.spool.mark_failed(self.name, batch, error)
                    log.warning("index %s unavailable, %d documents kept in the spool: %s", self.name,
                                self.spool.pending(self.name), exc)
                    break
                except DocumentsRejected as exc:
                    n = self.spool.mark_rejected(self.name, batch, exc.rejected)
                    rejected += n
                    log.error("index %s refused %d documents: %s", self.name, n, exc)
                    if n == 0:
                        error = str(exc)
                        self.spool.mark_failed(self.name, batch, error)
                        break
                    continue  # the rest of the batch is resent (idempotent by _id)
                self.spool.mark_delivered(self.name, batch)
                delivered += len(batch)
        result = FlushResult(delivered=delivered, rejected=rejected, pending=self.spool.pending(self.name),
                             error=error)
        if self.on_flush is not None:
            self.on_flush(self.name, result)
        return result

    def already_indexed(self, doc_ids: list[str]) -> set[str]:
        """The subset of ``doc_ids`` this sink already received (per-sink dedupe memory)."""
        return self.spool.delivered(self.name, doc_ids)

    def start(self, interval: float = 5.0, max_interval: float = 30.0, *, backoff: Backoff | None = None) -> None:
        """Flush in a daemon thread every ``interval`` s; while the index is down, back off.

        The waits follow the one retry policy (:class:`copydicom.retry.Backoff`: full
        jitter, doubling from ``interval``, capped at ``max_interval``) and :meth:`close`
        interrupts them at once.  ``backoff`` replaces the policy (tests inject a sleep).
        """
        policy = backoff or Backoff(retries=None, base=interval, cap=max_interval)
        policy.stop = self._stop
        every = scaled(interval)

        def loop() -> None:
            failures = 0
            wait = every
            while not policy.sleep_for(wait):
                try:
                    result = self.flush()
                except ConfigError as exc:
                    log.error("index %s: configuration error, spooling only: %s", self.name, exc)
                    result = FlushResult(0, 0, 0, error=str(exc))
                except Exception as exc:
                    log.exception("index %s: flush failed (%s); documents stay in the spool", self.name,
                                  type(exc).__name__)
                    result = FlushResult(0, 0, 0, error=type(exc).__name__)
                failures = failures + 1 if result.error else 0
                wait = policy.delay(failures) if failures else every

        self._stop.clear()
        self._thread = threading.Thread(target=loop, name=f"spool-{self.name}", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the background thread (one last flush is the caller's choice) and close the sink."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        self.sink.close()
