"""The one retry policy (copydicom.retry): jitter, caps, Retry-After in both forms, stop, injected sleeps.

No test here sleeps: every policy gets a recording ``sleep`` (the injected clock).
"""

from __future__ import annotations

import random
import threading
from email.utils import format_datetime
from datetime import datetime, timezone

import pytest

from copydicom import retry
from copydicom.daemon import ROUTE_BACKOFF_CAP, RouteState
from copydicom.errors import ConfigError, DestinationUnavailable, SourceUnavailable
from copydicom.retry import Backoff, parse_retry_after


class Recorder:
    """An injected sleep: records the delays, optionally requests a stop at the n-th sleep."""

    def __init__(self, stop_at: int | None = None) -> None:
        self.delays: list[float] = []
        self.stop_at = stop_at

    def __call__(self, seconds: float, stop: threading.Event) -> None:
        self.delays.append(seconds)
        if self.stop_at is not None and len(self.delays) >= self.stop_at:
            stop.set()


def policy(**kw: object) -> tuple[Backoff, Recorder]:
    sleep = Recorder(kw.pop("stop_at", None))  # type: ignore[arg-type]
    return Backoff(stop=threading.Event(), sleep=sleep, rng=random.Random(7), **kw), sleep  # type: ignore[arg-type]


def flaky(failures: list[BaseException], result: str = "ok") -> tuple[list[int], object]:
    calls: list[int] = []

    def attempt() -> str:
        calls.append(1)
        if failures:
            raise failures.pop(0)
        return result

    return calls, attempt


# -- Retry-After ---------------------------------------------------------------------------------

def test_retry_after_seconds_and_http_date_are_both_understood() -> None:
    now = 1_800_000_000.0
    in_12_s = format_datetime(datetime.fromtimestamp(now + 12, timezone.utc), usegmt=True)
    assert parse_retry_after("7", now=lambda: now) == 7.0
    assert parse_retry_after(in_12_s, now=lambda: now) == pytest.approx(12.0)
    # RFC 850 and asctime forms (RFC 9110 5.6.7 obsolete formats) are accepted too
    assert parse_retry_after("Friday, 15-Jan-27 08:00:12 GMT", now=lambda: datetime(
        2027, 1, 15, 8, 0, 0, tzinfo=timezone.utc).timestamp()) == pytest.approx(12.0)


def test_retry_after_is_capped_and_never_negative() -> None:
    now = 1_800_000_000.0
    in_an_hour = format_datetime(datetime.fromtimestamp(now + 3600, timezone.utc), usegmt=True)
    past = format_datetime(datetime.fromtimestamp(now - 60, timezone.utc), usegmt=True)
    assert parse_retry_after("3600") == retry.RETRY_AFTER_CAP == 30.0
    assert parse_retry_after(in_an_hour, now=lambda: now) == 30.0
    assert parse_retry_after(past, now=lambda: now) == 0.0
    assert parse_retry_after("3600", cap=None) == 3600.0


@pytest.mark.parametrize("value", [None, "", "  ", "soon", "nan", "Mon, 99 Foo 2026 99:99:99 GMT"])
def test_unreadable_retry_after_is_ignored(value: str | None) -> None:
    assert parse_retry_after(value) is None


# -- the backoff ---------------------------------------------------------------------------------

def test_full_jitter_within_the_exponential_bound_and_capped() -> None:
    backoff = Backoff(base=0.5, cap=20.0, rng=random.Random(1))
    for failures in range(1, 40):
        bound = min(20.0, 0.5 * 2 ** (failures - 1))
        draws = [backoff.delay(failures) for _ in range(50)]
        assert all(0.0 <= d <= bound for d in draws)
        assert len(set(draws)) > 1  # jittered, not a fixed ladder
    assert max(backoff.delay(10_000) for _ in range(200)) <= 20.0


def test_retry_after_replaces_the_draw_and_is_capped() -> None:
    backoff = Backoff(base=0.5, cap=2.0, retry_after_cap=30.0)
    assert backoff.delay(1, retry_after=12.0) == 12.0
    assert backoff.delay(1, retry_after=3600.0) == 30.0


def test_call_retries_retryable_errors_with_the_injected_sleep() -> None:
    backoff, sleep = policy(retries=3, base=1.0, cap=4.0)
    calls, attempt = flaky([SourceUnavailable("a"), SourceUnavailable("b", retry_after=9.0)])
    assert backoff.call(attempt) == "ok"  # type: ignore[arg-type]
    assert len(calls) == 3
    assert len(sleep.delays) == 2 and 0.0 <= sleep.delays[0] <= 1.0 and sleep.delays[1] == 9.0


def test_call_gives_up_with_the_last_error_and_does_not_retry_others() -> None:
    backoff, sleep = policy(retries=2)
    calls, attempt = flaky([DestinationUnavailable(f"down {i}") for i in range(5)])
    with pytest.raises(DestinationUnavailable, match="down 2"):
        backoff.call(attempt)  # type: ignore[arg-type]
    assert len(calls) == 3 and len(sleep.delays) == 2
    calls, attempt = flaky([ConfigError("bad password")])
    with pytest.raises(ConfigError):
        backoff.call(attempt)  # type: ignore[arg-type]
    assert len(calls) == 1


def test_a_stop_during_a_backoff_sleep_ends_the_call_at_once() -> None:
    backoff, sleep = policy(retries=None, stop_at=1)  # unlimited retries: only the stop ends it
    calls, attempt = flaky([SourceUnavailable("busy", retry_after=3600.0) for _ in range(100)])
    with pytest.raises(SourceUnavailable, match="busy"):
        backoff.call(attempt)  # type: ignore[arg-type]
    assert len(calls) == 1 and sleep.delays == [30.0]


def test_a_stop_requested_before_the_call_allows_one_attempt_and_no_sleep() -> None:
    backoff, sleep = policy(retries=5)
    backoff.stop.set()
    calls, attempt = flaky([SourceUnavailable("x")])
    with pytest.raises(SourceUnavailable):
        backoff.call(attempt)  # type: ignore[arg-type]
    assert len(calls) == 1 and sleep.delays == []


def test_the_default_sleep_waits_on_the_process_stop_signal() -> None:
    """The daemon's SIGTERM handler calls request_stop(): a pending wait returns at once."""
    backoff = Backoff(retries=1)
    assert backoff.stop is retry.STOP
    waiter_result: list[bool] = []
    started = threading.Event()

    def waiter() -> None:
        started.set()
        waiter_result.append(backoff.sleep_for(3600.0))

    thread = threading.Thread(target=waiter, daemon=True)
    try:
        thread.start()
        started.wait(5)
        retry.request_stop()
        thread.join(30)
        assert not thread.is_alive() and waiter_result == [True]
        assert retry.stop_requested()
    finally:
        retry.clear_stop()
    assert not retry.stop_requested()


def test_the_daemon_route_backoff_is_capped_at_30_s() -> None:
    """Hardening item 17: the route backoff reached 160-300 s after a long outage."""
    state = RouteState.__new__(RouteState)
    for failures in (1, 5, 7, 50, 1000):
        state.failures = failures
        assert all(0.0 <= state.backoff() <= ROUTE_BACKOFF_CAP == 30.0 for _ in range(200))


def test_time_scale_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COPYDICOM_TEST_TIME_SCALE", "0.1")
    assert retry._time_scale() == 0.1
    for bad in ("0", "-1", "2", "fast"):
        monkeypatch.setenv("COPYDICOM_TEST_TIME_SCALE", bad)
        assert retry._time_scale() == 1.0
    monkeypatch.delenv("COPYDICOM_TEST_TIME_SCALE")
    assert retry._time_scale() == 1.0
    monkeypatch.setattr(retry, "TIME_SCALE", 0.1)
    assert Backoff().delay(1, retry_after=20.0) == pytest.approx(2.0)
