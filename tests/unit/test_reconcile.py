"""Unit tests of reconcile's parts that need no server (issue 12)."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from copydicom.config import parse_config
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.model import FeedPosition
from copydicom.reconcile import Options, Report, feed_reset_detected
from copydicom.reconcile import _store
from copydicom.reconcile._countmap import CountMap
from copydicom.reconcile._feed import since_hours


def test_count_map_spills_past_its_bound_and_keeps_counting() -> None:
    counts = CountMap(memory_limit=3)
    try:
        for i in range(10):
            counts.add(f"s{i % 5}", 1)
        assert counts.spilled
        assert [counts.get(f"s{i}") for i in range(5)] == [2, 2, 2, 2, 2]
        assert counts.get("nope") is None
        assert sorted(counts.keys()) == [f"s{i}" for i in range(5)]
        assert len(counts) == 5
    finally:
        counts.close()


def test_count_map_in_memory_below_the_bound() -> None:
    counts = CountMap(memory_limit=10)
    counts.add("a", 3)
    counts.add("a", 4)
    assert not counts.spilled and counts.get("a") == 7
    counts.close()


def _route_config(tmp_path: Path, **route: Any) -> Any:
    return parse_config({
        "state": str(tmp_path / "s.db"),
        "endpoints": {"src": {"type": "orthanc", "url": "http://127.0.0.1:8042"},
                      "dst": {"type": "orthanc", "url": "http://127.0.0.1:8043"}},
        "routes": [{"name": "r", "source": "src", "destinations": ["dst"], **route}],
    })


def test_route_keys_deletions_and_reconcile(tmp_path: Path) -> None:
    route = _route_config(tmp_path, deletions="propagate", reconcile={"cron": "0 3 * * *", "on_start": "24h"}).routes[0]
    assert route.deletions == "propagate"
    assert route.reconcile.cron == "0 3 * * *" and route.reconcile.on_start == 86400.0
    plain = _route_config(tmp_path).routes[0]
    assert plain.deletions == "ignore" and plain.reconcile is None


@pytest.mark.parametrize("route, message", [
    ({"deletions": "sometimes"}, "routes[0].deletions: one of ignore, report, propagate"),
    ({"reconcile": {"cron": "not a cron"}}, "routes[0].reconcile.cron"),
    ({"reconcile": {"on_start": "yesterday"}}, "routes[0].reconcile.on_start"),
    ({"reconcile": {"every": "1h"}}, "routes[0].reconcile: unknown key(s) every"),
    ({"reconcile": "daily"}, "routes[0].reconcile: a mapping"),
])
def test_route_keys_refused_with_the_key_path(tmp_path: Path, route: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(message)):
        _route_config(tmp_path, **route)


def test_report_line_and_what_remains() -> None:
    report = Report(missing=3, repaired=2, extra=4, deleted=1, mismatched=2, replaced=2)
    report.ended = report.started + 1.25
    assert report.line() == "missing=3 repaired=2 extra=4 deleted=1 mismatched=2 seconds=1.2"
    assert report.remaining(Options()) == 1  # extras are kept under ignore
    assert report.remaining(Options(deletions="report")) == 4
    assert Report().remaining(Options(deletions="propagate")) == 0


def test_since_hours_is_the_study_date_of_that_moment() -> None:
    now = datetime(2026, 3, 2, 1, 0, tzinfo=timezone.utc)
    assert since_hours(24, now=now) == "20260301"
    assert since_hours(0.5, now=now) == "20260302"


def test_store_attribution_forget_rebase_and_runs(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state.db")
    try:
        ledger.record_delivered("dst", "t1", "s1", "r", "stored")
        ledger.record_delivered("dst", "t2", "s2", "other", "stored")
        assert _store.routed_among(ledger, "dst", "r", ["t1", "t2", "t3"]) == {"t1"}
        _store.forget(ledger, "dst", ["t1"])
        assert ledger.delivered_among("dst", ["t1", "t2"]) == {"t2"}
        ledger.advance_checkpoint("r", 500)
        ledger.advance_checkpoint("r", 3)
        assert ledger.checkpoint("r") == 500  # the ordinary path never moves backwards
        ledger.store.rebase_checkpoint("r", FeedPosition(3))
        assert ledger.checkpoint("r") == 3
        assert _store.last_runs(ledger) == {}
        _store.record_run(ledger, _store.RunRecord("r", 1.0, 2.0, 3, 3, 1, 0, 0, False))
        assert _store.last_runs(ledger)["r"].missing == 3
    finally:
        ledger.close()


class _Feed:
    def __init__(self, last: int) -> None:
        self.last = last

    def last_change(self) -> int:
        return self.last

    def changes_page(self, since: int) -> Any:
        raise NotImplementedError

    def names_change(self, position: Any) -> bool | None:
        return None


def test_feed_reset_is_last_below_the_checkpoint(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ledger = Ledger(tmp_path / "state.db")
    try:
        assert not feed_reset_detected(_Feed(5), ledger, "r")  # no checkpoint yet
        ledger.advance_checkpoint("r", 40)
        assert not feed_reset_detected(_Feed(40), ledger, "r")
        assert not feed_reset_detected(_Feed(41), ledger, "r")
        assert feed_reset_detected(_Feed(3), ledger, "r")
        assert "below the checkpoint 40" in caplog.text
    finally:
        ledger.close()


def test_status_shows_the_last_reconcile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from copydicom.cli import main

    state = tmp_path / "state.db"
    ledger = Ledger(state)
    ledger.record_delivered("dst", "t1", "s1", "r", "stored")
    _store.record_run(ledger, _store.RunRecord("r", 1_700_000_000.0, 2.5, 3, 2, 1, 0, 0, False))
    ledger.close()
    assert main(["status", "--state", str(state)]) == 0
    out = capsys.readouterr().out
    assert "last reconcile: " in out and "missing=3 repaired=2 extra=1 deleted=0 mismatched=0 seconds=2.5" in out


def test_reconcile_key_needs_a_changes_route(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=re.escape("routes[0].reconcile: the daemon reconciles changes routes only")):
        _route_config(tmp_path, trigger="manual", reconcile={"cron": "0 3 * * *"})


def test_daemon_schedule_marks_the_start_up_pass_and_adds_the_cron_job(tmp_path: Path) -> None:
    from apscheduler.schedulers.background import BackgroundScheduler

    from copydicom.daemon import RouteState
    from copydicom.reconcile import _daemon

    route = _route_config(tmp_path, reconcile={"cron": "0 3 * * *", "on_start": "48h"}).routes[0]

    class _Daemon:
        scheduler = BackgroundScheduler()

    daemon = _Daemon()
    state = RouteState(route)
    _daemon.schedule(daemon, state)
    assert state.reconcile_due == since_hours(48)
    job = daemon.scheduler.get_job("r#reconcile")
    assert job is not None
    job.func()  # the cron job only marks a full reconcile due; the route's poll job runs it
    assert state.reconcile_due == _daemon.FULL
    plain = RouteState(_route_config(tmp_path).routes[0])
    _daemon.schedule(daemon, plain)
    assert plain.reconcile_due is None
