"""``/healthz``: is the daemon doing its job?

Healthy when every check passes:

- every source Orthanc answers (``GET /system``, no retries, short timeouts);
- the ledger accepts a write (a one-row transaction on a separate connection:
  catches a read-only file system, a full disk, a locked database);
- every ``changes`` route made progress recently: its last successful poll (or,
  during a long catch-up, its last finished instance) is younger than
  ``3 x poll_seconds + stale_margin_seconds``;
- no route has been failing (backing off) for longer than ``max_backoff_minutes``;
- no route's source change feed was reset under its checkpoint (source database rebuilt).

The body is JSON (see :meth:`HealthChecker.check`); the HTTP status is 200 or 503.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Protocol

from copydicom.logsetup import mask_secrets
from copydicom.observability._config import MetricsConfig

Probe = Callable[[], object]


class RouteView(Protocol):
    """What health needs to know of a route (the daemon's ``RouteState`` provides it)."""

    @property
    def name(self) -> str: ...

    @property
    def poll_seconds(self) -> float | None: ...

    @property
    def started(self) -> float: ...

    @property
    def last_success(self) -> float | None: ...

    @property
    def last_progress(self) -> float | None: ...

    @property
    def failing_since(self) -> float | None: ...

    @property
    def last_error(self) -> str: ...


def ledger_probe(path: Path | str) -> Probe:
    """A probe that writes one row to the state in its own transaction (SQLite ``meta``; PostgreSQL:
    a write transaction on the shared store)."""

    def probe() -> None:
        from copydicom.state import is_postgres, open_store
        from copydicom.state._sqlite import probe_write

        if is_postgres(path):
            store = open_store(path)
            try:
                store.probe_write()
            finally:
                store.close()
            return
        probe_write(path)

    return probe


def _run(probe: Probe) -> dict[str, Any]:
    try:
        probe()
    except Exception as exc:  # noqa: BLE001 - any failure is the answer
        return {"ok": False, "error": mask_secrets(f"{type(exc).__name__}: {exc}")[:300]}
    return {"ok": True}


class HealthChecker:
    """Runs the checks on demand.

    Parameters
    ----------
    config
        Thresholds.
    sources
        Endpoint name -> probe raising on failure.
    ledger
        Probe raising when the ledger cannot be written.
    routes
        Called at each check for the current route states.
    clock
        Unix time (injectable for tests).
    """

    def __init__(
        self,
        config: MetricsConfig,
        *,
        sources: dict[str, Probe],
        ledger: Probe,
        routes: Callable[[], Iterable[RouteView]],
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config
        self.sources = sources
        self.ledger = ledger
        self.routes = routes
        self.clock = clock

    def route_check(self, route: RouteView, now: float) -> dict[str, Any]:
        """One route's health: age of its last success and how long it has been failing."""
        seen = [t for t in (route.last_success, route.last_progress) if t is not None]
        reference = max(seen) if seen else route.started
        age = max(0.0, now - reference)
        report: dict[str, Any] = {
            "ok": True,
            "last_success_age_seconds": None if route.last_success is None else round(now - route.last_success, 3),
            "progress_age_seconds": round(age, 3),
        }
        waiting = getattr(route, "waiting_for_window", None)
        if waiting is not None:  # outside its working hours (window:): idle on purpose, not stale
            report["waiting_for_window_seconds"] = round(waiting, 3)
        elif route.poll_seconds is not None:
            limit = 3 * route.poll_seconds + self.config.stale_margin_seconds
            report["stale_after_seconds"] = limit
            if age > limit:
                report["ok"] = False
                report["problem"] = f"no successful poll for {age:.0f} s (limit {limit:.0f} s)"
        reset = getattr(route, "feed_reset", None)
        if reset is not None:
            report["ok"] = False
            report["feed_reset"] = {"checkpoint": reset.checkpoint, "source_last": reset.source_last,
                                    "detected": reset.detected}
            report["problem"] = f"change feed reset: {reset.reason}"
        if route.failing_since is not None:
            failing = now - route.failing_since
            report["failing_for_seconds"] = round(failing, 3)
            report["last_error"] = mask_secrets(route.last_error)[:300]
            if failing > 60 * self.config.max_backoff_minutes and reset is None:
                report["ok"] = False
                report["problem"] = f"failing for {failing:.0f} s (limit {60 * self.config.max_backoff_minutes:.0f} s)"
        return report

    def check(self) -> tuple[bool, dict[str, Any]]:
        """``(healthy, body)``; body: ``status``, ``ledger``, ``sources``, ``routes`` (each with ``ok``)."""
        now = self.clock()
        ledger = _run(self.ledger)
        sources = {name: _run(probe) for name, probe in self.sources.items()}
        routes = {r.name: self.route_check(r, now) for r in self.routes()}
        healthy = ledger["ok"] and all(s["ok"] for s in sources.values()) and all(r["ok"] for r in routes.values())
        body = {"status": "ok" if healthy else "unhealthy", "ledger": ledger, "sources": sources, "routes": routes}
        return healthy, body
