"""The route keys of reconcile: ``deletions`` and ``reconcile: {cron, on_start}``.

``deletions: ignore|report|propagate`` (default ``ignore``: an archive keeps what it received).
``reconcile: {cron: "0 3 * * *", on_start: 24h, on_feed_reset: repair}``: the daemon reconciles the
route on that schedule, and at start-up reconciles the studies dated within ``on_start``. When the
source's change feed is reset (its database rebuilt), ``repair`` (the default, also without a
``reconcile:`` section) reconciles the route and re-bases its checkpoint; ``hold`` keeps the route
stopped and reported (``status``, metric, ``/healthz`` 503) until an operator runs ``copydicom
reconcile`` and ``copydicom checkpoint --rebase``.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from copydicom.errors import ConfigError

DELETION_POLICIES = ("ignore", "report", "propagate")


@dataclass(frozen=True)
class ReconcileSchedule:
    """When the daemon reconciles a route: ``cron`` (crontab text) and ``on_start`` (seconds back)."""

    cron: str | None = None
    on_start: float | None = None
    on_feed_reset: str = "repair"


def deletions_policy(value: Any, where: str) -> str:
    if value not in DELETION_POLICIES:
        raise ConfigError(f"{where}: one of {', '.join(DELETION_POLICIES)}")
    return str(value)


def reconcile_options(value: Any, where: str) -> ReconcileSchedule | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: a mapping with cron and/or on_start")
    unknown = sorted(set(value) - {"cron", "on_start", "on_feed_reset"})
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    cron = value.get("cron")
    if cron is not None:
        from apscheduler.triggers.cron import CronTrigger

        try:
            CronTrigger.from_crontab(str(cron))
        except ValueError as exc:
            raise ConfigError(f"{where}.cron: not a crontab schedule: {exc}") from None
    on_start = value.get("on_start")
    seconds: float | None = None
    if on_start is not None:
        from copydicom.cli._args import duration

        try:
            seconds = duration(str(on_start))
        except argparse.ArgumentTypeError as exc:
            raise ConfigError(f"{where}.on_start: {exc}") from None
    on_reset = value.get("on_feed_reset", "repair")
    if on_reset not in ("repair", "hold"):
        raise ConfigError(f"{where}.on_feed_reset: repair or hold")
    return ReconcileSchedule(str(cron) if cron is not None else None, seconds, str(on_reset))
