"""The cluster planner's cron schedule (:mod:`copydicom.cluster.cron`): fire times, coalesced misses, IDs."""

from __future__ import annotations

from datetime import datetime, timezone

from apscheduler.triggers.cron import CronTrigger

from copydicom.cluster import cron


def _t(text: str) -> float:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc).timestamp()


def _trigger(expression: str) -> CronTrigger:
    return CronTrigger.from_crontab(expression, timezone="UTC")


def test_next_after_is_strictly_after() -> None:
    trigger = _trigger("0 2 * * *")
    assert cron.next_after(trigger, _t("2026-01-01T01:00:00")) == _t("2026-01-01T02:00:00")
    assert cron.next_after(trigger, _t("2026-01-01T02:00:00")) == _t("2026-01-02T02:00:00")


def test_nothing_due_before_the_first_fire_time() -> None:
    fire, upcoming = cron.due(_trigger("0 2 * * *"), _t("2026-01-01T01:00:00"), _t("2026-01-01T01:59:59"))
    assert fire is None and upcoming == _t("2026-01-01T02:00:00")


def test_a_passed_fire_time_is_due() -> None:
    fire, upcoming = cron.due(_trigger("0 2 * * *"), _t("2026-01-01T01:00:00"), _t("2026-01-01T02:00:30"))
    assert fire == _t("2026-01-01T02:00:00") and upcoming == _t("2026-01-02T02:00:00")


def test_fire_times_missed_while_no_planner_led_are_coalesced_into_the_latest() -> None:
    """Three nights without a planner: one run (the latest missed fire time), not three and not none."""
    fire, _ = cron.due(_trigger("0 2 * * *"), _t("2026-01-01T02:00:00"), _t("2026-01-04T03:00:00"))
    assert fire == _t("2026-01-04T02:00:00")


def test_a_very_long_outage_of_a_per_minute_schedule_ends() -> None:
    fire, upcoming = cron.due(_trigger("* * * * *"), _t("2025-01-01T00:00:00"), _t("2026-01-01T00:00:30"))
    assert fire == _t("2026-01-01T00:00:00") and upcoming == _t("2026-01-01T00:01:00")


def test_batch_ids_are_deterministic_per_run_and_unit() -> None:
    fire = _t("2026-01-01T02:00:00")
    assert cron.batch_id(fire, 3) == cron.batch_id(fire, 3)
    assert cron.batch_id(fire, 3).startswith(cron.batch_prefix(fire))
    assert cron.batch_id(fire, 3) != cron.batch_id(fire, 4)
    assert not cron.batch_id(fire + 60, 3).startswith(cron.batch_prefix(fire))
