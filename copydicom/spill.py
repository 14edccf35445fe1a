"""Bounded memory for large key collections: keys in memory up to a limit, then a temporary SQLite table.

:class:`SpillTable` holds the spill rule and the temp-file life cycle once; its users are
:class:`copydicom.sources.index_query.SeenSet` (a set: deduplicating index-query matches and
reconcile's destination studies) and :class:`copydicom.reconcile._countmap.CountMap` (a count per
key: reconcile's per-study instance counts).

Written here rather than taken from a library because the few lines do not justify a dependency
(``diskcache`` would add a process-wide cache directory and pickling for plain string keys).
"""

from __future__ import annotations

import sqlite3
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any


class SpillTable:
    """Base of the spilling collections: the temporary database once memory is full.

    Parameters
    ----------
    memory_limit
        Keys a subclass keeps in memory before it calls :meth:`_spill_rows`.
    """

    def __init__(self, memory_limit: int = 200_000) -> None:
        self.memory_limit = memory_limit
        self._db: sqlite3.Connection | None = None
        self._dir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def spilled(self) -> bool:
        """Whether the keys now live in the temporary SQLite table."""
        return self._db is not None

    def _spill_rows(self, prefix: str, create: str, insert: str, rows: Iterable[tuple[Any, ...]]) -> None:
        """Create the table (``create``) in a fresh private temp folder and move ``rows`` into it.

        The database is scratch space: no journal, no fsync (it is deleted by :meth:`close` and
        never read after a crash). The move is one transaction.
        """
        self._dir = tempfile.TemporaryDirectory(prefix=prefix)
        self._db = sqlite3.connect(str(Path(self._dir.name) / "spill.db"), isolation_level=None,
                                   check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=OFF")
        self._db.execute("PRAGMA synchronous=OFF")
        self._db.execute(create)
        self._db.execute("BEGIN")
        self._db.executemany(insert, rows)
        self._db.execute("COMMIT")

    def close(self) -> None:
        """Drop the temporary database (if any); idempotent."""
        if self._db is not None:
            self._db.close()
            self._db = None
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None
