"""Prometheus metrics of a planner (``metrics:`` configured), beside the workers' own.

Served by the planner on ``metrics.listen``'s port (workers serve on that port plus
their index, ``COPYDICOM_WORKER_INDEX`` >= 1), with ``/healthz``, in the process's
own registry. Labels carry route names only (no PHI).

``copydicom_planner_batches_published_total{route}``, ``copydicom_planner_instances_published_total{route}``
    Work units (and the instances in them) published, republished ones included.
``copydicom_planner_queue_depth``
    Ready messages in the work queue at the planner's last look (every publish and back-pressure wait).
``copydicom_planner_backpressure_waits_total``, ``copydicom_planner_backpressure_seconds_total``
    Times the planner stopped publishing because the queue held more than ``queue_bound``, and how long.
``copydicom_planner_leading{route}``, ``copydicom_planner_generation{route}``
    1 while this planner holds the route's lease (0: standby), and its fencing generation.
``copydicom_planner_checkpoint{route}``
    The change-feed checkpoint (low-watermark) this planner last wrote.
``copydicom_planner_dead_letters_total{action}``
    Dead-lettered batches drained: ``split`` (into single instances), ``quarantined``, ``republished``
    (given back by a worker's configuration error).
``copydicom_planner_cron_runs_total{route}``
    Cron runs completed (every batch of the run finished).
``copydicom_planner_reconcile_runs_total{route}``
    Scheduled reconciles (``reconcile: {cron, on_start}``) this planner ran as the route's leader (the
    standard ``copydicom_reconcile_*`` gauges beside it show what the last one found).

A worker adds, to its standard metrics (:class:`WorkerMetrics`):

``copydicom_worker_staged_delete_failures_total{route}``
    Staged listener copies a worker could not delete from the staging Orthanc after their batch was done
    (left staged: never a loss, but the staging store grows; delete them by hand or look at the staging
    Orthanc's health).
"""

from __future__ import annotations

from typing import Any


class PlannerMetrics:
    """The planner's counters and gauges; every method is a no-op without a registry."""

    def __init__(self, registry: Any = None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        import prometheus_client as prom

        r = registry
        self._batches = prom.Counter("copydicom_planner_batches_published", "Work units published",
                                     ["route"], registry=r)
        self._instances = prom.Counter("copydicom_planner_instances_published",
                                       "Instances in the work units published", ["route"], registry=r)
        self._depth = prom.Gauge("copydicom_planner_queue_depth", "Ready messages in the work queue (last look)",
                                 registry=r)
        self._waits = prom.Counter("copydicom_planner_backpressure_waits",
                                   "Times publishing stopped for a full queue", registry=r)
        self._waited = prom.Counter("copydicom_planner_backpressure_seconds",
                                    "Seconds spent waiting for room in the queue", registry=r)
        self._leading = prom.Gauge("copydicom_planner_leading", "1 while this planner leads the route",
                                   ["route"], registry=r)
        self._generation = prom.Gauge("copydicom_planner_generation", "Fencing generation held for the route",
                                      ["route"], registry=r)
        self._checkpoint = prom.Gauge("copydicom_planner_checkpoint", "Checkpoint last written for the route",
                                      ["route"], registry=r)
        self._dead = prom.Counter("copydicom_planner_dead_letters", "Dead-lettered batches drained",
                                  ["action"], registry=r)
        self._cron = prom.Counter("copydicom_planner_cron_runs", "Cron runs completed", ["route"], registry=r)
        self._reconciled = prom.Counter("copydicom_planner_reconcile_runs", "Scheduled reconciles run as leader",
                                        ["route"], registry=r)

    def published(self, route: str, batches: int, instances: int) -> None:
        if self.enabled:
            self._batches.labels(route).inc(batches)
            self._instances.labels(route).inc(instances)

    def depth(self, n: int) -> None:
        if self.enabled:
            self._depth.set(n)

    def waited(self, seconds: float) -> None:
        if self.enabled:
            self._waits.inc()
            self._waited.inc(max(0.0, seconds))

    def lead(self, route: str, generation: int | None) -> None:
        if self.enabled:
            self._leading.labels(route).set(0 if generation is None else 1)
            if generation is not None:
                self._generation.labels(route).set(generation)

    def checkpoint(self, route: str, seq: int) -> None:
        if self.enabled:
            self._checkpoint.labels(route).set(seq)

    def dead_letter(self, action: str) -> None:
        if self.enabled:
            self._dead.labels(action).inc()

    def cron_done(self, route: str) -> None:
        if self.enabled:
            self._cron.labels(route).inc()

    def reconciled(self, route: str) -> None:
        if self.enabled:
            self._reconciled.labels(route).inc()


class WorkerMetrics:
    """The cluster-only counters of a worker (beside its standard metrics); no-ops without a registry."""

    def __init__(self, registry: Any = None) -> None:
        self.enabled = registry is not None
        if registry is None:
            return
        import prometheus_client as prom

        self._unstage_failed = prom.Counter(
            "copydicom_worker_staged_delete_failures",
            "Staged listener copies not deleted from the staging store after delivery", ["route"], registry=registry)

    def unstage_failed(self, route: str, n: int = 1) -> None:
        if self.enabled:
            self._unstage_failed.labels(route).inc(n)
