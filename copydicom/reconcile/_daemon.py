"""The daemon's side of reconcile: schedules, the start-up pass, and the feed-reset repair.

Every reconcile of a ``changes`` route runs inside that route's poll job, before the feed is
read (so it never runs alongside the route's own pipeline work):

- ``reconcile: {on_start: 24h}``: the first poll after start-up reconciles the studies whose
  StudyDate falls within the last 24 hours (day granularity: from that calendar day on, UTC).
  It catches instances of recent studies whose changes left the source's log while the daemon
  was down; it does not cover new instances added to an older study (use ``cron`` for those).
- ``reconcile: {cron: "0 3 * * *"}``: a full reconcile is due at each time of the schedule and
  runs at the next poll.
- A feed reset (:mod:`copydicom.feedcheck`'s two signs) is repaired by
  :func:`copydicom.reconcile.repair_feed_reset` before the poll, unless the route says
  ``reconcile: {on_feed_reset: hold}`` (then the runner holds the route and reports it).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from copydicom.model import ChangeFeedSource
from copydicom.reconcile._engine import Options
from copydicom.reconcile._feed import feed_reset_detected, repair_feed_reset, run_reconcile, since_hours

log = logging.getLogger(__name__)

FULL = "full"


def schedule(daemon: Any, state: Any) -> None:
    """Mark the start-up pass due and add the route's cron job (a ``changes`` route with ``reconcile:``)."""
    options = state.route.reconcile
    if options is None or state.route.trigger.kind != "changes":
        return
    if options.on_start:
        state.reconcile_due = since_hours(options.on_start / 3600.0)
    if options.cron:
        from apscheduler.triggers.cron import CronTrigger

        def due() -> None:
            state.reconcile_due = FULL

        daemon.scheduler.add_job(due, CronTrigger.from_crontab(options.cron), id=f"{state.route.name}#reconcile")


def before_poll(daemon: Any, state: Any) -> None:
    """In a route's poll job, before the feed is read: repair a reset feed, run a due reconcile."""
    runtime = state.runtime
    if runtime is None or not isinstance(runtime.source, ChangeFeedSource):
        return
    metrics = daemon.observability.metrics if daemon.observability is not None else None
    route = state.route
    hold = route.reconcile is not None and route.reconcile.on_feed_reset == "hold"
    if not hold and feed_reset_detected(runtime.source, daemon.ledger, route.name):
        if metrics is not None and hasattr(metrics, "feed_resets"):
            metrics.feed_resets.labels(route.name).inc()
        repair_feed_reset(runtime, daemon.ledger, deletions=route.deletions, metrics=metrics)
        return
    due = getattr(state, "reconcile_due", None)
    if due is None:
        return
    began = time.monotonic()
    options = Options(
        since=None if due == FULL else due, deletions=route.deletions, on_changed=route.on_changed_instance
    )
    report = run_reconcile(runtime, daemon.ledger, options, metrics=metrics)
    state.reconcile_due = None
    log.info("route %s: reconcile (%s): %s", route.name, "full" if due == FULL else "on start",
             report.line().replace(f"seconds={report.seconds:.1f}", f"seconds={time.monotonic() - began:.1f}"))
