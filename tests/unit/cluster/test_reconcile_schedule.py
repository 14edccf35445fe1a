"""The leading planner's reconcile schedule (:mod:`copydicom.cluster.reconciling`) and the worker's counter of
staged copies it could not delete (:class:`copydicom.cluster.metrics.WorkerMetrics`)."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

import prometheus_client as prom
import pytest

from copydicom.cluster.metrics import WorkerMetrics
from copydicom.cluster.reconciling import Schedule
from copydicom.cluster.worker import Worker
from copydicom.config import Route, Trigger
from copydicom.reconcile.config import ReconcileSchedule


def _route(**options: Any) -> Route:
    return Route(name="copy", source="src", destinations=("dst",), trigger=Trigger("changes", 1.0),
                 reconcile=ReconcileSchedule(**options))


def _at(text: str) -> float:
    return datetime.strptime(text, "%Y-%m-%d %H:%M").replace(tzinfo=timezone.utc).timestamp()


def test_on_start_is_due_once_per_lease_taken() -> None:
    schedule = Schedule(_route(on_start=24 * 3600.0))
    now = _at("2026-11-29 21:00")
    schedule.lead(1, now)
    due = schedule.take(now)
    assert due is not None and len(due) == 8 and due.isdigit()  # a YYYYMMDD: studies dated from that day
    assert schedule.take(now + 5) is None
    schedule.lead(1, now + 10)  # the same lead goes on (a retried loop): not due again
    assert schedule.take(now + 10) is None
    schedule.lead(2, now + 20)  # the lease was lost and taken again (a takeover)
    assert schedule.take(now + 20) == due


def test_cron_is_due_at_each_fire_time_after_the_lead_began() -> None:
    schedule = Schedule(_route(cron="0 3 * * *"))
    schedule.lead(1, _at("2026-11-29 02:00"))
    assert schedule.take(_at("2026-11-29 02:59")) is None
    assert schedule.take(_at("2026-11-29 03:00")) == "full"
    assert schedule.take(_at("2026-11-29 03:01")) is None
    assert schedule.take(_at("2026-11-30 03:00")) == "full"


def test_a_failed_run_is_due_again_and_a_route_without_schedule_is_inactive() -> None:
    schedule = Schedule(_route(cron="0 3 * * *"))
    schedule.lead(1, _at("2026-11-29 02:00"))
    due = schedule.take(_at("2026-11-29 03:00"))
    assert due == "full"
    schedule.again(due)
    assert schedule.take(_at("2026-11-29 03:00")) == "full"
    assert not Schedule(_route()).active


class _Staging:
    def __init__(self, refuse: set[str]) -> None:
        self.refuse = refuse
        self.deleted: list[str] = []

    def delete_instance(self, source_id: str) -> bool:
        if source_id in self.refuse:
            raise ConnectionError("staging Orthanc unreachable")
        self.deleted.append(source_id)
        return True


class _Source:
    def __init__(self, client: _Staging) -> None:
        self.client = client


@pytest.mark.parametrize("refused", [set(), {"b"}, {"a", "c"}])
def test_staged_copies_not_deleted_are_counted(refused: set[str]) -> None:
    registry = prom.CollectorRegistry()
    worker = Worker.__new__(Worker)  # only _unstage's attributes: no broker or database here
    worker.staged = {"rx-copy": "stage"}
    worker.cluster_metrics = WorkerMetrics(registry)
    client = _Staging(refused)
    worker._unstage("rx-copy", _Source(client), ["a", "b", "c"])
    assert client.deleted == [i for i in "abc" if i not in refused]
    value = registry.get_sample_value("copydicom_worker_staged_delete_failures_total", {"route": "rx-copy"})
    assert (value or 0.0) == len(refused)
