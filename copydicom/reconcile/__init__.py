"""Convergence: compare a route's source with its destinations, repair, verify, follow deletions.

``copydicom reconcile`` (one-shot), the daemon's ``reconcile: {cron, on_start}`` route option
and the feed-reset repair all run :class:`Reconciler` (see :mod:`copydicom.reconcile._engine`).
"""

from copydicom.reconcile._engine import Options, Reconciler, Report
from copydicom.reconcile.config import DELETION_POLICIES
from copydicom.reconcile._feed import feed_reset_detected, repair_feed_reset, run_reconcile

__all__ = [
    "DELETION_POLICIES",
    "Options",
    "Reconciler",
    "Report",
    "feed_reset_detected",
    "repair_feed_reset",
    "run_reconcile",
]
