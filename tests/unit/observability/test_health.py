"""Health states: healthy, stale poll, long backoff, ledger not writable, source down; the HTTP server."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from copydicom.errors import SourceUnavailable
from copydicom.ledger import Ledger
from copydicom.observability import HealthChecker, Metrics, MetricsConfig, ObservabilityServer, ledger_probe

NOW = 1_000_000.0


@dataclass
class View:
    name: str = "r"
    poll_seconds: float | None = 10.0
    started: float = NOW - 5
    last_success: float | None = None
    last_progress: float | None = None
    failing_since: float | None = None
    last_error: str = ""


def ok() -> None:
    pass


def down() -> None:
    raise SourceUnavailable("http://user:s3cret@127.0.0.1:1/system: connection refused")


def checker(routes: list[View], *, source: object = ok, ledger: object = ok) -> HealthChecker:
    config = MetricsConfig(stale_margin_seconds=30, max_backoff_minutes=2)
    return HealthChecker(config, sources={"src": source}, ledger=ledger,  # type: ignore[dict-item,arg-type]
                         routes=lambda: routes, clock=lambda: NOW)


def test_healthy_just_started_and_after_success() -> None:
    healthy, body = checker([View(), View(name="s", last_success=NOW - 59)]).check()
    assert healthy
    assert body["status"] == "ok"
    assert body["ledger"] == {"ok": True}
    assert body["sources"] == {"src": {"ok": True}}
    assert body["routes"]["r"] == {"ok": True, "last_success_age_seconds": None, "progress_age_seconds": 5.0,
                                   "stale_after_seconds": 60.0}
    assert body["routes"]["s"]["last_success_age_seconds"] == 59.0


def test_stale_poll_is_unhealthy_unless_instances_keep_finishing() -> None:
    healthy, body = checker([View(last_success=NOW - 61)]).check()
    assert not healthy
    assert body["status"] == "unhealthy"
    assert body["routes"]["r"]["ok"] is False
    assert body["routes"]["r"]["problem"] == "no successful poll for 61 s (limit 60 s)"
    # A long catch-up poll: no poll finished for a while, but instances finish.
    healthy, body = checker([View(last_success=NOW - 600, last_progress=NOW - 1)]).check()
    assert healthy
    assert body["routes"]["r"]["progress_age_seconds"] == 1.0


def test_never_polled_since_start_beyond_the_limit() -> None:
    healthy, body = checker([View(started=NOW - 100)]).check()
    assert not healthy
    assert body["routes"]["r"]["problem"] == "no successful poll for 100 s (limit 60 s)"


def test_cron_routes_are_not_stale_by_age() -> None:
    healthy, _ = checker([View(poll_seconds=None, started=NOW - 10_000)]).check()
    assert healthy


def test_backing_off_too_long_is_unhealthy_and_error_masked() -> None:
    short = View(last_progress=NOW - 1, failing_since=NOW - 119, last_error="http://u:pw@h: 503")
    healthy, body = checker([short]).check()
    assert healthy
    assert body["routes"]["r"]["failing_for_seconds"] == 119.0
    assert body["routes"]["r"]["last_error"] == "http://u:***@h: 503"
    healthy, body = checker([View(last_progress=NOW - 1, failing_since=NOW - 121)]).check()
    assert not healthy
    assert body["routes"]["r"]["problem"] == "failing for 121 s (limit 120 s)"


def test_source_down_is_unhealthy_with_masked_reason() -> None:
    healthy, body = checker([View()], source=down).check()
    assert not healthy
    assert body["sources"]["src"] == {
        "ok": False, "error": "SourceUnavailable: http://user:***@127.0.0.1:1/system: connection refused"}


def test_ledger_probe_writes_a_real_ledger(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.db")
    try:
        ledger_probe(tmp_path / "state.db")()
        row = ledger.connection.execute("SELECT value FROM meta WHERE key='health_probe'").fetchone()
        assert row is not None and float(row[0]) > 0
    finally:
        ledger.close()


def test_ledger_not_writable_is_unhealthy(tmp_path: Path) -> None:
    # A missing database (deleted, or its directory unmounted) cannot be opened for writing;
    # a ledger without its tables cannot take the probe's row.
    missing = ledger_probe(tmp_path / "gone" / "state.db")
    healthy, body = checker([View()], ledger=missing).check()
    assert not healthy
    assert body["ledger"]["ok"] is False
    assert body["ledger"]["error"].startswith("LedgerError: no state database at")
    import sqlite3

    sqlite3.connect(tmp_path / "empty.db").close()
    healthy, body = checker([View()], ledger=ledger_probe(tmp_path / "empty.db")).check()
    assert not healthy
    assert body["ledger"]["error"] == "OperationalError: no such table: meta"


def _get(url: str) -> tuple[int, bytes, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as reply:
            return reply.status, reply.read(), reply.headers["Content-Type"]
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read(), exc.headers["Content-Type"]


def test_server_serves_metrics_and_health_then_stops() -> None:
    metrics = Metrics()
    metrics.set_backlog("r", 7)
    routes = [View()]
    state = {"source": ok}
    health = HealthChecker(MetricsConfig(), sources={"src": lambda: state["source"]()}, ledger=ok,
                           routes=lambda: routes, clock=lambda: NOW)
    server = ObservabilityServer(metrics, health, "127.0.0.1", 0)
    server.start()
    host, port = server.address
    base = f"http://{host}:{port}"
    try:
        status, body, ctype = _get(base + "/metrics")
        assert status == 200 and ctype.startswith("text/plain")
        assert 'copydicom_backlog_changes{route="r"} 7.0' in body.decode().splitlines()
        status, body, ctype = _get(base + "/healthz")
        assert (status, ctype, json.loads(body)["status"]) == (200, "application/json", "ok")
        state["source"] = down
        status, body, _ = _get(base + "/healthz")
        assert (status, json.loads(body)["sources"]["src"]["ok"]) == (503, False)
        assert _get(base + "/other")[0] == 404
    finally:
        server.stop()
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(base + "/metrics", timeout=5)
