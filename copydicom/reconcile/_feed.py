"""Reconcile runs for the daemon: scheduled, at start-up, and the repair of a reset change feed.

Feed reset (the source's database rebuilt): its ``/changes`` starts again from 1, so the
saved checkpoint is above everything new and nothing would ever be sent. The repair is
a reconcile of the route (which sends what the destinations lack, found by comparison,
not by the feed), then the checkpoint is re-based to the feed's ``Last`` read *before* the
reconcile (changes after that point are read by the next poll as usual).

Detection here is the simple sign (``Last`` below the checkpoint). The state branch's
detection (the checkpoint's resource no longer named by its sequence number) should call
:func:`repair_feed_reset` the same way.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

from copydicom.ledger import Ledger
from copydicom.feedcheck import reset_reason
from copydicom.model import ChangeFeedSource, FeedPosition
from copydicom.reconcile import _store
from copydicom.reconcile._engine import Options, Reconciler, Report
from copydicom.routes import RouteRuntime

log = logging.getLogger(__name__)


def run_reconcile(
    runtime: RouteRuntime,
    ledger: Ledger,
    options: Options,
    *,
    out: Callable[[str], None] | None = None,
    metrics: Any | None = None,
) -> Report:
    """Run one reconcile of a route, record it for ``status`` and the metrics, and return it."""
    report = Reconciler(runtime, ledger, options, out=out).run()
    _store.record_run(ledger, _store.RunRecord(
        runtime.route.name, time.time(), report.seconds, report.missing, report.repaired, report.extra,
        report.deleted, report.mismatched, options.dry_run,
    ))
    if metrics is not None and hasattr(metrics, "observe_reconcile"):
        metrics.observe_reconcile(runtime.route.name, report)
    return report


def since_hours(hours: float, *, now: datetime | None = None) -> str:
    """The StudyDate (``YYYYMMDD``) of ``hours`` ago: a light reconcile covers studies dated from that day on."""
    moment = (now or datetime.now(timezone.utc)) - timedelta(hours=hours)
    return moment.strftime("%Y%m%d")


def feed_reset_detected(feed: ChangeFeedSource, ledger: Ledger, route: str) -> bool:
    """Whether the route's feed was reset: recorded by its runner, or seen now by the same two signs.

    The signs are :mod:`copydicom.feedcheck`'s: the source's ``Last`` below the checkpoint, or the
    checkpoint's sequence number naming another resource (a rebuilt source already past it).
    """
    if route in ledger.feed_resets():
        return True
    position = ledger.position(route)
    if position is None:
        return False
    last = feed.last_change()
    names = feed.names_change(position) if last >= position.seq else None
    reason = reset_reason(position, last, names)
    if reason is None:
        return False
    log.error("route %s: change feed reset: %s; reconciling the route", route, reason)
    return True


def _position_of(feed: ChangeFeedSource, last: int) -> FeedPosition:
    """The feed's newest change as a checkpoint (with its resource, for the next reset check)."""
    resource = None
    if last > 0:
        page = feed.changes_page(last - 1)
        resource = getattr(page, "resources", {}).get(last)
    return FeedPosition(last, resource)


def repair_feed_reset(
    runtime: RouteRuntime, ledger: Ledger, *, deletions: str = "ignore", metrics: Any | None = None
) -> Report:
    """Reconcile the route, then re-base its checkpoint to the feed's current ``Last``.

    Deletions are never propagated here: after a rebuild the source may simply not hold the old
    instances any more, and deleting the replica's copies would turn a source's data loss into the
    replica's; ``propagate`` is lowered to ``report``. The checkpoint moves only when the repair
    left nothing missing, so a failed repair is tried again at the next poll.
    """
    feed = runtime.source
    assert isinstance(feed, ChangeFeedSource)
    last = feed.last_change()
    policy = "report" if deletions == "propagate" else deletions
    options = Options(deletions=policy, on_changed=runtime.route.on_changed_instance)  # type: ignore[arg-type]
    report = run_reconcile(runtime, ledger, options, metrics=metrics)
    if report.missing == report.repaired and not report.failed:
        ledger.flush()
        ledger.store.rebase_checkpoint(runtime.route.name, _position_of(feed, last))  # also clears the reset
        log.warning("route %s: feed reset repaired (%s); checkpoint re-based to %d",
                    runtime.route.name, report.line(), last)
    else:
        log.error("route %s: feed reset repair incomplete (%s); checkpoint kept", runtime.route.name, report.line())
    return report
