"""A route's ``reconcile: {cron, on_start}`` schedule in cluster mode: run by the planner that leads the route.

The single-process daemon runs a due reconcile inside the route's poll job, before the feed is
read (:mod:`copydicom.reconcile._daemon`). The planner does the same inside its lead loop, so
only the planner holding the route's lease (the elected one, same fencing generation) runs it;
a standby never reaches that loop.

- ``on_start: 24h``: due once each time this planner *takes* the lease (its start-up, or a
  takeover after the previous leader died: in both cases changes may have left the source's
  log while nobody led the route), covering studies dated within the window.
- ``cron: "0 3 * * *"``: a full reconcile is due at each fire time after the lead began; a fire
  time that passes while no planner leads is not caught up (as in the daemon, where a fire time
  passed while it was down is not run either).

Repairs run in the planner process, through reconcile's own repair (the route's pipeline:
fetch, stages, validity check, store, ledger, audit, like ``copydicom reconcile``), and the run
is recorded in ``reconcile_runs`` for ``status``. Why not publish the differences as batches for
workers: a worker skips what the ledger says was delivered (reconcile first forgets deliveries the
destination lost, but a *mismatched* instance must be replaced, which needs ``force``), deletions
are propagated by the comparison itself, and the planner would have to wait for those batches
before recording the run. A reconcile finds a few differences in the normal case, so the
planner's own pipeline is enough; a large repair is better served by ``copydicom reconcile`` run
by hand, or by ``quarantine retry``.

Reconcile's writes (deliveries, the run record) are not fenced by the lease: the run starts only
while the lease holds, and a planner that loses the lease mid-run at worst stores an instance the
destination already has (the destinations dedupe, the ledger records it once).
"""

from __future__ import annotations

from typing import Any

from copydicom.cluster import cron
from copydicom.config import Route
from copydicom.reconcile._daemon import FULL
from copydicom.reconcile._feed import since_hours


class Schedule:
    """When the leading planner reconciles one route (see the module docstring)."""

    def __init__(self, route: Route) -> None:
        options = route.reconcile
        self.on_start = options.on_start if options is not None else None
        self.trigger: Any = None
        if options is not None and options.cron:
            from apscheduler.triggers.cron import CronTrigger

            self.trigger = CronTrigger.from_crontab(options.cron)
        self._generation: int | None = None
        self._due: str | None = None
        self._next: float | None = None

    @property
    def active(self) -> bool:
        return self.on_start is not None or self.trigger is not None

    def lead(self, generation: int | None, now: float) -> None:
        """This planner holds the lease (generation ``generation``): a new lead makes ``on_start`` due."""
        if generation == self._generation:
            return
        self._generation = generation
        if self.on_start:
            self._due = since_hours(self.on_start / 3600.0)
        if self.trigger is not None:
            self._next = cron.next_after(self.trigger, now)

    def take(self, now: float) -> str | None:
        """The reconcile due now (``"full"`` or a ``YYYYMMDD``), or None; a taken one is no longer due."""
        if self._next is not None and now >= self._next:
            self._due = FULL  # a full run covers a pending on_start one
            self._next = cron.next_after(self.trigger, now)
        due, self._due = self._due, None
        return due

    def again(self, due: str) -> None:
        """A run that could not complete (the source or a destination unreachable) is due again."""
        if self._due is None or due == FULL:
            self._due = due
