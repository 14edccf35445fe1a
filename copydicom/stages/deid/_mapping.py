"""Old -> new identifier pairs (UIDs, PatientIDs) in the state store, for export.

A view over :mod:`copydicom.state` (table ``deid_map`` in SQLite).  Inserts are
buffered and committed in batches (it is on the hot path).
"""

from __future__ import annotations

import csv
import os
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from copydicom.state import Store, StoreView, private_dir

KINDS = {"uid": "uids.csv", "patient_id": "patient_ids.csv"}


class MappingStore(StoreView):
    """Records ``(kind, id_old, id_new)``; ``kind`` is ``uid`` or ``patient_id``.

    Parameters
    ----------
    path
        The state database (created 0600 if missing) or a :class:`~copydicom.state.Store`.
    batch
        Pending pairs that trigger a commit.
    interval
        Seconds after which pending pairs are committed at the next record.
    """

    def __init__(self, path: str | Path | Store, *, batch: int = 2000, interval: float = 2.0) -> None:
        super().__init__(path)
        self._lock = threading.Lock()
        self._pending: set[tuple[str, str, str]] = set()
        self._batch = batch
        self._interval = interval
        self._last = time.monotonic()

    def record_many(self, kind: str, pairs: Iterable[tuple[str, str]]) -> None:
        """Buffer pairs; commit when the batch is full or the interval passed."""
        with self._lock:
            for old, new in pairs:
                self._pending.add((kind, old, new))
            if len(self._pending) >= self._batch or time.monotonic() - self._last >= self._interval:
                self._flush_locked()

    def flush(self) -> None:
        """Commit pending pairs now."""
        with self._lock:
            self._flush_locked()

    def _flush_locked(self) -> None:
        self._last = time.monotonic()
        if not self._pending:
            return
        self.store.mapping_add(sorted(self._pending))
        self._pending.clear()

    def pairs(self, kind: str) -> list[tuple[str, str]]:
        """All committed and pending pairs of one kind, sorted by old value."""
        with self._lock:
            self._flush_locked()
        return self.store.mapping_pairs(kind)

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``uids.csv`` and ``patient_ids.csv`` (header ``id_old,id_new``), owner-only."""
        out = private_dir(out_dir)
        written: dict[str, Path] = {}
        for kind, filename in KINDS.items():
            target = out / filename
            fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0), 0o600)
            os.chmod(target, 0o600)
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id_old", "id_new"])
                writer.writerows(self.pairs(kind))
            written[kind] = target
        return written

    def _before_close(self) -> None:
        """Commit pending pairs before the store is released."""
        self.flush()
