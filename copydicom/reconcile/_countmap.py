"""A bounded ``{key: count}`` map that spills to a temporary SQLite table past a bound.

The counting twin of :class:`copydicom.sources.index_query.SeenSet`: both are a
:class:`copydicom.spill.SpillTable` (same spill rule, same temp-file life cycle).
"""

from __future__ import annotations

from collections.abc import Iterator

from copydicom.spill import SpillTable


class CountMap(SpillTable):
    """Counts per key in bounded memory (``memory_limit`` keys, then a temp SQLite table)."""

    def __init__(self, memory_limit: int = 200_000) -> None:
        super().__init__(memory_limit)
        self._mem: dict[str, int] = {}

    def add(self, key: str, n: int) -> None:
        """Add ``n`` to the count of ``key``."""
        if self._db is not None:
            self._db.execute(
                "INSERT INTO counts(k, n) VALUES (?, ?) ON CONFLICT(k) DO UPDATE SET n = n + excluded.n", (key, n)
            )
        elif key in self._mem or len(self._mem) < self.memory_limit:
            self._mem[key] = self._mem.get(key, 0) + n
        else:
            self._spill()
            self.add(key, n)

    def get(self, key: str) -> int | None:
        if self._db is not None:
            row = self._db.execute("SELECT n FROM counts WHERE k=?", (key,)).fetchone()
            return None if row is None else int(row[0])
        return self._mem.get(key)

    def keys(self) -> Iterator[str]:
        if self._db is not None:
            for (key,) in self._db.execute("SELECT k FROM counts ORDER BY k"):
                yield str(key)
        else:
            yield from list(self._mem)

    def __len__(self) -> int:
        if self._db is not None:
            return int(self._db.execute("SELECT count(*) FROM counts").fetchone()[0])
        return len(self._mem)

    def _spill(self) -> None:
        self._spill_rows(
            "copydicom-counts-",
            "CREATE TABLE counts (k TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID",
            "INSERT INTO counts VALUES (?, ?)",
            self._mem.items(),
        )
        self._mem = {}
