"""Wire metrics and health into a daemon: build them from the config, subscribe to routes."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any

from copydicom import registry
from copydicom.config import AppConfig
from copydicom.observability._config import MetricsConfig
from copydicom.observability._health import HealthChecker, Probe, RouteView, ledger_probe
from copydicom.observability._metrics import Metrics
from copydicom.observability._server import ObservabilityServer


def _source_probes(config: AppConfig) -> dict[str, Probe]:
    """One quick reachability probe per route source whose endpoint type has one (registry ``probe``)."""
    probes: dict[str, Probe] = {}
    for route in config.routes:
        check = registry.get(config.endpoint_types[route.source]).probe
        if check is not None and route.source not in probes:
            probes[route.source] = functools.partial(check, config.endpoints[route.source])
    return probes


class Observability:
    """The metrics, the health checker and their HTTP server for one daemon."""

    def __init__(self, config: AppConfig, routes: Callable[[], Iterable[RouteView]]) -> None:
        parsed = config.metrics_config
        self.config = parsed if isinstance(parsed, MetricsConfig) else MetricsConfig.from_mapping(config.metrics)
        self.metrics = Metrics()
        sources = _source_probes(config)
        self.health = HealthChecker(self.config, sources=sources, ledger=ledger_probe(config.store_location), routes=routes)
        self.server: ObservabilityServer | None = None

    def watch_destinations(self, destinations: Iterable[Any]) -> None:
        """Subscribe to the flush results of the index destinations among ``destinations``."""
        for dest in destinations:
            spooled = getattr(dest, "spooled", None)
            if spooled is not None and hasattr(spooled, "on_flush"):
                spooled.on_flush = self.metrics.observe_flush

    def start(self) -> None:
        """Bind the port and serve (raises OSError if the port is taken)."""
        self.server = ObservabilityServer(self.metrics, self.health, self.config.host, self.config.port)
        self.server.start()

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            self.server = None
