"""A durable spool in front of any index sink: nothing lost while an index is down.

Documents are first written to the state store (:mod:`copydicom.state`; in SQLite, tables
prefixed ``spool_``), then delivered in submission order by :meth:`SpooledIndex.flush`.
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
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from copydicom.errors import ConfigError, DocumentsRejected, IndexUnavailable
from copydicom.model import IndexSink
from copydicom.state import StoreView, one_line
from copydicom.retry import Backoff, scaled

log = logging.getLogger(__name__)


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


def spool_sizes(conn: Any) -> dict[str, int]:
    """Pending documents per index sink: ``conn`` is a :class:`~copydicom.state.Store` (or, as in the
    first release, a SQLite connection to the state database).

    Returns ``{}`` when the spool tables do not exist (no index configured yet).
    """
    if hasattr(conn, "spool_sizes"):
        return dict(conn.spool_sizes())
    try:
        rows = conn.execute("SELECT sink, count(*) FROM spool_pending GROUP BY sink ORDER BY sink").fetchall()
    except sqlite3.OperationalError:
        return {}
    return {str(sink): int(n) for sink, n in rows}


class Spool(StoreView):
    """The index spool view of the state store, shared by all sinks of a process.

    ``path`` is the state database (the spool's tables are prefixed ``spool_``) or a
    :class:`~copydicom.state.Store`.
    """

    def register_sink(self, sink: str) -> None:
        """Tell the ledger that deliveries to ``sink`` are index documents, not images."""
        self.store.register_index(sink)

    def enqueue(self, sink: str, documents: list[dict[str, Any]]) -> int:
        """Queue documents not already delivered with the same content; return how many were queued."""
        rows: list[tuple[str, str, str]] = []
        for doc in documents:
            doc_id = doc.get("_id")
            if not isinstance(doc_id, str) or not doc_id:
                raise ConfigError("spool: an index document has no string _id")
            body = canonical_json(doc)
            rows.append((doc_id, hashlib.sha1(body.encode()).hexdigest(), body))
        return self.store.spool_enqueue(sink, rows)

    def next_batch(self, sink: str, limit: int) -> list[tuple[int, str, dict[str, Any]]]:
        return [(seq, digest, json.loads(body)) for seq, digest, body in self.store.spool_next(sink, limit)]

    def mark_delivered(self, sink: str, batch: list[tuple[int, str, dict[str, Any]]]) -> None:
        self.store.spool_mark_delivered(sink, [(seq, digest, str(doc["_id"])) for seq, digest, doc in batch])

    def mark_rejected(self, sink: str, batch: list[tuple[int, str, dict[str, Any]]], reasons: dict[str, str]) -> int:
        rows = [(seq, str(doc["_id"]), json.dumps(doc, sort_keys=True, default=str)) for seq, _d, doc in batch]
        return self.store.spool_mark_rejected(sink, rows, {k: one_line(v) for k, v in reasons.items()})

    def mark_failed(self, sink: str, batch: list[tuple[int, str, dict[str, Any]]], error: str) -> None:
        self.store.spool_mark_failed(sink, [seq for seq, _d, _doc in batch], one_line(error))

    def pending(self, sink: str) -> int:
        return self.store.spool_pending(sink)

    def delivered(self, sink: str, doc_ids: list[str]) -> set[str]:
        """The subset of ``doc_ids`` already delivered to ``sink``."""
        return self.store.spool_delivered_among(sink, doc_ids)

    def forget_delivered(self, sink: str, doc_ids: list[str]) -> None:
        """Let the spool send these documents again (reconcile found them gone from the index)."""
        self.store.spool_forget_delivered(sink, doc_ids)

    def rejected(self, sink: str) -> dict[str, str]:
        return self.store.spool_rejected(sink)



class SpooledIndex:
    """Wrap an :class:`~copydicom.model.IndexSink` with the durable spool.

    :meth:`submit` only writes to the local spool, so image replication never waits for an
    index; :meth:`flush` (or the background thread of :meth:`start`) delivers what it can.
    """

    def __init__(self, sink: IndexSink, spool: Spool, *, batch_size: int = 500) -> None:
        self.sink = sink
        self.spool = spool
        self.name = sink.name
        register = getattr(spool, "register_sink", None)
        if callable(register):
            register(self.name)
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
