"""Prometheus metrics of a running daemon, in a private registry.

``prometheus_client`` is imported when a :class:`Metrics` is created, so
copydicom runs without it when no ``metrics:`` section is configured.
Each :class:`Metrics` has its own ``CollectorRegistry`` (several daemons in one
test process do not collide).

Metric names
------------
``copydicom_instances_total{route,destination,outcome}``
    Instances per destination: ``stored`` (replicated), ``existing`` (skipped,
    already there), ``quarantined``, ``failed``.
``copydicom_route_instances_total{route,outcome}``
    Instances per route, one per source instance (its overall outcome).
``copydicom_index_documents_total{sink,result}``
    Documents delivered (``delivered``) or refused (``rejected``) by each index sink,
    from the spool's flush results.
``copydicom_index_spool_pending{sink}``
    Documents waiting in the durable spool after the last flush.
``copydicom_backlog_changes{route}``
    Source ``Last`` minus the route's checkpoint, at each poll.
``copydicom_transfer_seconds{route}``
    Histogram of the time per instance sent to at least one destination (fetch, stages, stores).
``copydicom_stage_seconds{route,stage}``
    Histogram of the time per stage (``deid`` is the de-identification time).
``copydicom_feed_reset{route}``
    1 while the route's source change feed no longer matches its checkpoint (source database
    rebuilt or reset: nothing is sent from the feed until the route is repaired), else 0.
``copydicom_last_success_timestamp_seconds{route}``
    Unix time of the route's last successful poll.
"""

from __future__ import annotations

from typing import Any

from copydicom.observability._config import require_prometheus

_TRANSFER_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The daemon's metrics; feed it outcomes, flush results and backlogs.

    Raises
    ------
    ConfigError
        prometheus-client is not installed.
    """

    def __init__(self) -> None:
        require_prometheus()
        import prometheus_client as prom

        self._prom = prom
        self._children: dict[tuple[int, tuple[str, ...]], Any] = {}
        self.registry = prom.CollectorRegistry(auto_describe=True)
        r = self.registry
        self.instances = prom.Counter(
            "copydicom_instances", "Instances per route, destination and outcome",
            ["route", "destination", "outcome"], registry=r,
        )
        self.route_instances = prom.Counter(
            "copydicom_route_instances", "Instances per route and overall outcome", ["route", "outcome"], registry=r
        )
        self.documents = prom.Counter(
            "copydicom_index_documents", "Index documents per sink: delivered or rejected", ["sink", "result"],
            registry=r,
        )
        self.spool_pending = prom.Gauge(
            "copydicom_index_spool_pending", "Documents waiting in the spool of an index sink", ["sink"], registry=r
        )
        self.backlog = prom.Gauge(
            "copydicom_backlog_changes", "Source changes Last minus the route checkpoint", ["route"], registry=r
        )
        self.transfer = prom.Histogram(
            "copydicom_transfer_seconds", "Time per instance: fetch, stages and stores", ["route"],
            buckets=_TRANSFER_BUCKETS, registry=r,
        )
        self.stage = prom.Histogram(
            "copydicom_stage_seconds", "Time per stage (deid = de-identification)", ["route", "stage"],
            buckets=_STAGE_BUCKETS, registry=r,
        )
        self.changed = prom.Counter(
            "copydicom_changed_instances", "Instances whose content changed at the source after delivery "
            "(same instance, new bytes), per route and what was done (kept: report, replaced: resend)",
            ["route", "action"], registry=r,
        )
        # Reconcile (copydicom.reconcile): what the route's last reconcile found, and feed resets.
        self.reconcile_missing = prom.Gauge(
            "copydicom_reconcile_missing", "Instances missing at a destination (last reconcile)", ["route"], registry=r)
        self.reconcile_extra = prom.Gauge(
            "copydicom_reconcile_extra", "Instances this route delivered that the source no longer holds "
            "(last reconcile)", ["route"], registry=r)
        self.reconcile_mismatched = prom.Gauge(
            "copydicom_reconcile_mismatched", "Instances whose content differs (last reconcile with verify)",
            ["route"], registry=r)
        self.reconcile_seconds = prom.Gauge(
            "copydicom_reconcile_seconds", "Duration of the last reconcile", ["route"], registry=r)
        self.feed_resets = prom.Counter(
            "copydicom_feed_resets", "Times the source's change feed went backwards (repaired by a reconcile)",
            ["route"], registry=r)
        self.feed_reset = prom.Gauge(
            "copydicom_feed_reset", "1 while the source change feed no longer matches the checkpoint", ["route"],
            registry=r,
        )
        self.last_success = prom.Gauge(
            "copydicom_last_success_timestamp_seconds", "Unix time of the last successful poll", ["route"],
            registry=r,
        )

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(*labels)``, cached (the label lookup is most of the cost of an update)."""
        key = (id(metric), labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_outcome(self, route: str, outcome: Any) -> None:
        """Count one :class:`~copydicom.pipeline.Outcome` (duck-typed: plain values only)."""
        self._child(self.route_instances, route, outcome.kind).inc()
        for destination, kind in outcome.destinations:
            self._child(self.instances, route, destination, kind).inc()
        if outcome.seconds > 0 and any(kind == "stored" for _, kind in outcome.destinations):
            self._child(self.transfer, route).observe(outcome.seconds)
        for stage, seconds in outcome.stage_seconds:
            self._child(self.stage, route, stage).observe(seconds)
        if getattr(outcome, "changed", False):
            self._child(self.changed, route, "kept" if outcome.kind == "existing" else "replaced").inc()

    def observe_flush(self, sink: str, result: Any) -> None:
        """Count one :class:`~copydicom.sinks.spool.FlushResult` of an index sink."""
        if result.delivered:
            self.documents.labels(sink, "delivered").inc(result.delivered)
        if result.rejected:
            self.documents.labels(sink, "rejected").inc(result.rejected)
        self.spool_pending.labels(sink).set(result.pending)

    def set_backlog(self, route: str, changes: int) -> None:
        self.backlog.labels(route).set(max(0, changes))

    def observe_reconcile(self, route: str, report: Any) -> None:
        """Set the reconcile gauges from a :class:`~copydicom.reconcile.Report` (duck-typed)."""
        self.reconcile_missing.labels(route).set(report.missing - report.repaired)
        self.reconcile_extra.labels(route).set(report.extra - report.deleted)
        self.reconcile_mismatched.labels(route).set(report.mismatched - report.replaced)
        self.reconcile_seconds.labels(route).set(report.seconds)
    def set_feed_reset(self, route: str, reset: bool) -> None:
        self.feed_reset.labels(route).set(1 if reset else 0)

    def set_last_success(self, route: str, when: float) -> None:
        self.last_success.labels(route).set(when)

    def render(self) -> tuple[bytes, str]:
        """The text exposition format and its content type."""
        return self._prom.generate_latest(self.registry), str(self._prom.CONTENT_TYPE_LATEST)

    def value(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        """A sample's current value (for tests and ``status``)."""
        result: float | None = self.registry.get_sample_value(name, labels or {})
        return result
