"""Old -> new identifier pairs (UIDs, PatientIDs) in SQLite, for export.

Tables are prefixed ``deid_`` so they can live in the daemon's state
database.  The file is created owner-only (0600), in WAL mode; inserts are
buffered and committed in batches (it is on the hot path).
"""

from __future__ import annotations

import csv
import os
import sqlite3
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from copydicom.errors import LedgerError

KINDS = {"uid": "uids.csv", "patient_id": "patient_ids.csv"}


class MappingStore:
    """Records ``(kind, id_old, id_new)``; ``kind`` is ``uid`` or ``patient_id``.

    Parameters
    ----------
    path
        SQLite file (created 0600 if missing).
    batch
        Pending pairs that trigger a commit.
    interval
        Seconds after which pending pairs are committed at the next record.
    """

    def __init__(self, path: str | Path, *, batch: int = 2000, interval: float = 2.0) -> None:
        self.path = Path(path)
        if not self.path.exists():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY, 0o600)
            os.close(fd)
        os.chmod(self.path, 0o600)
        self._lock = threading.Lock()
        self._pending: set[tuple[str, str, str]] = set()
        self._batch = batch
        self._interval = interval
        self._last = time.monotonic()
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS deid_map (kind TEXT NOT NULL, id_old TEXT NOT NULL, "
                "id_new TEXT NOT NULL, PRIMARY KEY (kind, id_old)) WITHOUT ROWID"
            )
            self._db.commit()
        except sqlite3.Error as exc:
            raise LedgerError(f"mapping store {self.path.name}: {exc}") from None
        for suffix in ("-wal", "-shm"):
            side = Path(str(self.path) + suffix)
            if side.exists():
                os.chmod(side, 0o600)

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
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO deid_map (kind, id_old, id_new) VALUES (?, ?, ?)", sorted(self._pending)
            )
            self._db.commit()
        except sqlite3.Error as exc:
            raise LedgerError(f"mapping store {self.path.name}: {exc}") from None
        self._pending.clear()

    def pairs(self, kind: str) -> list[tuple[str, str]]:
        """All committed and pending pairs of one kind, sorted by old value."""
        with self._lock:
            self._flush_locked()
            cur = self._db.execute("SELECT id_old, id_new FROM deid_map WHERE kind = ? ORDER BY id_old", (kind,))
            return [(str(a), str(b)) for a, b in cur.fetchall()]

    def export(self, out_dir: str | Path) -> dict[str, Path]:
        """Write ``uids.csv`` and ``patient_ids.csv`` (header ``id_old,id_new``), owner-only."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        written: dict[str, Path] = {}
        for kind, filename in KINDS.items():
            target = out / filename
            fd = os.open(target, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            os.chmod(target, 0o600)
            with os.fdopen(fd, "w", newline="", encoding="utf-8") as fh:
                writer = csv.writer(fh)
                writer.writerow(["id_old", "id_new"])
                writer.writerows(self.pairs(kind))
            written[kind] = target
        return written

    def close(self) -> None:
        """Commit and close."""
        self.flush()
        self._db.close()
