"""Prometheus metrics of the DIMSE listeners running in this process, read at scrape time.

A custom collector (prometheus-client's documented way to export values kept
elsewhere) rather than counters updated on every event: the listener keeps its
own :class:`~copydicom.endpoints.dimse.listener.ListenerStats`, and its spool
depth is a directory listing best done only when scraped.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

_COUNTERS = (
    ("associations", "Associations accepted"),
    ("rejected_associations", "Associations rejected (calling AE title not recognized, limit reached)"),
    ("refused_addresses", "Connections closed before any association (address not allowed)"),
    ("aborted_associations", "Associations aborted"),
    ("instances_received", "Instances received and made durable (answered Success)"),
    ("store_failures", "C-STORE requests answered with a failure (full disk, unreadable dataset)"),
)


class ListenerCollector:
    """Yields ``copydicom_dimse_*`` families for every listener in :data:`listener.RUNNING`."""

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        from copydicom.endpoints.dimse.listener import RUNNING

        listeners = list(RUNNING.items())
        for name, help_text in _COUNTERS:
            family = CounterMetricFamily(f"copydicom_dimse_{name}", help_text, labels=["listener"])
            for label, listener in listeners:
                family.add_metric([label], float(listener.stats.as_dict()[name]))
            yield family
        depth = GaugeMetricFamily("copydicom_dimse_spool_depth", "Received instances not yet delivered",
                                  labels=["listener"])
        oldest = GaugeMetricFamily("copydicom_dimse_spool_oldest_seconds",
                                   "Age of the oldest undelivered received instance (0 when empty)", labels=["listener"])
        for label, listener in listeners:
            count, age = listener.spool.depth()
            depth.add_metric([label], float(count))
            oldest.add_metric([label], float(age or 0.0))
        yield depth
        yield oldest


_REGISTERED: set[int] = set()


def register(registry: Any) -> None:
    """Add the collector to a prometheus-client registry (once per registry)."""
    if id(registry) not in _REGISTERED:
        registry.register(ListenerCollector())
        _REGISTERED.add(id(registry))
