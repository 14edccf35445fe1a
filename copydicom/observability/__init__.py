"""Observability: Prometheus metrics, ``/healthz`` and the HTTP server that serves them.

Nothing here is imported by the pipeline: it emits plain
:class:`~copydicom.pipeline.Outcome` values and the daemon feeds them to
:class:`Metrics`.  ``prometheus_client`` is only needed when ``metrics:`` is configured.
"""

from copydicom.observability._config import MetricsConfig, require_prometheus
from copydicom.observability._health import HealthChecker, RouteView, ledger_probe
from copydicom.observability._metrics import Metrics
from copydicom.observability._server import ObservabilityServer

__all__ = ["HealthChecker", "Metrics", "MetricsConfig", "ObservabilityServer", "RouteView", "ledger_probe",
           "require_prometheus"]
