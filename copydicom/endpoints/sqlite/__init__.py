"""Embedded SQLite tag and dose index (default index; SQL SELECT queries): an index (documents of tags and dose) and the query side of conditional replication.

The sink module loads inside the factory; the config module is light.
"""

from __future__ import annotations

from copydicom.model import IndexSink
from copydicom.registry import BuildContext, EndpointType
from copydicom.sinks.sqlite_index._config import SqliteIndexConfig


def _index(config: SqliteIndexConfig, ctx: BuildContext) -> IndexSink:
    from copydicom.sinks.sqlite_index._index import SqliteIndex

    return SqliteIndex(config)


ENDPOINT: EndpointType[SqliteIndexConfig] = EndpointType(
    name="sqlite",
    description="Embedded SQLite tag and dose index (default index; SQL SELECT queries)",
    schemes=("sqlite",),
    config=SqliteIndexConfig,
    index=_index,
    extra=None,
    requires=(),
)
