"""A source that replicates what an index query matched (conditional replication).

The query runs against an index sink's ``search`` (SQLite SELECT, Elasticsearch
query DSL / Lucene ``query_string``, Splunk SPL); every sink follows all result
pages itself.  Each result row names what to copy by one of these fields
(first found wins; names are matched case-insensitively):

==============================  ===========================================
``ID`` / ``orthanc_id``         an Orthanc ID at any level (instance, series,
                                study, patient) of the *source* server
``SOPInstanceUID`` / ``sop_uid``            (0008,0018), resolved with ``/tools/lookup``
``SeriesInstanceUID`` / ``series_uid``      (0020,000E), every instance of the series
``StudyInstanceUID`` / ``study_uid``        (0020,000D), every instance of the study
==============================  ===========================================

The index documents written by copydicom carry ``ID`` = the source instance ID,
also for de-identified routes (their UIDs are de-identified and do not exist on
the source; select ``ID`` then).  A multi-valued field (Splunk ``mvlist``) names
each of its values.

Identifiers and resolved instance IDs are deduplicated with :class:`SeenSet`,
which keeps up to ``memory_limit`` keys in memory and spills the rest to a
temporary SQLite file, so memory stays bounded whatever the result size.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from copydicom.errors import ConfigError
from copydicom.model import InstanceRef
from copydicom.spill import SpillTable

log = logging.getLogger(__name__)

#: Result fields naming what to replicate, most specific first, with their aliases.
ID_FIELDS: tuple[tuple[str, ...], ...] = (
    ("id", "orthanc_id"),
    ("sopinstanceuid", "sop_uid"),
    ("seriesinstanceuid", "series_uid"),
    ("studyinstanceuid", "study_uid"),
)


class Searchable(Protocol):
    name: str

    def search(self, query: str) -> Iterator[dict[str, Any]]: ...


class Resolver(Protocol):
    """What :class:`~copydicom.sources.orthanc.OrthancSource` offers to resolve identifiers."""

    name: str

    def selected(self, identifiers: Iterable[str]) -> Iterator[list[InstanceRef]]: ...


class SeenSet(SpillTable):
    """A set of strings with bounded memory: spills to a temporary SQLite table past ``memory_limit``."""

    def __init__(self, memory_limit: int = 200_000) -> None:
        super().__init__(memory_limit)
        self._mem: set[str] = set()
        self.size = 0

    def add(self, key: str) -> bool:
        """Add ``key``; return True if it was new."""
        if key in self._mem:
            return False
        if self._db is not None:
            cur = self._db.execute("INSERT OR IGNORE INTO seen(k) VALUES (?)", (key,))
            if cur.rowcount == 0:
                return False
        elif len(self._mem) >= self.memory_limit:
            self._spill()
            return self.add(key)
        else:
            self._mem.add(key)
        self.size += 1
        return True

    def _spill(self) -> None:
        self._spill_rows(
            "copydicom-seen-",
            "CREATE TABLE seen (k TEXT PRIMARY KEY) WITHOUT ROWID",
            "INSERT INTO seen(k) VALUES (?)",
            ((k,) for k in self._mem),
        )
        self._mem = set()


def identifiers_of(row: dict[str, Any]) -> list[str]:
    """The identifiers a result row names (see the module docstring); ``[]`` if none."""
    lowered = {str(k).lower(): v for k, v in row.items()}
    for aliases in ID_FIELDS:
        for alias in aliases:
            value = lowered.get(alias)
            if value is None or value == "" or value == []:
                continue
            values = value if isinstance(value, list) else [value]
            return [str(v).strip() for v in values if v is not None and str(v).strip()]
    return []


@dataclass
class QueryStats:
    """What a query produced (for the command's report and the daemon's log)."""

    rows: int = 0
    identifiers: int = 0
    duplicates: int = 0
    unresolved: int = 0
    instances: int = 0


class IndexQuerySource:
    """Batches of :class:`InstanceRef` for the instances an index query matched.

    Parameters
    ----------
    index
        An index sink with ``search(query)``.
    resolver
        The source Orthanc (``OrthancSource``): resolves Orthanc IDs and UIDs at any level.
    query
        The query in the index's language.
    batch_size
        Instance-level matches are grouped into batches of this size (series and
        study matches come as one batch per series).
    memory_limit
        Keys kept in memory by each :class:`SeenSet` before spilling to disk.
    lookahead
        Identifiers resolved in parallel on the source (1: one at a time).

    Raises
    ------
    ConfigError
        From :meth:`batches` (on the first result), when the index refuses the
        query (its message is kept), or when a row names no instance.
    """

    def __init__(
        self,
        index: Searchable,
        resolver: Resolver,
        query: str,
        *,
        batch_size: int = 100,
        memory_limit: int = 200_000,
        lookahead: int = 8,
    ) -> None:
        if not query.strip():
            raise ConfigError("--query: empty query")
        self.index = index
        self.resolver = resolver
        self.query = query
        self.batch_size = batch_size
        self.memory_limit = memory_limit
        self.lookahead = lookahead
        self.stats = QueryStats()

    def rows(self) -> Iterator[dict[str, Any]]:
        """The index's result rows.  The one place where a refused query becomes a ConfigError."""
        try:
            yield from self.index.search(self.query)
        except ConfigError as exc:
            raise ConfigError(f"index {self.index.name} refused the query: {exc}") from None

    def identifiers(self) -> Iterator[str]:
        """Distinct identifiers named by the result rows, in result order."""
        seen = SeenSet(self.memory_limit)
        try:
            for row in self.rows():
                self.stats.rows += 1
                idents = identifiers_of(row)
                if not idents:
                    fields = ", ".join(sorted(str(k) for k in row)[:10]) or "none"
                    raise ConfigError(
                        f"--query: result rows must name instances by ID, SOPInstanceUID, SeriesInstanceUID "
                        f"or StudyInstanceUID (or orthanc_id, sop_uid, series_uid, study_uid); got fields: {fields}"
                    )
                for ident in idents:
                    if seen.add(ident):
                        self.stats.identifiers += 1
                        yield ident
                    else:
                        self.stats.duplicates += 1
        finally:
            seen.close()

    def _resolved(self) -> Iterator[list[list[InstanceRef]]]:
        """Each distinct identifier's batches, in result order, resolved ``lookahead`` at a time in parallel.

        Resolution costs one or two requests per identifier on the source; doing a few at
        once keeps the pipeline fed.  At most ``lookahead`` resolutions are in flight.
        """
        if self.lookahead <= 1:
            for ident in self.identifiers():
                yield list(self.resolver.selected([ident]))
            return
        window: deque[Future[list[list[InstanceRef]]]] = deque()
        with ThreadPoolExecutor(self.lookahead, thread_name_prefix="copydicom-resolve") as pool:
            try:
                for ident in self.identifiers():
                    window.append(pool.submit(lambda i: list(self.resolver.selected([i])), ident))
                    if len(window) >= self.lookahead:
                        yield window.popleft().result()
                while window:
                    yield window.popleft().result()
            finally:
                for future in window:
                    future.cancel()

    def batches(self) -> Iterator[list[InstanceRef]]:
        """Every matching instance once, in batches (constant memory but for the seen sets)."""
        seen = SeenSet(self.memory_limit)
        pending: list[InstanceRef] = []
        try:
            for resolved in self._resolved():
                if not resolved:
                    self.stats.unresolved += 1
                for batch in resolved:
                    fresh = [ref for ref in batch if seen.add(ref.source_id)]
                    self.stats.instances += len(fresh)
                    if len(batch) == 1:
                        pending.extend(fresh)
                        if len(pending) >= self.batch_size:
                            yield pending
                            pending = []
                    elif fresh:
                        yield fresh
            if pending:
                yield pending
        finally:
            seen.close()
