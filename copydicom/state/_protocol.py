"""The state store interface: what the ledger, the index spool and the mapping store need.

One store holds a deployment's durable state.  :class:`~copydicom.state.SqliteStore`
implements it in one SQLite file (the default, single host); the scale-out issue's
PostgreSQL backend implements the same methods.  Callers use the views
(:class:`~copydicom.ledger.Ledger`, :class:`~copydicom.sinks.spool.Spool`,
:class:`~copydicom.stages.deid.MappingStore`), which buffer and batch; the store's
methods are the transactional primitives underneath, written so that each maps to
one SQL transaction in either backend (no SQLite-only SQL leaks through: no
connection or cursor is part of the interface).

Plain tuples, not ORM rows: ``Delivery = (destination, target_id, source_id, route,
outcome, at, source_md5)``, ``Audit = (target_id, route, stage, actions_json, at)``,
``SpoolRow = (seq, doc_hash, body)`` where ``body`` is the document's canonical JSON.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from copydicom.model import FeedPosition

Delivery = tuple[str, str, str, str, str, float, str | None]
Audit = tuple[str, str, str, str, float]
SpoolRow = tuple[int, str, str]


@dataclass(frozen=True)
class QuarantineEntry:
    """An instance that could not be processed.

    ``path`` is the current file holding its bytes (``None`` if none was kept);
    ``files`` every file the entry ever pointed to (``purge`` removes them all).
    ``source_id`` may be a file path (folder import): PHI, shown only on request.
    """

    route: str
    source_id: str
    code: str
    reason: str
    path: str | None
    at: float
    files: tuple[str, ...] = ()


@dataclass(frozen=True)
class FeedReset:
    """A change feed that no longer matches a route's checkpoint (source database rebuilt)."""

    route: str
    detected: float
    checkpoint: int
    resource: str | None
    source_last: int | None
    reason: str


@dataclass(frozen=True)
class DeliveryCount:
    """Deliveries of one route at one destination with one outcome (``status``)."""

    route: str
    destination: str
    kind: str  # "image" or "index"
    outcome: str  # "stored" or "existing"
    count: int


#: ``(route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run)``: the last reconcile of
#: a route (:class:`copydicom.reconcile._store.RunRecord` is its typed view).
ReconcileRunRow = tuple[str, float, float, int, int, int, int, int, bool]


@runtime_checkable
class Store(Protocol):
    """The durable state of copydicom (see the module docstring)."""

    location: str

    # -- life cycle ------------------------------------------------------------------------
    def schema_version(self) -> int: ...
    def probe_write(self) -> None:
        """One small write transaction (health check: read-only disk, lock, full disk)."""
        ...
    def lock_route(self, route: str) -> Any:
        """Exclusive, process-lifetime lock on a route's feed; raises ``RouteLocked`` if held."""
        ...
    def close(self) -> None: ...

    # -- ledger ------------------------------------------------------------------------------
    def register_index(self, destination: str) -> None:
        """Mark a destination name as an index (its deliveries are index documents)."""
        ...
    def write_batch(
        self,
        *,
        deliveries: list[Delivery] = ...,
        audits: list[Audit] = ...,
        checkpoint: tuple[str, FeedPosition] | None = None,
        settled: list[tuple[str, str]] = ...,
    ) -> list[QuarantineEntry]:
        """One transaction: deliveries, audits, a checkpoint that never moves back, and
        ``(route, source_id)`` pairs that are now delivered (their quarantine entries are
        released and returned, so the caller can remove their files)."""
        ...
    def deliveries_among(self, destination: str, target_ids: list[str]) -> set[str]: ...
    def deliveries_md5(self, destination: str, target_ids: list[str]) -> dict[str, str]:
        """``{target_id: MD5 of the source bytes delivered}`` where that MD5 is known (changed-instance policy)."""
        ...
    def iter_deliveries(self, destination: str) -> Iterator[tuple[str, str]]: ...
    def delivery_counts(self) -> list[DeliveryCount]: ...
    def checkpoint(self, route: str) -> FeedPosition | None: ...
    def rebase_checkpoint(self, route: str, position: FeedPosition) -> None:
        """Set the checkpoint even backwards (repair after a feed reset) and clear the reset."""
        ...
    def audit_of(self, route: str, target_id: str) -> dict[str, Any]: ...
    def routed_among(self, destination: str, route: str, target_ids: list[str]) -> set[str]:
        """Which of ``target_ids`` this ``route`` delivered to ``destination`` (reconcile's deletions)."""
        ...
    def forget_deliveries(self, destination: str, target_ids: list[str]) -> None:
        """Drop the delivery rows of instances the destination no longer holds (reconcile)."""
        ...
    def delivered_per_slot(self, since: float, slot_seconds: float) -> list[tuple[str, int, int]]:
        """``(route, slot, images delivered)`` since ``since`` in slots of ``slot_seconds`` (the console's chart)."""
        ...

    # -- reconcile runs ------------------------------------------------------------------------
    def reconcile_run_put(self, row: ReconcileRunRow) -> None:
        """Remember the last reconcile of a route (replaces that route's row)."""
        ...
    def reconcile_runs(self) -> list[ReconcileRunRow]: ...

    # -- quarantine ----------------------------------------------------------------------------
    def quarantine_put(self, route: str, source_id: str, code: str, reason: str, path: str | None) -> None:
        """Add or update an entry; an update keeps the old file if no new one is given and
        remembers every file in ``files``."""
        ...
    def quarantine_release(self, route: str, source_id: str) -> QuarantineEntry | None: ...
    def quarantine_entries(self, route: str | None = None) -> list[QuarantineEntry]: ...
    def quarantine_older_than(self, when: float) -> list[QuarantineEntry]: ...
    def quarantine_oldest(self) -> float | None: ...

    # -- feed resets -------------------------------------------------------------------------
    def feed_reset_put(self, reset: FeedReset) -> None: ...
    def feed_reset_clear(self, route: str) -> None: ...
    def feed_resets(self) -> dict[str, FeedReset]: ...

    # -- index spool ---------------------------------------------------------------------------
    def spool_enqueue(self, sink: str, documents: Iterable[tuple[str, str, str]]) -> int:
        """Queue ``(doc_id, doc_hash, body)`` unless delivered with the same hash; returns how many."""
        ...
    def spool_next(self, sink: str, limit: int) -> list[SpoolRow]: ...
    def spool_mark_delivered(self, sink: str, rows: list[tuple[int, str, str]]) -> None:
        """``(seq, doc_hash, doc_id)`` delivered."""
        ...
    def spool_mark_rejected(self, sink: str, rows: list[tuple[int, str, str]], reasons: dict[str, str]) -> int:
        """``(seq, doc_id, body)`` of which those in ``reasons`` were refused by the index."""
        ...
    def spool_mark_failed(self, sink: str, seqs: list[int], error: str) -> None: ...
    def spool_pending(self, sink: str) -> int: ...
    def spool_delivered_among(self, sink: str, doc_ids: list[str]) -> set[str]: ...
    def spool_forget_delivered(self, sink: str, doc_ids: list[str]) -> None:
        """Forget deliveries (the documents are gone from the index): they may be sent again."""
        ...
    def spool_rejected(self, sink: str) -> dict[str, str]: ...
    def spool_sizes(self) -> dict[str, int]: ...
    def spool_rejected_older_than(self, when: float) -> list[tuple[str, str, float]]: ...
    def spool_drop_rejected(self, sink: str, doc_id: str) -> None: ...
    def spool_rejected_oldest(self) -> float | None: ...

    # -- de-identification mapping ---------------------------------------------------------------
    def mapping_add(self, rows: Iterable[tuple[str, str, str]]) -> None: ...
    def mapping_pairs(self, kind: str) -> list[tuple[str, str]]: ...
