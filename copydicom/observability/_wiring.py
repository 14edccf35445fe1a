"""Wire metrics and health into a daemon: build them from the config, subscribe to routes."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from copydicom.config import AppConfig
from copydicom.observability._config import MetricsConfig
from copydicom.observability._health import HealthChecker, Probe, RouteView, ledger_probe
from copydicom.observability._metrics import Metrics
from copydicom.observability._server import ObservabilityServer


def _source_probe(endpoint: Any) -> Probe:
    """``GET /system`` on a source Orthanc once (a DICOMweb source: one QIDO-RS study), short timeouts, no retries."""
    from copydicom.clients.orthanc import OrthancClient

    if getattr(endpoint, "type", None) == "dicomweb":
        from copydicom.endpoints.dicomweb._client import DicomwebClient

        quick_dw = endpoint.model_copy(update={"retries": 0, "read_timeout": 5.0,
                                               "connect_timeout": min(endpoint.connect_timeout, 2.0)})

        def dw_probe() -> None:
            client = DicomwebClient(quick_dw, pool_size=1)
            try:
                client.ping()
            finally:
                client.close()

        return dw_probe

    quick = replace(endpoint, retries=0, connect_timeout=min(endpoint.connect_timeout, 2.0), read_timeout=5.0)

    def probe() -> None:
        client = OrthancClient(quick, pool_size=1)
        try:
            client.system()
        finally:
            client.close()

    return probe


class Observability:
    """The metrics, the health checker and their HTTP server for one daemon."""

    def __init__(self, config: AppConfig, routes: Callable[[], Iterable[RouteView]]) -> None:
        self.config = MetricsConfig.from_mapping(config.metrics, where="metrics")
        self.metrics = Metrics()
        sources = {r.source: _source_probe(config.endpoints[r.source]) for r in config.routes}
        self.health = HealthChecker(self.config, sources=sources, ledger=ledger_probe(config.state), routes=routes)
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
