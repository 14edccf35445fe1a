"""A small threaded HTTP server for ``/metrics`` and ``/healthz`` (loopback by default).

It runs in a daemon thread and :meth:`ObservabilityServer.stop` shuts it down
and closes the socket (called on daemon shutdown).
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from copydicom.observability._health import HealthChecker
from copydicom.observability._metrics import Metrics

log = logging.getLogger(__name__)


class ObservabilityServer:
    """Serve ``GET /metrics`` (Prometheus text format) and ``GET /healthz`` (JSON, 200 or 503)."""

    def __init__(self, metrics: Metrics, health: HealthChecker, host: str, port: int) -> None:
        self.metrics = metrics
        self.health = health
        outer = self

        class Handler(BaseHTTPRequestHandler):
            server_version = "copydicom"

            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                if path == "/metrics":
                    body, ctype = outer.metrics.render()
                    self._send(200, body, ctype)
                elif path == "/healthz":
                    try:
                        healthy, report = outer.health.check()
                    except Exception as exc:  # noqa: BLE001 - a broken check is an unhealthy answer
                        healthy, report = False, {"status": "unhealthy", "error": type(exc).__name__}
                    data = json.dumps(report, indent=1, sort_keys=True).encode()
                    self._send(200 if healthy else 503, data, "application/json")
                else:
                    self._send(404, b"not found: try /metrics or /healthz\n", "text/plain")

            def _send(self, status: int, body: bytes, ctype: str) -> None:
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http %s", format % args)

        self._httpd = ThreadingHTTPServer((host, port), Handler)
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._httpd.server_address[:2]
        return str(host), int(port)

    def start(self) -> None:
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="copydicom-http", daemon=True)
        self._thread.start()
        host, port = self.address
        log.info("metrics and health on http://%s:%d/metrics and /healthz", host, port)

    def stop(self) -> None:
        if self._thread is not None:
            self._httpd.shutdown()
            self._thread.join(timeout=10)
            self._thread = None
        self._httpd.server_close()
