"""The daemon: one APScheduler job per route, graceful stop, backoff, readiness.

- A ``changes`` route polls its source every ``poll_seconds`` (no overlapping
  runs of one route: ``max_instances=1``, missed runs coalesce).
- A retryable failure backs the route off (the one retry policy,
  :class:`copydicom.retry.Backoff`: full jitter from 2 s doubling, capped at
  :data:`ROUTE_BACKOFF_CAP` = 30 s so a route recovers within half a minute of
  its source or destination coming back) without moving its checkpoint; other
  routes carry on.
- A configuration or fatal error stops the daemon with status 1.
- SIGTERM/SIGINT: stop submitting, interrupt every backoff sleep at once
  (:func:`copydicom.retry.request_stop`: a ``Retry-After: 3600`` does not hold
  it), let in-flight instances finish, save the ledger, exit 0.  A server that
  accepted a request and never answers cannot hold the stop either: after
  :data:`STOP_BUDGET` seconds the daemon saves the ledger and exits without
  waiting for those threads (what they carried is not recorded as delivered and
  the checkpoint never passed it, exactly as after a crash).
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

from copydicom import politeness, retry
from copydicom.config import AppConfig, Route
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger
from copydicom.model import ChangeFeedSource, RouteDriver, SelectableSource
from copydicom.pipeline import Outcome, Summary
from copydicom.reconcile import _daemon as reconcile_hooks
from copydicom.routes import RouteRuntime, build_route
from copydicom.runner import ChangesRunner

if TYPE_CHECKING:
    from copydicom.observability._wiring import Observability

log = logging.getLogger(__name__)

#: The longest a failing route waits before its next try (hardening item 17: recovery after a long outage).
ROUTE_BACKOFF_CAP = 30.0
#: The first route backoff's upper bound; it doubles per consecutive failure (full jitter below it).
ROUTE_BACKOFF_BASE = 2.0
#: Seconds from SIGTERM to exit when a server never answers an in-flight request (systemd's default
#: TimeoutStopSec is 90 s; the project promises 10 s).
STOP_BUDGET = 6.0


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
    #: A ChangesRunner, or the runner of a source that drives its route (RouteDriver: the QIDO poller,
    #: a DIMSE listener's spool).
    runner: Any = None
    last_success: float | None = None
    last_error: str = ""
    failures: int = 0
    backoff_until: float = 0.0
    totals: dict[str, int] = field(default_factory=dict)
    started: float = field(default_factory=time.time)
    last_progress: float | None = None
    failing_since: float | None = None
    running: bool = False
    #: Held while a job of the route runs (a cron route's retry and its schedule never overlap).
    busy: threading.Lock = field(default_factory=threading.Lock)
    #: Whether the last failure may pass by itself (retried after :meth:`backoff`), or needs a fix.
    retryable: bool = True
    #: A reconcile to run before the next poll (``copydicom.reconcile._daemon``): "full" or a YYYYMMDD.
    reconcile_due: str | None = None

    @property
    def name(self) -> str:
        return self.route.name

    @property
    def feed_reset(self) -> Any:
        """The unrepaired feed reset holding this route (``/healthz`` answers 503 while it lasts)."""
        return getattr(self.runner, "feed_reset", None)

    @property
    def poll_seconds(self) -> float | None:
        return self.route.trigger.poll_seconds if self.route.trigger.kind in ("changes", "qido", "driven") else None

    @property
    def waiting_for_window(self) -> float | None:
        """Seconds until the route's ``window:`` opens while it waits for it, else None.

        The pipeline's own wait when a batch is held; otherwise the window itself (closed: no batch
        starts, the route is idle on purpose), so ``/healthz``, the console and ``status`` agree.
        """
        waiting = self.runtime.pipeline.waiting_until if self.runtime is not None else None
        return waiting if waiting is not None else politeness.closed_for(self.route.window)

    @property
    def waiting(self) -> bool:
        """Outside its ``window:`` (the console shows ``state: waiting``)."""
        return self.waiting_for_window is not None

    def backoff(self, policy: retry.Backoff | None = None) -> float:
        """Seconds before the next try after ``failures`` consecutive failures (capped at 30 s)."""
        policy = policy or retry.Backoff(retries=None, base=ROUTE_BACKOFF_BASE, cap=ROUTE_BACKOFF_CAP)
        return policy.delay(max(1, self.failures))


class Daemon:
    """Runs every configured route on its schedule until stopped."""

    def __init__(self, config: AppConfig) -> None:
        self.config = config
        self.ledger = Ledger(config.store_location)
        self.route_locks: list[Any] = []
        self.stopping = threading.Event()
        self._stop_requested_at: float | None = None
        #: The route backoff policy (tests inject a seeded or recording one).
        self.route_backoff = retry.Backoff(retries=None, base=ROUTE_BACKOFF_BASE, cap=ROUTE_BACKOFF_CAP)
        self.fatal: BaseException | None = None
        self.routes: dict[str, RouteState] = {}
        self.scheduler = BackgroundScheduler(daemon=True, job_defaults={"max_instances": 1, "coalesce": True})
        self.observability: Observability | None = None
        self.console: Any = None
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
                feed = state.runtime.source
                if not isinstance(feed, ChangeFeedSource):
                    raise ConfigError(f"route {route.name}: the source {route.source} has no change feed")
                state.runner = ChangesRunner(
                    route.name, feed, state.runtime.pipeline, self.ledger, start_from=route.trigger.start_from
                )
                self.scheduler.add_job(
                    self._poll, "interval", args=[route.name], seconds=route.trigger.poll_seconds,
                    id=route.name, next_run_time=_now(),
                )
                reconcile_hooks.schedule(self, state)
            elif route.trigger.kind in ("driven", "qido"):
                # The source drives the route (a DIMSE listener, a QIDO-RS poller): its runner starts
                # it, then is polled.
                state.runtime = build_route(route, self.config, self.ledger, background_index=True, on_outcome=on_outcome)
                driver = state.runtime.source
                if not isinstance(driver, RouteDriver):
                    why = "does not drive its route" if route.trigger.kind == "driven" else "cannot poll (no QIDO-RS runner)"
                    raise ConfigError(f"route {route.name}: the source {route.source} {why}")
                state.runner = driver.runner(route.name, state.runtime.pipeline, self.ledger)
                if self.observability is not None and route.source in self.config.endpoint_types and \
                        self.config.endpoint_types[route.source] == "dimse_listener":
                    from copydicom.endpoints.dimse import metrics as dimse_metrics

                    dimse_metrics.register(self.observability.metrics.registry)
                self.scheduler.add_job(
                    self._poll, "interval", args=[route.name], seconds=route.trigger.poll_seconds,
                    id=route.name, next_run_time=_now(),
                )
            elif route.trigger.kind == "cron":
                from apscheduler.triggers.cron import CronTrigger

                state.runtime = build_route(route, self.config, self.ledger, background_index=True, on_outcome=on_outcome)
                if not isinstance(state.runtime.source, SelectableSource):
                    raise ConfigError(
                        f"route {route.name}: the source {route.source} cannot select instances by identifier, "
                        "so a cron (index query) trigger cannot use it"
                    )
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
        """Backlog = the source's ``Last`` seen at this poll minus the checkpoint (none during a feed reset)."""
        if self.observability is None or state.runner is None:
            return
        self.observability.metrics.set_feed_reset(state.route.name, state.feed_reset is not None)
        if getattr(state.runner, "last_seen", None) is None or state.feed_reset is not None:
            return
        checkpoint = self.ledger.checkpoint(state.route.name)
        if checkpoint is not None:
            self.observability.metrics.set_backlog(state.route.name, state.runner.last_seen - checkpoint)

    # -- jobs ---------------------------------------------------------------------------

    def _poll(self, name: str) -> None:
        """A changes route's job: read the feed from the checkpoint to its end (a driven route's: its runner's poll)."""
        state = self.routes[name]
        if self.stopping.is_set() or time.monotonic() < state.backoff_until:
            return
        runner = state.runner
        assert runner is not None

        def work() -> Summary:
            try:
                reconcile_hooks.before_poll(self, state)  # feed-reset repair, due reconciles
                return runner.poll()
            finally:
                self._update_backlog(state)

        summary = self._run(state, work, config_is_fatal=True)
        if summary is not None and summary.counts.total():
            log.info("route %s: %s", name, summary.line())

    def _conditional(self, name: str) -> None:
        """A cron route's job: run its query once and replicate the matches.

        A retryable failure (a source, destination or index down) runs the job
        again after the route's backoff (5 s doubling to 5 min) through a one-off
        APScheduler job, until it succeeds; the cron schedule goes on as well.
        An invalid query (or refused index credentials) is logged and the route
        marked failed until the next schedule; other routes carry on.
        """
        from copydicom.conditional import run_conditional

        state = self.routes[name]
        if self.stopping.is_set() or not state.busy.acquire(blocking=False):
            return
        try:
            summary = self._run(
                state, lambda: run_conditional(state.route, self.config, state.runtime), config_is_fatal=False
            )
        finally:
            state.busy.release()
        if (summary is None or summary.counts["failed"]) and state.retryable and not self.stopping.is_set():
            self._retry_later(state)

    def _retry_later(self, state: RouteState) -> None:
        """Run a cron route's job again once its backoff has passed (a one-off ``date`` job).

        APScheduler's own one-off job, rather than a sleeping thread: the scheduler's shutdown
        drops it, and the retry shares the route's lock with the scheduled runs.
        """
        from datetime import timedelta

        delay = max(0.0, state.backoff_until - time.monotonic())
        self.scheduler.add_job(
            self._conditional, "date", run_date=_now() + timedelta(seconds=delay), args=[state.route.name],
            id=f"{state.route.name}#retry", replace_existing=True,
        )

    def _run(self, state: RouteState, work: Callable[[], Summary], *, config_is_fatal: bool) -> Summary | None:
        """Run one job of a route and book its result: success, backoff, or a fatal stop.

        Returns the summary, or ``None`` when the job raised.
        """
        name = state.route.name
        state.running = True
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
                self._failed(state, str(exc), retryable=False)
            return None
        except FatalError as exc:
            self._fatal(exc)
            return None
        except Exception as exc:
            log.exception("route %s: unexpected error", name)
            self._failed(state, f"{type(exc).__name__}")
            return None
        finally:
            state.running = False
        for kind, n in summary.counts.items():
            state.totals[kind] = state.totals.get(kind, 0) + n
        if summary.counts["failed"]:
            self._failed(state, summary.first_retryable)
        else:
            self._succeeded(state)
        return summary

    def _succeeded(self, state: RouteState) -> None:
        state.failures = 0
        state.retryable = True
        state.last_error = ""
        state.failing_since = None
        state.last_success = time.time()
        if self.observability is not None:
            self.observability.metrics.set_last_success(state.route.name, state.last_success)

    def _failed(self, state: RouteState, reason: str, *, retryable: bool = True) -> None:
        if state.failing_since is None:
            state.failing_since = time.time()
        state.failures += 1
        state.last_error = reason
        state.retryable = retryable
        delay = state.backoff(self.route_backoff)
        state.backoff_until = time.monotonic() + delay
        if retryable:
            log.warning("route %s: %s; checkpoint kept; retrying in %.0f s", state.route.name, reason, delay)
        else:
            log.warning("route %s: %s; not retried before the route's next scheduled run", state.route.name, reason)

    def _fatal(self, exc: BaseException) -> None:
        log.error("stopping: %s: %s", type(exc).__name__, exc)
        self.fatal = exc
        self.stopping.set()

    def _schedule_retention(self) -> None:
        """Purge expired quarantine entries and refused documents at start and every hour (PHI at rest)."""
        from copydicom.state import Retention, purge_expired

        retention = self.config.retention or Retention()

        def job() -> None:
            try:
                purge_expired(self.ledger.store, retention)
            except Exception as exc:  # never stop the daemon for housekeeping
                log.error("retention: purge failed: %s", type(exc).__name__)

        self.scheduler.add_job(job, "interval", hours=1, id="copydicom-retention", next_run_time=_now())

    # -- life cycle ---------------------------------------------------------------------

    def _start_console(self) -> None:
        """Serve the web console when ``console:`` is configured (off by default)."""
        if getattr(self.config, "console", None) is None:
            return
        from copydicom.console import ConsoleServer, JobManager, create_app
        from copydicom.console._wiring import make_backend, make_upload_runner

        app = create_app(
            self.config.console, make_backend(self.config, self.ledger, live=lambda: list(self.routes.values())),
            jobs=JobManager(make_upload_runner(self.config, self.ledger)), work_dir=self.config.state.parent,
        )
        self.console = ConsoleServer(self.config.console, app)
        self.console.start()

    def request_stop(self, *_: Any) -> None:
        if not self.stopping.is_set():
            log.info("stop requested: finishing in-flight instances")
        if self._stop_requested_at is None:
            self._stop_requested_at = time.monotonic()
        retry.request_stop()  # every backoff sleep of this process ends now
        self.stopping.set()
        for state in self.routes.values():
            if state.runtime is not None:
                state.runtime.pipeline.stop()

    def run_forever(self) -> int:
        """Run until SIGTERM/SIGINT or a fatal error; return the exit status."""
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)
        retry.clear_stop()
        try:
            # One process per route feed: a second daemon on this state is refused here (exit 2).
            self.route_locks = [self.ledger.store.lock_route(route.name) for route in self.config.routes]
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
        self._start_console()
        self._schedule_retention()
        self.scheduler.start()
        sd_notify("READY=1")
        log.info("copydicom daemon started: %d route(s)", len(self.routes))
        watchdog = float(os.environ.get("WATCHDOG_USEC", "0")) / 2e6
        while not self.stopping.wait(timeout=watchdog or 1.0):
            if watchdog:
                sd_notify("WATCHDOG=1")
        self.request_stop()
        sd_notify("STOPPING=1")
        # 2 for a configuration error (refused credentials...): systemd's RestartPreventExitStatus=2.
        status = 2 if isinstance(self.fatal, ConfigError) else (1 if self.fatal is not None else 0)
        if not self._within_budget(lambda: self.scheduler.shutdown(wait=True), "route jobs to finish"):
            return self._abandon(status)
        if self.observability is not None:
            self.observability.stop()
        if self.console is not None:
            self.console.stop()
        if not self._within_budget(self._close_routes, "routes to close"):
            return self._abandon(status)
        self.ledger.close()
        for lock in self.route_locks:
            lock.release()
        retry.clear_stop()
        log.info("copydicom daemon stopped")
        return status

    def _close_routes(self) -> None:
        for state in self.routes.values():
            if state.runtime is not None:
                state.runtime.close()

    def _within_budget(self, step: Callable[[], None], what: str) -> bool:
        """Run a shutdown step in a helper thread; ``False`` if it is still running when the budget is spent."""
        errors: list[BaseException] = []

        def run() -> None:
            try:
                step()
            except BaseException as exc:  # noqa: BLE001 - reported below, in the stopping thread
                errors.append(exc)

        helper = threading.Thread(target=run, name="copydicom-stop", daemon=True)
        helper.start()
        started = self._stop_requested_at if self._stop_requested_at is not None else time.monotonic()
        helper.join(max(0.5, STOP_BUDGET - (time.monotonic() - started)))
        if helper.is_alive():
            log.error("stop: still waiting for %s after %.0f s (a server accepted a request and does not "
                      "answer); exiting without them: nothing unfinished was recorded as delivered",
                      what, STOP_BUDGET)
            return False
        if errors:
            raise errors[0]
        return True

    def _abandon(self, status: int) -> int:
        """Save what is saved, then end the process without joining the threads stuck on a server."""
        if self.observability is not None:
            try:
                self.observability.stop()
            except Exception:  # noqa: BLE001 - best effort on the way out
                log.exception("stop: metrics server")
        try:
            self.ledger.close()
        except Exception:  # noqa: BLE001 - the ledger is crash-safe; a failed close loses nothing recorded
            log.exception("stop: ledger close")
        log.info("copydicom daemon stopped (in-flight requests abandoned)")
        logging.shutdown()
        os._exit(status)


def _now() -> Any:
    from datetime import datetime, timezone

    return datetime.now(timezone.utc)
