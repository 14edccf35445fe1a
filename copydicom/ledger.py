"""The ledger: deliveries, checkpoints, quarantine and audit, as a view over the state store.

Tables (see :mod:`copydicom.state._schema`)
-------------------------------------------
``checkpoints(route, seq, resource)``
    The low-watermark of each route's changes feed: every change with a
    sequence number ``<= seq`` is stored at every destination or quarantined.
    It never moves backwards.  ``resource`` is the source's ID of the change at
    ``seq``: a source whose feed was reset is noticed by it.
``delivered(destination, target_id, source_id, route, outcome, at, kind, source_md5)``
    What each destination holds, keyed by the Orthanc ID of what was *sent*
    (after de-identification), so a second run sends nothing.  ``kind`` is
    ``image`` or ``index``.  ``source_md5`` (nullable) is the MD5 of the source's
    bytes that were delivered: a source that announces the instance again with
    other bytes (same SOP Instance UID, new content) is noticed.  ``outcome`` is
    ``changed`` while a destination keeps an older version (policy ``report``).
``quarantine(route, source_id, code, reason, path, at, files)``
    Instances that could not be processed, with the reason (one line); their
    bytes are kept in the quarantine directory under a digest name.  An entry is
    released when a later run delivers the instance.
``audit(target_id, route, stage, actions)``
    What a stage did to an instance (tags and action codes, never values).

All writes from worker threads go through :meth:`Ledger.record_*`, which
queue rows; :meth:`Ledger.flush` writes them in one transaction.  The
checkpoint is only advanced by :meth:`Ledger.advance_checkpoint`, which
flushes first, so the watermark never runs ahead of the deliveries it covers.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from copydicom.model import FeedPosition
from copydicom.state import (
    FeedReset,
    QuarantineEntry,
    SqliteStore,
    Store,
    StoreView,
    display_source_id,
    one_line,
)
from copydicom.state import SCHEMA_VERSION as SCHEMA_VERSION

log = logging.getLogger(__name__)

__all__ = ["SCHEMA_VERSION", "FeedReset", "Ledger", "QuarantineEntry"]


class Ledger(StoreView):
    """The ledger view of the state store.

    Parameters
    ----------
    path
        The state database file (created 0600), or a :class:`~copydicom.state.Store`.
    """

    def __init__(self, path: str | Path | Store) -> None:
        super().__init__(path)
        self._lock = threading.Lock()
        self._pending_delivered: list[tuple[str, str, str, str, str, float, str | None]] = []
        self._pending_audit: list[tuple[str, str, str, str, float]] = []
        self._pending_settled: list[tuple[str, str]] = []

    @property
    def connection(self) -> Any:
        """This thread's SQLite connection (read-only helpers of other components)."""
        if isinstance(self.store, SqliteStore):
            return self.store.connection
        raise AttributeError("connection: only the SQLite store has one")

    # -- writes --------------------------------------------------------------------------

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

    def record_settled(self, route: str, source_id: str) -> None:
        """Queue: the instance is now at every destination; its quarantine entry (if any) is released."""
        with self._lock:
            self._pending_settled.append((route, source_id))

    def flush(self, *, checkpoint: tuple[str, int] | tuple[str, int, str | None] | None = None) -> None:
        """Write queued rows, and optionally a checkpoint ``(route, seq[, resource])``, in one transaction."""
        with self._lock:
            delivered, self._pending_delivered = self._pending_delivered, []
            audit, self._pending_audit = self._pending_audit, []
            settled, self._pending_settled = self._pending_settled, []
        position = None
        if checkpoint is not None:
            resource = checkpoint[2] if len(checkpoint) > 2 else None
            position = (checkpoint[0], FeedPosition(int(checkpoint[1]), resource))
        try:
            released = self.store.write_batch(
                deliveries=delivered, audits=audit, checkpoint=position, settled=settled
            )
        except Exception:
            with self._lock:  # keep the rows for the next attempt
                self._pending_delivered[:0] = delivered
                self._pending_audit[:0] = audit
                self._pending_settled[:0] = settled
            raise
        for entry in released:
            removed = remove_files(entry)
            log.info("quarantine entry of instance %s on route %s released: delivered by a later run "
                     "(%d file(s) removed)", display_source_id(entry.source_id), entry.route, removed)

    def advance_checkpoint(self, route: str, seq: int, resource: str | None = None) -> None:
        """Flush pending rows and move the route's watermark forward (never backwards)."""
        self.flush(checkpoint=(route, seq, resource))

    def quarantine(self, route: str, source_id: str, code: str, reason: str, path: str | None) -> None:
        """Record an instance in quarantine (written at once: it is rare and must not be lost).

        The reason is stored on one line; a new entry for the same instance keeps the file of
        the previous one when it has none of its own.
        """
        self.store.quarantine_put(route, source_id, code, one_line(reason), path)

    def release(self, route: str, source_id: str) -> QuarantineEntry | None:
        """Remove a quarantine entry (its files are the caller's: see :func:`remove_files`)."""
        return self.store.quarantine_release(route, source_id)

    # -- reads ---------------------------------------------------------------------------

    def checkpoint(self, route: str) -> int | None:
        position = self.store.checkpoint(route)
        return None if position is None else position.seq

    def position(self, route: str) -> FeedPosition | None:
        """The checkpoint with the resource ID of its change."""
        return self.store.checkpoint(route)

    def delivered_among(self, destination: str, target_ids: list[str]) -> set[str]:
        """Which of ``target_ids`` the ledger knows ``destination`` holds (pending rows included)."""
        found: set[str] = set()
        wanted = set(target_ids)
        with self._lock:
            found.update(row[1] for row in self._pending_delivered if row[0] == destination and row[1] in wanted)
        found.update(self.store.deliveries_among(destination, target_ids))
        return found

    def delivered_md5(self, destination: str, target_ids: list[str]) -> dict[str, str]:
        """``{target_id: source MD5}`` of the deliveries to ``destination`` whose source MD5 is known."""
        found = self.store.deliveries_md5(destination, target_ids)
        wanted = set(target_ids)
        with self._lock:  # rows not flushed yet are newer
            for row in self._pending_delivered:
                if row[0] == destination and row[1] in wanted and row[6] is not None:
                    found[row[1]] = row[6]
        return found

    def is_quarantined(self, route: str, source_id: str) -> bool:
        return any(e.source_id == source_id for e in self.store.quarantine_entries(route))

    def quarantined(self, route: str | None = None) -> list[QuarantineEntry]:
        return self.store.quarantine_entries(route)

    def counts(self) -> dict[str, dict[str, int]]:
        """``{route: {outcome: n, "quarantined": n}}`` of *image* deliveries (index documents apart:
        :meth:`index_counts`)."""
        result: dict[str, dict[str, int]] = {}
        for row in self.store.delivery_counts():
            if row.kind == "image":
                per = result.setdefault(row.route, {})
                per[row.outcome] = per.get(row.outcome, 0) + row.count
        for entry in self.store.quarantine_entries():
            per = result.setdefault(entry.route, {})
            per["quarantined"] = per.get("quarantined", 0) + 1
        return result

    def destination_counts(self) -> dict[str, dict[str, dict[str, int]]]:
        """``{route: {destination: {"kind": image|index, outcome: n}}}`` for ``status``."""
        result: dict[str, dict[str, dict[str, Any]]] = {}
        for row in self.store.delivery_counts():
            per = result.setdefault(row.route, {}).setdefault(row.destination, {"kind": row.kind})
            per[row.outcome] = per.get(row.outcome, 0) + row.count
        return result

    def quarantine_reasons(self) -> dict[str, dict[str, int]]:
        """``{route: {code: n}}``: quarantine grouped by reason code."""
        result: dict[str, dict[str, int]] = {}
        for entry in self.store.quarantine_entries():
            per = result.setdefault(entry.route, {})
            per[entry.code] = per.get(entry.code, 0) + 1
        return result

    def feed_resets(self) -> dict[str, FeedReset]:
        return self.store.feed_resets()

    def audit_of(self, route: str, target_id: str) -> dict[str, Any]:
        return self.store.audit_of(route, target_id)

    def iter_delivered(self, destination: str) -> Iterator[tuple[str, str]]:
        yield from self.store.iter_deliveries(destination)

    def _before_close(self) -> None:
        self.flush()


def remove_files(entry: QuarantineEntry) -> int:
    """Delete every file a quarantine entry ever pointed to; returns how many were removed."""
    removed = 0
    for name in {*entry.files, *([entry.path] if entry.path else [])}:
        try:
            Path(name).unlink()
            removed += 1
        except FileNotFoundError:
            pass
        except OSError as exc:
            log.warning("quarantine file of route %s could not be removed: %s", entry.route, exc.strerror)
    return removed
