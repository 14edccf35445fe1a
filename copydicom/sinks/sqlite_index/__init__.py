"""Embedded SQLite tag and dose index: the default when no index server is configured."""

from copydicom.sinks.sqlite_index._config import SqliteIndexConfig
from copydicom.sinks.sqlite_index._index import SqliteIndex, readonly_query

__all__ = ["SqliteIndex", "SqliteIndexConfig", "readonly_query"]
