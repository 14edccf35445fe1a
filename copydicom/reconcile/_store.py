"""What reconcile reads and writes in the state (through the :class:`~copydicom.state.Store` interface).

Tables
------
``reconcile_runs(route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run)``
    The last reconcile of each route, for ``status`` (one row per route, replaced); created by
    the SQLite store's migration 4 (:mod:`copydicom.state._schema`) and the PostgreSQL store's
    migration 2 (:mod:`copydicom.state._pgschema`).

Reads of ``delivered`` (which destination holds what, per route), the repair of the ledger
reconcile needs (forget a delivery the destination no longer holds) and the run records go
through the store's methods, so reconcile runs on either backend; a checkpoint is re-based
after a feed reset by the store's own ``rebase_checkpoint``. The ledger's pending writes are
flushed first, so what was just recorded is read back.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import astuple, dataclass

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


def routed_among(ledger: Ledger, destination: str, route: str, target_ids: Iterable[str]) -> set[str]:
    """Which of ``target_ids`` the ledger says this ``route`` delivered to ``destination``.

    Propagated deletions are limited to these: nothing that did not come from the route's source.
    """
    ledger.flush()
    return ledger.store.routed_among(destination, route, list(target_ids))


def forget(ledger: Ledger, destination: str, target_ids: Iterable[str]) -> None:
    """Drop delivery rows of instances the destination no longer holds (deleted there)."""
    ledger.flush()
    ledger.store.forget_deliveries(destination, list(target_ids))


def record_run(ledger: Ledger, run: RunRecord) -> None:
    """Remember the last reconcile of a route (for ``status``)."""
    ledger.store.reconcile_run_put(astuple(run))


def last_runs(ledger: Ledger) -> dict[str, RunRecord]:
    """``{route: last reconcile}`` (empty when no reconcile ever ran)."""
    return {row[0]: RunRecord(*row) for row in ledger.store.reconcile_runs()}
