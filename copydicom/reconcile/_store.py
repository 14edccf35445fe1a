"""What reconcile reads and writes in the state database (one small place for its SQL).

Tables
------
``reconcile_runs(route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run)``
    The last reconcile of each route, for ``status`` (one row per route, replaced).
    Created here with ``CREATE TABLE IF NOT EXISTS``; the state store's migrations
    should take it over as a numbered step.

Reads of ``delivered`` (which destination holds what, per route) and the two
repairs of the ledger reconcile needs (forget a delivery the destination no
longer holds; re-base a checkpoint after a feed reset, which
:meth:`~copydicom.ledger.Ledger.advance_checkpoint` refuses since it never moves
backwards) go through the ledger's shared connection and lock.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from copydicom.errors import LedgerError
from copydicom.ledger import Ledger

_RUNS = """
CREATE TABLE IF NOT EXISTS reconcile_runs (
    route TEXT PRIMARY KEY, at REAL NOT NULL, seconds REAL NOT NULL, missing INTEGER NOT NULL,
    repaired INTEGER NOT NULL, extra INTEGER NOT NULL, deleted INTEGER NOT NULL, mismatched INTEGER NOT NULL,
    dry_run INTEGER NOT NULL)
"""


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


def _execute(ledger: Ledger, sql: str, params: Any = (), *, many: bool = False) -> list[Any]:
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


def rebase_checkpoint(ledger: Ledger, route: str, seq: int) -> None:
    """Set a route's checkpoint to ``seq``, also backwards (after a feed reset was repaired)."""
    ledger.flush()
    _execute(
        ledger,
        "INSERT INTO checkpoints VALUES (?,?,?) ON CONFLICT(route) DO UPDATE SET seq = excluded.seq, "
        "updated = excluded.updated",
        (route, seq, time.time()),
    )


def record_run(ledger: Ledger, run: RunRecord) -> None:
    """Remember the last reconcile of a route (for ``status``)."""
    _execute(ledger, _RUNS)
    _execute(
        ledger,
        "INSERT OR REPLACE INTO reconcile_runs VALUES (?,?,?,?,?,?,?,?,?)",
        (run.route, run.at, run.seconds, run.missing, run.repaired, run.extra, run.deleted, run.mismatched,
         int(run.dry_run)),
    )


def last_runs(ledger: Ledger) -> dict[str, RunRecord]:
    """``{route: last reconcile}`` (empty when no reconcile ever ran)."""
    _execute(ledger, _RUNS)
    rows = _execute(ledger, "SELECT route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run "
                            "FROM reconcile_runs")
    return {r[0]: RunRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], bool(r[8])) for r in rows}
