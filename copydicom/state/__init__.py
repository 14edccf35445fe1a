"""copydicom's durable state: one store behind the ledger, the index spool and the mapping store.

- :class:`Store` (``_protocol``): the interface a backend implements (SQLite here; PostgreSQL in
  the scale-out issue).
- :class:`SqliteStore` and :func:`open_store` (``_sqlite``): one file, one connection policy
  (:func:`connect`), schema version and forward migrations (``_schema``) run at start-up.
- :class:`StoreView` (``_view``): the base of the ledger, spool and mapping views (open a store from a
  path and own it, or share a given one).
- :class:`PostgresStore` (``_postgres``, migrations in ``_pgschema``): the same interface in
  PostgreSQL (``state: postgresql://...``), for cluster mode; :func:`open_store` chooses by URL.
- :class:`RouteLock` (``_lock``): one process per route feed.
- ``_files``: owner-only files and PHI-free names (quarantine files are digests).
"""

from __future__ import annotations

from copydicom.model import FeedPosition
from copydicom.state._errors import FeedResetDetected, RouteLocked, SchemaTooNew
from copydicom.state._files import (
    display_source_id,
    mask_source_path,
    one_line,
    private_dir,
    private_file,
    quarantine_file_name,
    quarantine_folder_name,
    restrict_sqlite_companions,
    write_private_bytes,
)
from copydicom.state._lock import RouteLock
from copydicom.state._retention import DEFAULT_RETAIN, Retention, parse_retain, purge_expired
from copydicom.state._protocol import DeliveryCount, FeedReset, QuarantineEntry, Store
from copydicom.state._schema import LATEST as SCHEMA_VERSION
from copydicom.state._sqlite import SqliteStore, connect, open_store
from copydicom.state._view import StoreView
from copydicom.state._postgres import PostgresStore, PostgresTarget, is_postgres

__all__ = [
    "DEFAULT_RETAIN",
    "SCHEMA_VERSION",
    "Retention",
    "parse_retain",
    "purge_expired",
    "DeliveryCount",
    "FeedPosition",
    "FeedReset",
    "FeedResetDetected",
    "QuarantineEntry",
    "RouteLock",
    "RouteLocked",
    "SchemaTooNew",
    "SqliteStore",
    "PostgresStore",
    "PostgresTarget",
    "is_postgres",
    "Store",
    "StoreView",
    "connect",
    "display_source_id",
    "mask_source_path",
    "one_line",
    "open_store",
    "private_dir",
    "private_file",
    "quarantine_file_name",
    "quarantine_folder_name",
    "restrict_sqlite_companions",
    "write_private_bytes",
]
