"""The operator's web console: overview, quarantine review, dose report, uploads; JSON twins under ``/api/``.

Served by the daemon when the configuration has a ``console:`` section (off by
default), or alone by ``copydicom console serve``.  See :mod:`copydicom.console.app`
for authentication and roles, :mod:`copydicom.console._upload` for what an
upload must pass.

Public API: :class:`ConsoleConfig`, :func:`create_app`, :class:`ConsoleServer`,
:class:`StateBackend`, :class:`JobManager`, :func:`add_user`.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from copydicom.console._backend import StateBackend
from copydicom.console._config import ConsoleConfig
from copydicom.console._jobs import JobManager
from copydicom.console._users import add_user

log = logging.getLogger(__name__)

__all__ = ["ConsoleConfig", "ConsoleServer", "JobManager", "StateBackend", "add_user", "create_app"]


def create_app(*args: Any, **kwargs: Any) -> Any:
    """See :func:`copydicom.console.app.create_app` (imported lazily: FastAPI loads only when used)."""
    from copydicom.console.app import create_app as _create

    return _create(*args, **kwargs)


class ConsoleServer:
    """Runs the console with uvicorn in a background thread (the daemon's own signal handling stays)."""

    def __init__(self, config: ConsoleConfig, app: Any) -> None:
        import uvicorn

        self.config = config
        self._server = uvicorn.Server(uvicorn.Config(
            app, host=config.host, port=config.port, log_config=None, access_log=False, lifespan="off",
            ssl_certfile=str(config.tls.cert) if config.tls else None,
            ssl_keyfile=str(config.tls.key) if config.tls else None,
            timeout_keep_alive=5, limit_concurrency=64,
        ))
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.run, name="copydicom-console", daemon=True)
        self._thread.start()
        # uvicorn reports a port it cannot bind by logging and ending its thread: without this wait
        # `console serve` (and the daemon) ran on without a console, saying it was listening.
        deadline = time.monotonic() + 30.0
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            self._thread.join(0.05)
        if not self._server.started and not self._thread.is_alive():
            from copydicom.errors import ConfigError

            raise ConfigError(f"console.listen: cannot listen on {self.config.listen} "
                              "(address in use, or not permitted)")
        log.info("console listening on %s://%s", "https" if self.config.tls else "http", self.config.listen)

    @property
    def started(self) -> bool:
        return bool(self._server.started)

    def stop(self, timeout: float = 5.0) -> None:
        self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
