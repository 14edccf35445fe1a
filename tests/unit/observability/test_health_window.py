"""A route waiting for its working window (``window:``) is idle on purpose: healthy, and says so."""

from __future__ import annotations

from dataclasses import dataclass

from tests.unit.observability.test_health import NOW, View, checker


@dataclass
class WaitingView(View):
    waiting_for_window: float | None = None


def test_waiting_for_window_is_not_stale() -> None:
    healthy, body = checker([WaitingView(last_success=NOW - 3600, waiting_for_window=1800.0)]).check()
    assert healthy
    assert body["routes"]["r"]["waiting_for_window_seconds"] == 1800.0
    # the same route once its window is open again and nothing moved: stale
    healthy, body = checker([WaitingView(last_success=NOW - 3600, waiting_for_window=None)]).check()
    assert not healthy
