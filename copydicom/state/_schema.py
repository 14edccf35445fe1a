"""The SQLite schema of the state database and its forward migrations.

``meta.schema_version`` says which migrations have run.  Version 1 is the
first release's layout (``ledger.py``, ``sinks/spool.py`` and
``stages/deid/_mapping.py`` each created their tables in the one file);
:func:`migrate` brings any older file to :data:`LATEST` at start-up, each step in
one transaction, so a crash half-way leaves the previous version intact.
There is no downgrade: a file from a newer release is refused.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable

from copydicom.state._errors import SchemaTooNew
from copydicom.state._files import one_line

#: The first release's tables (all ``IF NOT EXISTS``: a v1 file may hold only some of them).
V1 = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS checkpoints (
    route TEXT PRIMARY KEY, seq INTEGER NOT NULL, updated REAL NOT NULL);
CREATE TABLE IF NOT EXISTS delivered (
    destination TEXT NOT NULL, target_id TEXT NOT NULL, source_id TEXT NOT NULL,
    route TEXT NOT NULL, outcome TEXT NOT NULL, at REAL NOT NULL,
    PRIMARY KEY (destination, target_id)) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS delivered_by_source ON delivered (route, source_id);
CREATE TABLE IF NOT EXISTS quarantine (
    route TEXT NOT NULL, source_id TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL,
    path TEXT, at REAL NOT NULL, PRIMARY KEY (route, source_id)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS audit (
    target_id TEXT NOT NULL, route TEXT NOT NULL, stage TEXT NOT NULL, actions TEXT NOT NULL,
    at REAL NOT NULL, PRIMARY KEY (route, target_id, stage)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool_pending (
    seq      INTEGER PRIMARY KEY AUTOINCREMENT,
    sink     TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    body     TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    last_error TEXT,
    queued_at REAL NOT NULL,
    UNIQUE (sink, doc_id)
);
CREATE TABLE IF NOT EXISTS spool_delivered (
    sink     TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    doc_hash TEXT NOT NULL,
    delivered_at REAL NOT NULL,
    PRIMARY KEY (sink, doc_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS spool_rejected (
    sink     TEXT NOT NULL,
    doc_id   TEXT NOT NULL,
    reason   TEXT NOT NULL,
    body     TEXT NOT NULL,
    rejected_at REAL NOT NULL,
    PRIMARY KEY (sink, doc_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS spool_pending_order ON spool_pending(sink, seq);
CREATE TABLE IF NOT EXISTS deid_map (
    kind TEXT NOT NULL, id_old TEXT NOT NULL, id_new TEXT NOT NULL,
    PRIMARY KEY (kind, id_old)) WITHOUT ROWID;
"""


def _v2(conn: sqlite3.Connection) -> None:
    """Checkpoint identity, feed resets, quarantine file history, delivery kind.

    - ``checkpoints.resource``: the source's ID of the change at ``seq`` (feed-reset detection);
    - ``feed_resets``: a detected reset per route, until repaired (read by ``status``);
    - ``quarantine.files``: JSON list of every file the entry ever pointed to (``purge`` removes
      them all); reasons rewritten on one line;
    - ``delivered.kind``: ``image`` or ``index`` (``status`` shows them apart); rows of the first
      release are classified by the index sinks named in the spool tables.
    """
    conn.execute("ALTER TABLE checkpoints ADD COLUMN resource TEXT")
    conn.execute(
        "CREATE TABLE IF NOT EXISTS feed_resets (route TEXT PRIMARY KEY, detected REAL NOT NULL, "
        "checkpoint INTEGER NOT NULL, resource TEXT, source_last INTEGER, reason TEXT NOT NULL)"
    )
    conn.execute("ALTER TABLE quarantine ADD COLUMN files TEXT NOT NULL DEFAULT '[]'")
    rows = conn.execute("SELECT route, source_id, reason, path FROM quarantine").fetchall()
    for route, source_id, reason, path in rows:
        conn.execute(
            "UPDATE quarantine SET reason = ?, files = ? WHERE route = ? AND source_id = ?",
            (one_line(str(reason)), json.dumps([path] if path else []), route, source_id),
        )
    conn.execute("ALTER TABLE delivered ADD COLUMN kind TEXT NOT NULL DEFAULT 'image'")
    conn.execute(
        "UPDATE delivered SET kind = 'index' WHERE destination IN ("
        "SELECT sink FROM spool_delivered UNION SELECT sink FROM spool_pending UNION SELECT sink FROM spool_rejected)"
    )
    conn.execute("CREATE INDEX IF NOT EXISTS quarantine_by_age ON quarantine (at)")
    conn.execute("CREATE INDEX IF NOT EXISTS spool_rejected_by_age ON spool_rejected (rejected_at)")


def _v3(conn: sqlite3.Connection) -> None:
    """``delivered.source_md5``: the MD5 of the source bytes delivered (nullable).

    A source that announces a delivered instance again with other bytes (same SOP Instance
    UID, new content: Orthanc with ``OverwriteInstances``) is noticed by it
    (``on_changed_instance``); ``outcome`` is ``changed`` while a destination keeps an older version.
    """
    columns = {row[1] for row in conn.execute("PRAGMA table_info(delivered)")}
    if "source_md5" not in columns:  # a file written by a pre-release build that added it in place
        conn.execute("ALTER TABLE delivered ADD COLUMN source_md5 TEXT")


def _v4(conn: sqlite3.Connection) -> None:
    """``reconcile_runs``: the last reconcile of each route (``status``, the console's overview)."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reconcile_runs (route TEXT PRIMARY KEY, at REAL NOT NULL, seconds REAL NOT NULL, "
        "missing INTEGER NOT NULL, repaired INTEGER NOT NULL, extra INTEGER NOT NULL, deleted INTEGER NOT NULL, "
        "mismatched INTEGER NOT NULL, dry_run INTEGER NOT NULL)"
    )


#: version -> migration from the previous version (run inside one transaction).
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {2: _v2, 3: _v3, 4: _v4}
LATEST = max(MIGRATIONS)


def current_version(conn: sqlite3.Connection) -> int:
    """The file's schema version: 0 for an empty file."""
    has_meta = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name='meta'").fetchone()
    if not has_meta:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key='schema_version'").fetchone()
    return int(row[0]) if row else 0


def migrate(conn: sqlite3.Connection, where: str) -> int:
    """Bring the database to :data:`LATEST`; returns the version found before.

    Runs under ``BEGIN IMMEDIATE``: two processes starting together migrate once.

    Raises
    ------
    SchemaTooNew
        The file was written by a newer release.
    """
    if current_version(conn) == LATEST:  # the usual start: no write lock taken (read-only commands)
        return LATEST
    conn.execute("BEGIN IMMEDIATE")
    try:
        found = current_version(conn)
        if found > LATEST:
            raise SchemaTooNew(
                f"state {where}: schema version {found} was written by a newer copydicom "
                f"(this one knows up to {LATEST}); upgrade copydicom, there is no downgrade"
            )
        if found < LATEST:
            if found <= 1:
                for statement in V1.split(";"):
                    if statement.strip():
                        conn.execute(statement)
            for version in range(max(found, 1) + 1, LATEST + 1):
                MIGRATIONS[version](conn)
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('schema_version', ?)", (str(LATEST),))
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return found
