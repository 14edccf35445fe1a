"""The daemon: one APScheduler job per route, graceful stop, backoff, readiness.

- A ``changes`` route polls its source every ``poll_seconds`` (no overlapping
  runs of one route: ``max_instances=1``, missed runs coalesce).
- A retryable failure backs the route off exponentially (5 s doubling to
  5 min) without moving its checkpoint; other routes carry on.
- A configuration or fatal error stops the daemon with status 1.
- SIGTERM/SIGINT: stop submitting, let in-flight instances finish, save the
  ledger, exit 0 (within 10 s with the default timeouts).
- systemd ``Type=notify``: ``READY=1`` once every route is built,
  ``WATCHDOG=1`` from a timer, ``STOPPING=1`` on the way out (plain datagrams
  to ``$NOTIFY_SOCKET``; no compiled dependency).
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from apscheduler.schedulers.background import BackgroundScheduler

from copydicom.app import RouteRuntime, build_route
from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger
from copydicom.runner import ChangesRunner
from copydicom.sources.orthanc import ChangesFeed

log = logging.getLogger(__name__)


def sd_notify(message: str) -> bool:
    """Send a notification to systemd if it is listening (``$NOTIFY_SOCKET``)."""
    address = os.environ.get("NOTIFY_SOCKET")
    if not address:
        return False
    if address.startswith("@"):
        address = "\0" + address[1:]
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
            sock.connect(address)
            sock.sendall(message.encode())
        return True
    except OSError:
        return False


@dataclass
class RouteState:
    """What the daemon knows of a route between polls (for status and health)."""

    route: Route
    runtime: RouteRuntime | None = None
    runner: ChangesRunner | None = None
    last_success: float | None = None
    last_error: str = ""
    failures: int = 0
    backoff_until: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)

    def backoff(self) -> float:
        return float(min(300, 5 * 2 ** min(self.failures - 1, 6)))


class Daemon:
    """Runs every configured route on its schedule until stopped."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.ledger = Ledger(config.state)
        self.stopping = threading.Event()
        self.fatal: BaseException | None = None
        self.routes: dict[str, RouteState] = {}
        self.scheduler = BackgroundScheduler(daemon=True, job_defaults={"max_instances": 1, "coalesce": True})

    # -- building -----------------------------------------------------------------------

    def _build(self) -> None:
        for route in self.config.routes:
            state = RouteState(route)
            if route.trigger.kind == "changes":
                state.runtime = build_route(route, self.config, self.ledger, background_index=True)
                feed = ChangesFeed(state.runtime.source, wait_for=route.trigger.wait_for)  # type: ignore[arg-type]
                state.runner = ChangesRunner(
                    route.name, feed, state.runtime.pipeline, self.ledger, start_from=route.trigger.start_from
                )
                self.scheduler.add_job(
                    self._poll, "interval", args=[route.name], seconds=route.trigger.poll_seconds,
                    id=route.name, next_run_time=_now(),
                )
            elif route.trigger.kind == "cron":
                from apscheduler.triggers.cron import CronTrigger

                state.runtime = build_route(route, self.config, self.ledger, background_index=True)
                self.scheduler.add_job(
                    self._conditional, CronTrigger.from_crontab(route.trigger.cron), args=[route.name], id=route.name
                )
            self.routes[route.name] = state

    # -- jobs ---------------------------------------------------------------------------

    def _poll(self, name: str) -> None:
        state = self.routes[name]
        if self.stopping.is_set() or time.monotonic() < state.backoff_until:
            return
        assert state.runner is not None
        try:
            summary = state.runner.poll()
        except RetryableError as exc:
            self._failed(state, str(exc))
            return
        except (ConfigError, FatalError) as exc:
            self._fatal(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the scheduler thread silently
            log.exception("route %s: unexpected error", name)
            self._failed(state, f"{type(exc).__name__}")
            return
        for kind, n in summary.counts.items():
            state.totals[kind] = state.totals.get(kind, 0) + n
        if summary.counts["failed"]:
            self._failed(state, summary.first_retryable)
            return
        state.failures = 0
        state.last_error = ""
        state.last_success = time.time()
        if sum(summary.counts.values()):
            log.info("route %s: %s", name, summary.line())

    def _conditional(self, name: str) -> None:
        """A cron route's job: run its query once and replicate the matches.

        An invalid query (or unreachable index credentials) is logged and the
        route marked failed until the next schedule; other routes carry on.
        """
        from copydicom.conditional import run_conditional

        state = self.routes[name]
        if self.stopping.is_set():
            return
        try:
            summary = run_conditional(state.route, self.config, state.runtime)
        except RetryableError as exc:
            self._failed(state, str(exc))
            return
        except ConfigError as exc:
            log.error("route %s: %s", name, exc)
            self._failed(state, str(exc))
            return
        except FatalError as exc:
            self._fatal(exc)
            return
        except Exception as exc:  # noqa: BLE001 - a bug must not kill the scheduler thread silently
            log.exception("route %s: unexpected error", name)
            self._failed(state, f"{type(exc).__name__}")
            return
        for kind, n in summary.counts.items():
            state.totals[kind] = state.totals.get(kind, 0) + n
        if summary.counts["failed"]:
            self._failed(state, summary.first_retryable)
            return
        state.failures = 0
        state.last_error = ""
        state.last_success = time.time()

    def _failed(self, state: RouteState, reason: str) -> None:
        state.failures += 1
        state.last_error = reason
        delay = state.backoff()
        state.backoff_until = time.monotonic() + delay
        log.warning("route %s: %s; checkpoint kept; retrying in %.0f s", state.route.name, reason, delay)

    def _fatal(self, exc: BaseException) -> None:
        log.error("stopping: %s: %s", type(exc).__name__, exc)
        self.fatal = exc
        self.stopping.set()

    # -- life cycle ---------------------------------------------------------------------

    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: finishing in-flight instances")
        self.stopping.set()
        for state in self.routes.values():
            if state.runtime is not None:
                state.runtime.pipeline.stop()

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal error; return the exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        try:
            self._build()
        except (ConfigError, FatalError):
            self.ledger.close()
            raise
        self.scheduler.start()
        sd_notify("READY=1")
        log.info("copydicom daemon started: %d route(s)", len(self.routes))
        watchdog = float(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
        while not self.stopping.wait(timeout=watchdog or 1.0):
            if watchdog:
                sd_notify("WATCHDOG=1")
        self.request_stop()
        sd_notify("STOPPING=1")
        self.scheduler.shutdown(wait=True)
        for state in self.routes.values():
            if state.runtime is not None:
                state.runtime.close()
        self.ledger.close()
        log.info("copydicom daemon stopped")
        return 1 if self.fatal is not None else 0


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
