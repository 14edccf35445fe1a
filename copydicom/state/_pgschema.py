"""The PostgreSQL schema of the state store and its forward migrations.

The PostgreSQL store keeps its own migrations table, ``copydicom_schema``
(one row per applied version), separate from SQLite's ``meta.schema_version``:
the two backends evolve their DDL independently while implementing the same
:class:`~copydicom.state.Store` interface. :func:`migrate` runs at start-up
under a transaction-scoped advisory lock, so a planner and twenty workers that
start together migrate once. There is no downgrade: a database written by a
newer release is refused.

Version 1 holds every table of SQLite schema 3 (ledger, quarantine, audit,
feed resets, index spool, de-identification mapping) plus the cluster's own:
``cluster_batches`` (published work units, their references as JSON of Orthanc
IDs and sequence numbers, and their state: the planner's low-watermark is computed
over them), ``cluster_routes`` (how far each route's feed has been published) and
``cluster_workers`` (heartbeats, read by ``status``).

Version 2 adds the cluster's cron runs: ``cluster_cron_runs`` (one row per fire
time of a cron route planned by the elected planner: its state, how many work
units of the query's result it has recorded, and when it finished) and
``cluster_routes.schedule_from`` (where a cron route's schedule starts, so that a
fire time passed while no planner led is still run by the next one).
Version 3 adds ``reconcile_runs`` (SQLite's version 4), so reconcile runs on a PostgreSQL state.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from copydicom.state._errors import SchemaTooNew

V1 = """
CREATE TABLE IF NOT EXISTS checkpoints (
    route TEXT PRIMARY KEY, seq BIGINT NOT NULL, updated DOUBLE PRECISION NOT NULL, resource TEXT);
CREATE TABLE IF NOT EXISTS delivered (
    destination TEXT NOT NULL, target_id TEXT NOT NULL, source_id TEXT NOT NULL,
    route TEXT NOT NULL, outcome TEXT NOT NULL, at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL DEFAULT 'image', source_md5 TEXT,
    PRIMARY KEY (destination, target_id));
CREATE INDEX IF NOT EXISTS delivered_by_source ON delivered (route, source_id);
CREATE TABLE IF NOT EXISTS quarantine (
    route TEXT NOT NULL, source_id TEXT NOT NULL, code TEXT NOT NULL, reason TEXT NOT NULL,
    path TEXT, at DOUBLE PRECISION NOT NULL, files TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (route, source_id));
CREATE INDEX IF NOT EXISTS quarantine_by_age ON quarantine (at);
CREATE TABLE IF NOT EXISTS audit (
    target_id TEXT NOT NULL, route TEXT NOT NULL, stage TEXT NOT NULL, actions TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL, PRIMARY KEY (route, target_id, stage));
CREATE TABLE IF NOT EXISTS feed_resets (
    route TEXT PRIMARY KEY, detected DOUBLE PRECISION NOT NULL, checkpoint BIGINT NOT NULL, resource TEXT,
    source_last BIGINT, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS spool_pending (
    seq BIGSERIAL PRIMARY KEY, sink TEXT NOT NULL, doc_id TEXT NOT NULL, doc_hash TEXT NOT NULL,
    body TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0, last_error TEXT,
    queued_at DOUBLE PRECISION NOT NULL, UNIQUE (sink, doc_id));
CREATE INDEX IF NOT EXISTS spool_pending_order ON spool_pending (sink, seq);
CREATE TABLE IF NOT EXISTS spool_delivered (
    sink TEXT NOT NULL, doc_id TEXT NOT NULL, doc_hash TEXT NOT NULL, delivered_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (sink, doc_id));
CREATE TABLE IF NOT EXISTS spool_rejected (
    sink TEXT NOT NULL, doc_id TEXT NOT NULL, reason TEXT NOT NULL, body TEXT NOT NULL,
    rejected_at DOUBLE PRECISION NOT NULL, PRIMARY KEY (sink, doc_id));
CREATE INDEX IF NOT EXISTS spool_rejected_by_age ON spool_rejected (rejected_at);
CREATE TABLE IF NOT EXISTS deid_map (
    kind TEXT NOT NULL, id_old TEXT NOT NULL, id_new TEXT NOT NULL, PRIMARY KEY (kind, id_old));
CREATE TABLE IF NOT EXISTS cluster_batches (
    route TEXT NOT NULL, batch_id TEXT NOT NULL, seq_min BIGINT, seq_max BIGINT, refs TEXT NOT NULL,
    size INTEGER NOT NULL, state TEXT NOT NULL, published DOUBLE PRECISION NOT NULL,
    finished DOUBLE PRECISION, generation BIGINT NOT NULL, worker TEXT, reason TEXT,
    PRIMARY KEY (route, batch_id));
CREATE INDEX IF NOT EXISTS cluster_batches_open ON cluster_batches (route, state, seq_min);
CREATE TABLE IF NOT EXISTS cluster_routes (
    route TEXT PRIMARY KEY, published_upto BIGINT NOT NULL, updated DOUBLE PRECISION NOT NULL);
CREATE TABLE IF NOT EXISTS cluster_workers (
    worker TEXT PRIMARY KEY, host TEXT NOT NULL, pid INTEGER NOT NULL, started DOUBLE PRECISION NOT NULL,
    heartbeat DOUBLE PRECISION NOT NULL, batches INTEGER NOT NULL DEFAULT 0, instances BIGINT NOT NULL DEFAULT 0,
    current TEXT);
"""

def _v1(conn: Any) -> None:
    for statement in V1.split(";"):
        if statement.strip():
            conn.execute(statement)


V2 = """
CREATE TABLE IF NOT EXISTS cluster_cron_runs (
    route TEXT NOT NULL, fire DOUBLE PRECISION NOT NULL, state TEXT NOT NULL,
    planned INTEGER NOT NULL DEFAULT 0, instances BIGINT NOT NULL DEFAULT 0,
    started DOUBLE PRECISION NOT NULL, published DOUBLE PRECISION, finished DOUBLE PRECISION,
    generation BIGINT NOT NULL, reason TEXT, PRIMARY KEY (route, fire));
ALTER TABLE cluster_routes ADD COLUMN IF NOT EXISTS schedule_from DOUBLE PRECISION;
"""


def _v2(conn: Any) -> None:
    for statement in V2.split(";"):
        if statement.strip():
            conn.execute(statement)


def _v3(conn: Any) -> None:
    """``reconcile_runs``: the last reconcile of each route (``status``, the console), as SQLite's version 4."""
    conn.execute(
        "CREATE TABLE IF NOT EXISTS reconcile_runs (route TEXT PRIMARY KEY, at DOUBLE PRECISION NOT NULL, "
        "seconds DOUBLE PRECISION NOT NULL, missing BIGINT NOT NULL, repaired BIGINT NOT NULL, extra BIGINT NOT NULL, "
        "deleted BIGINT NOT NULL, mismatched BIGINT NOT NULL, dry_run BOOLEAN NOT NULL)"
    )


#: version -> migration from the previous version (all run inside one transaction).
MIGRATIONS: dict[int, Callable[[Any], None]] = {1: _v1, 2: _v2, 3: _v3}
LATEST = max(MIGRATIONS)
#: Advisory lock key serialising migrations (any constant distinct from route and slot keys).
_MIGRATION_LOCK = 0x636F7079  # "copy"


def current_version(conn: Any) -> int:
    row = conn.execute("SELECT to_regclass('copydicom_schema')").fetchone()
    if row is None or row[0] is None:
        return 0
    found = conn.execute("SELECT max(version) FROM copydicom_schema").fetchone()
    return int(found[0] or 0)


def migrate(conn: Any, where: str) -> int:
    """Bring the database to :data:`LATEST` (one transaction); returns the version found before."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS copydicom_schema (version INTEGER PRIMARY KEY, "
            "applied DOUBLE PRECISION NOT NULL DEFAULT extract(epoch FROM now()))"
        )
        found = current_version(conn)
        if found > LATEST:
            raise SchemaTooNew(
                f"state {where}: schema version {found} was written by a newer copydicom "
                f"(this one knows up to {LATEST}); upgrade copydicom, there is no downgrade"
            )
        for version in range(found + 1, LATEST + 1):
            MIGRATIONS[version](conn)
            conn.execute("INSERT INTO copydicom_schema (version) VALUES (%s)", (version,))
    return found
