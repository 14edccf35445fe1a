"""``copydicom listen``: the configuration's listener routes alone, each drained on its own thread.

The routes come from the one validated configuration and the one assembly path
(:func:`copydicom.routes.build_route`); ``copydicom run`` runs the same routes
through the daemon's scheduler instead.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from typing import Any

from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger

log = logging.getLogger(__name__)


class ListenLoop:
    """Listener routes, each polled on its own thread until :meth:`stop`.

    A poll that ends with a retryable failure backs off (1 s doubling to 60 s,
    interrupted at once by a stop); otherwise the loop waits for the next
    arrival (or one second).  A configuration or fatal error stops the loop
    and calls ``on_fatal``.
    """

    def __init__(self, config: AppConfig, routes: Sequence[Route], *, key_file: str | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        from copydicom.routes import build_route

        self.config = config
        self.stop_event = threading.Event()
        self.ledger = Ledger(config.store_location)
        self.on_fatal = on_fatal
        self.failures = 0
        self.runtimes: list[tuple[Route, Any]] = []
        try:
            for route in routes:
                runtime = build_route(route, config, self.ledger, key_file=key_file, background_index=True)
                self.runtimes.append((route, runtime))
        except BaseException:
            self.close()
            raise
        self.runners: list[Any] = []
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        """Bind every listener (a ConfigError if one cannot), then start draining."""
        for route, runtime in self.runtimes:
            self.runners.append(runtime.source.runner(route.name, runtime.pipeline, self.ledger))
        for (route, _), runner in zip(self.runtimes, self.runners):
            thread = threading.Thread(target=self._drive, args=(route.name, runner), name=f"listen-{route.name}",
                                      daemon=True)
            self.threads.append(thread)
            thread.start()

    def _drive(self, name: str, runner: Any) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                summary = runner.poll()
            except RetryableError as exc:
                log.warning("route %s: %s", name, exc)
                summary = None
            except (ConfigError, FatalError) as exc:  # nothing sensible to retry: stop the process
                log.error("route %s: %s: %s", name, type(exc).__name__, exc)
                self.failures += 1
                self.stop_event.set()
                if self.on_fatal is not None:
                    self.on_fatal(exc)
                return
            except Exception:
                log.exception("route %s: poll failed", name)
                self.failures += 1
                summary = None
            if summary is not None and sum(summary.counts.values()):
                log.info("route %s: %s", name, summary.line())
            if summary is None or summary.counts["failed"]:
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0
                runner.wait(1.0)

    def stop(self) -> None:
        """Stop accepting first (nothing new is acknowledged), then let in-flight deliveries finish."""
        for _, runtime in self.runtimes:
            runtime.source.close()
        self.stop_event.set()
        for _, runtime in self.runtimes:
            runtime.pipeline.stop()
        for runner in self.runners:
            runner.source.listener.wake()
        for thread in self.threads:
            thread.join(10)

    def close(self) -> None:
        for _, runtime in self.runtimes:
            runtime.close()
        self.ledger.close()
