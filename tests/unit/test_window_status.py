"""A route outside its ``window:`` says so: ``status`` (text and JSON), the daemon's route state, the console."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from copydicom.cli import main
from copydicom.config import parse_config
from copydicom.console._backend import _state_of
from copydicom.daemon import RouteState
from copydicom.ledger import Ledger
from copydicom.politeness import closed_for, waiting_text


def _hhmm(minutes_from_now: int) -> str:
    at = dt.datetime.now() + dt.timedelta(minutes=minutes_from_now)
    return at.strftime("%H:%M")


def closed_window() -> str:
    """A window that opens in about 2 h 30 (closed for the whole test)."""
    return f"{_hhmm(150)}-{_hhmm(210)}"


def open_window() -> str:
    return f"{_hhmm(-60)}-{_hhmm(60)}"


def _config(tmp_path: Path, window: str | None) -> dict[str, Any]:
    route: dict[str, Any] = {"name": "night", "source": "src", "destinations": ["dst"], "trigger": "manual"}
    if window:
        route["window"] = window
    return {
        "state": str(tmp_path / "state.db"),
        "endpoints": {"src": {"type": "orthanc", "url": "http://127.0.0.1:8042"},
                      "dst": {"type": "orthanc", "url": "http://127.0.0.1:8043"}},
        "routes": [route],
    }


def test_closed_for_and_the_text() -> None:
    at = dt.datetime(2026, 11, 29, 18, 0)
    assert closed_for("19:00-07:00", at) == 3600.0
    assert closed_for("19:00-07:00", at.replace(hour=23)) is None
    assert closed_for("19:00-07:00", at.replace(hour=6, minute=59)) is None
    assert closed_for("19:00-07:00", at.replace(hour=7)) == 12 * 3600.0
    assert closed_for(None, at) is None and closed_for("", at) is None
    assert waiting_text("19:00-07:00", 12 * 3600.0 + 59) == "waiting for window 19:00-07:00 (opens in 12h)"
    assert waiting_text("19:00-07:00", 299.0) == "waiting for window 19:00-07:00 (opens in 4m)"
    assert waiting_text("19:00-07:00", 42.4) == "waiting for window 19:00-07:00 (opens in 42s)"


def _status(tmp_path: Path, window: str | None, *extra: str) -> None:
    path = tmp_path / "copydicom.yaml"
    path.write_text(yaml.safe_dump(_config(tmp_path, window)))
    Ledger(tmp_path / "state.db").close()
    assert main(["status", "--config", str(path), *extra]) == 0


def test_status_says_a_route_waits_for_its_window(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    window = closed_window()
    _status(tmp_path, window)
    lines = capsys.readouterr().out.splitlines()
    assert lines[1] == "route night"
    assert f"  waiting for window {window} (opens in 2h)" in lines
    _status(tmp_path, window, "--json")
    (row,) = json.loads(capsys.readouterr().out)["routes"]
    assert row["waiting_for_window"]["window"] == window
    assert 2 * 3600 <= row["waiting_for_window"]["opens_in_seconds"] <= 150 * 60


@pytest.mark.parametrize("window", [None, "open"])
def test_status_is_silent_inside_the_window_or_without_one(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                           window: str | None) -> None:
    _status(tmp_path, open_window() if window else None)
    assert "waiting for window" not in capsys.readouterr().out
    _status(tmp_path, open_window() if window else None, "--json")
    (row,) = json.loads(capsys.readouterr().out)["routes"]
    assert "waiting_for_window" not in row


def test_route_state_and_console_say_waiting_outside_the_window(tmp_path: Path) -> None:
    closed = RouteState(parse_config(_config(tmp_path, closed_window())).routes[0])
    assert closed.waiting and closed.waiting_for_window is not None and closed.waiting_for_window > 2 * 3600
    closed.running = True  # a poll in progress is still waiting: no batch starts outside the window
    assert _state_of(closed) == "waiting"
    inside = RouteState(parse_config(_config(tmp_path, open_window())).routes[0])
    assert not inside.waiting and inside.waiting_for_window is None
    assert _state_of(inside) == "idle"
    assert _state_of(RouteState(parse_config(_config(tmp_path, None)).routes[0])) == "idle"
