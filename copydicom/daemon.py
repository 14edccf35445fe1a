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
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from apscheduler.schedulers.background import BackgroundScheduler

from copydicom.app import RouteRuntime, build_route
from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger
from copydicom.pipeline import Outcome, Summary
from copydicom.runner import ChangesRunner
from copydicom.sources.orthanc import ChangesFeed

if TYPE_CHECKING:
    from copydicom.observability._wiring import Observability

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
    """What the daemon knows of a route between polls (for status and health).

    Times are Unix times: ``last_success`` of the last poll that ended without a
    failure, ``last_progress`` of the last instance finished without one,
    ``failing_since`` of the first failure of the current streak.
    """

    route: Route
    runtime: RouteRuntime | None = None
    runner: Any = None  # ChangesRunner, or a RouteDriver's runner (the QIDO poller)
    last_success: float | None = None
    last_error: str = ""
    failures: int = 0
    backoff_until: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    last_progress: float | None = None
    failing_since: float | None = None

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def poll_seconds(self) -> float | None:
        return self.route.trigger.poll_seconds if self.route.trigger.kind in ("changes", "qido") else None

    @property
    def waiting_for_window(self) -> float | None:
        """Seconds until the route's ``window:`` opens while it waits for it, else None."""
        return self.runtime.pipeline.waiting_until if self.runtime is not None else None

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
        self.observability: Observability | None = None
        if config.metrics:
            from copydicom.observability._wiring import Observability

            self.observability = Observability(config, lambda: list(self.routes.values()))

    # -- building -----------------------------------------------------------------------

    def _build(self) -> None:
        for route in self.config.routes:
            state = RouteState(route)
            on_outcome = self._outcome_hook(state)
            if route.trigger.kind == "changes":
                state.runtime = build_route(route, self.config, self.ledger, background_index=True, on_outcome=on_outcome)
                feed = ChangesFeed(state.runtime.source, wait_for=route.trigger.wait_for)  # type: ignore[arg-type]
                state.runner = ChangesRunner(
                    route.name, feed, state.runtime.pipeline, self.ledger, start_from=route.trigger.start_from
                )
                self.scheduler.add_job(
                    self._poll, "interval", args=[route.name], seconds=route.trigger.poll_seconds,
                    id=route.name, next_run_time=_now(),
                )
            elif route.trigger.kind == "qido":
                state.runtime = build_route(route, self.config, self.ledger, background_index=True, on_outcome=on_outcome)
                state.runner = state.runtime.source.runner(route.name, state.runtime.pipeline, self.ledger)
                self.scheduler.add_job(
                    self._poll, "interval", args=[route.name], seconds=route.trigger.poll_seconds,
                    id=route.name, next_run_time=_now(),
                )
            elif route.trigger.kind == "cron":
                from apscheduler.triggers.cron import CronTrigger

                state.runtime = build_route(route, self.config, self.ledger, background_index=True, on_outcome=on_outcome)
                self.scheduler.add_job(
                    self._conditional, CronTrigger.from_crontab(route.trigger.cron), args=[route.name], id=route.name
                )
            if self.observability is not None and state.runtime is not None:
                self.observability.watch_destinations(state.runtime.destinations)
            self.routes[route.name] = state

    def _outcome_hook(self, state: RouteState) -> Callable[[Outcome], None]:
        metrics = self.observability.metrics if self.observability is not None else None
        backlog_at = [0.0]

        def hook(outcome: Outcome) -> None:
            now = time.time()
            if outcome.kind != "failed":
                state.last_progress = now
            if metrics is not None:
                metrics.observe_outcome(state.route.name, outcome)
                if now - backlog_at[0] >= 1.0:  # a long catch-up poll: the backlog moves while it runs
                    backlog_at[0] = now
                    self._update_backlog(state)

        return hook

    def _update_backlog(self, state: RouteState) -> None:
        """Backlog = the source's ``Last`` seen at this poll minus the checkpoint."""
        if self.observability is None or getattr(state.runner, "last_seen", None) is None:
            return
        checkpoint = self.ledger.checkpoint(state.route.name)
        if checkpoint is not None:
            self.observability.metrics.set_backlog(state.route.name, state.runner.last_seen - checkpoint)

    # -- jobs ---------------------------------------------------------------------------

    def _poll(self, name: str) -> None:
        """A changes route's job: read the feed from the checkpoint to its end."""
        state = self.routes[name]
        if self.stopping.is_set() or time.monotonic() < state.backoff_until:
            return
        runner = state.runner
        assert runner is not None

        def work() -> Summary:
            try:
                return runner.poll()
            finally:
                self._update_backlog(state)

        summary = self._run(state, work, config_is_fatal=True)
        if summary is not None and summary.counts.total():
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
        self._run(state, lambda: run_conditional(state.route, self.config, state.runtime), config_is_fatal=False)

    def _run(self, state: RouteState, work: Callable[[], Summary], *, config_is_fatal: bool) -> Summary | None:
        """Run one job of a route and book its result: success, backoff, or a fatal stop.

        Returns the summary, or ``None`` when the job raised.
        """
        name = state.route.name
        try:
            summary = work()
        except RetryableError as exc:
            self._failed(state, str(exc))
            return None
        except ConfigError as exc:
            if config_is_fatal:
                self._fatal(exc)
            else:
                log.error("route %s: %s", name, exc)
                self._failed(state, str(exc))
            return None
        except FatalError as exc:
            self._fatal(exc)
            return None
        except Exception as exc:
            log.exception("route %s: unexpected error", name)
            self._failed(state, f"{type(exc).__name__}")
            return None
        for kind, n in summary.counts.items():
            state.totals[kind] = state.totals.get(kind, 0) + n
        if summary.counts["failed"]:
            self._failed(state, summary.first_retryable)
        else:
            self._succeeded(state)
        return summary

    def _succeeded(self, state: RouteState) -> None:
        state.failures = 0
        state.last_error = ""
        state.failing_since = None
        state.last_success = time.time()
        if self.observability is not None:
            self.observability.metrics.set_last_success(state.route.name, state.last_success)

    def _failed(self, state: RouteState, reason: str) -> None:
        if state.failing_since is None:
            state.failing_since = time.time()
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
            if self.observability is not None:  # bind first: a taken port fails before anything starts
                self.observability.start()
            self._build()
        except (ConfigError, FatalError):
            if self.observability is not None:
                self.observability.stop()
            self.ledger.close()
            raise
        except OSError as exc:  # the metrics port is taken or not allowed
            self.ledger.close()
            raise ConfigError(f"metrics.listen: cannot listen: {exc.strerror or exc}") from None
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
        if self.observability is not None:
            self.observability.stop()
        for state in self.routes.values():
            if state.runtime is not None:
                state.runtime.close()
        self.ledger.close()
        log.info("copydicom daemon stopped")
        return 1 if self.fatal is not None else 0


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
