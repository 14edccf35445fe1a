"""What reconcile reads and writes in the state database (one small place for its SQL).

Tables
------
``reconcile_runs(route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run)``
    The last reconcile of each route, for ``status`` (one row per route, replaced); created by
    the state store's migration 4 (:mod:`copydicom.state._schema`).

Reads of ``delivered`` (which destination holds what, per route) and the two
repair of the ledger reconcile needs (forget a delivery the destination no
longer holds) go through the ledger's shared connection and lock; a checkpoint is
re-based after a feed reset by the store's own ``rebase_checkpoint``.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from copydicom.errors import ConfigError, LedgerError
from copydicom.ledger import Ledger

@dataclass(frozen=True)
class RunRecord:
    """The last reconcile of one route."""

    route: str
    at: float
    seconds: float
    missing: int
    repaired: int
    extra: int
    deleted: int
    mismatched: int
    dry_run: bool


def _sqlite(ledger: Ledger) -> bool:
    from copydicom.state import SqliteStore

    return isinstance(ledger.store, SqliteStore)


def _execute(ledger: Ledger, sql: str, params: Any = (), *, many: bool = False) -> list[Any]:
    if not _sqlite(ledger):
        raise ConfigError("reconcile runs on the SQLite state store; a PostgreSQL state (cluster mode) is not "
                          "supported yet: reconcile from a host with a SQLite state of the same route")
    lock = ledger._lock  # noqa: SLF001 - the ledger's one connection is shared under its lock
    with lock:
        try:
            cursor = ledger.connection.executemany(sql, params) if many else ledger.connection.execute(sql, params)
            return cursor.fetchall()
        except sqlite3.Error as exc:
            raise LedgerError(f"ledger reconcile query failed: {exc}") from None


def routed_among(ledger: Ledger, destination: str, route: str, target_ids: Iterable[str]) -> set[str]:
    """Which of ``target_ids`` the ledger says this ``route`` delivered to ``destination``.

    Propagated deletions are limited to these: nothing that did not come from the route's source.
    """
    ledger.flush()
    ids = list(target_ids)
    found: set[str] = set()
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        rows = _execute(
            ledger,
            f"SELECT target_id FROM delivered WHERE destination=? AND route=? AND target_id IN ({marks})",
            (destination, route, *chunk),
        )
        found.update(r[0] for r in rows)
    return found


def forget(ledger: Ledger, destination: str, target_ids: Iterable[str]) -> None:
    """Drop delivery rows of instances the destination no longer holds (deleted there)."""
    ledger.flush()
    rows = [(destination, t) for t in target_ids]
    if rows:
        _execute(ledger, "DELETE FROM delivered WHERE destination=? AND target_id=?", rows, many=True)


def record_run(ledger: Ledger, run: RunRecord) -> None:
    """Remember the last reconcile of a route (for ``status``)."""
    _execute(
        ledger,
        "INSERT OR REPLACE INTO reconcile_runs VALUES (?,?,?,?,?,?,?,?,?)",
        (run.route, run.at, run.seconds, run.missing, run.repaired, run.extra, run.deleted, run.mismatched,
         int(run.dry_run)),
    )


def last_runs(ledger: Ledger) -> dict[str, RunRecord]:
    if not _sqlite(ledger):
        return {}  # reconcile does not run on a PostgreSQL state (see _execute)
    return _last_runs(ledger)


def _last_runs(ledger: Ledger) -> dict[str, RunRecord]:
    """``{route: last reconcile}`` (empty when no reconcile ever ran)."""
    rows = _execute(ledger, "SELECT route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run "
                            "FROM reconcile_runs")
    return {r[0]: RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in rows}
