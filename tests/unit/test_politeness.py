"""Working window and rate limiter, with injected clocks."""

from __future__ import annotations

import datetime as dt
import threading

import pytest

from copydicom.errors import ConfigError
from copydicom.politeness import RateLimiter, TimeWindow


def at(hh: int, mm: int) -> dt.datetime:
    return dt.datetime(2026, 3, 2, hh, mm)


def test_window_across_midnight() -> None:
    w = TimeWindow.parse("19:00-07:00")
    assert w.is_open(at(19, 0)) and w.is_open(at(23, 59)) and w.is_open(at(0, 0)) and w.is_open(at(6, 59))
    assert not w.is_open(at(7, 0)) and not w.is_open(at(12, 0)) and not w.is_open(at(18, 59))
    assert w.seconds_until_open(at(18, 0)) == 3600
    assert w.seconds_until_open(at(20, 0)) == 0
    assert w.seconds_until_open(at(7, 0)) == 12 * 3600


def test_window_within_a_day_and_whole_day() -> None:
    w = TimeWindow.parse("08:30-17:00")
    assert w.is_open(at(8, 30)) and not w.is_open(at(17, 0)) and not w.is_open(at(8, 29))
    assert w.seconds_until_open(at(17, 30)) == (15 * 60 + 0) * 60
    assert TimeWindow.parse("00:00-24:00").is_open(at(23, 59))


@pytest.mark.parametrize("text", ["19-07", "25:00-07:00", "07:00-07:00", "", "7pm-7am"])
def test_window_errors_name_the_key(text: str) -> None:
    with pytest.raises(ConfigError, match=r"routes\[0\]\.window"):
        TimeWindow.parse(text, where="routes[0].window")


def test_wait_open_waits_until_the_clock_enters_the_window() -> None:
    now = [at(18, 58)]
    waits: list[float] = []

    class Stop(threading.Event):
        def wait(self, timeout: float | None = None) -> bool:
            assert timeout is not None
            waits.append(timeout)
            now[0] += dt.timedelta(seconds=timeout)
            return False

    w = TimeWindow.parse("19:00-07:00", clock=lambda: now[0])
    assert w.wait_open(Stop(), max_step=60) is True
    assert waits == [60.0, 60.0]
    stop = threading.Event()
    stop.set()
    assert w.wait_open(stop) is True  # open now: returns at once even when stopping
    assert TimeWindow.parse("08:00-09:00", clock=lambda: at(12, 0)).wait_open(stop) is False


def test_rate_limiter_spaces_acquisitions() -> None:
    clock = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += seconds

    limiter = RateLimiter.parse("50/s", clock=lambda: clock[0], sleep=sleep)
    for _ in range(150):
        assert limiter.acquire()
    # a burst of one second's worth, then one every 1/50 s
    assert len(slept) == 100
    assert clock[0] == pytest.approx(2.0)
    assert RateLimiter.parse("3000/m").rate == 50
    assert RateLimiter.parse("3600/h").rate == 1


def test_rate_limiter_shared_by_threads_never_exceeds_the_rate() -> None:
    lock = threading.Lock()
    clock = [0.0]
    stamps: list[float] = []

    def sleep(seconds: float) -> None:  # each thread's own wait; the clock is shared
        pass

    limiter = RateLimiter(10, burst=1, clock=lambda: clock[0], sleep=sleep)
    granted: list[int] = []

    def worker() -> None:
        for _ in range(20):
            with lock:
                clock[0] += 0.01
            limiter.acquire()
            with lock:
                granted.append(1)
                stamps.append(clock[0])

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 80
    # 80 tokens over the clock's 0.8 s at 10/s: the bucket went into debt by 72 tokens (waits owed)
    assert limiter._tokens == pytest.approx(1 - 80 + 0.8 * 10, abs=0.2)


def test_rate_limiter_stop_ends_the_wait() -> None:
    limiter = RateLimiter(0.001, burst=1)
    stop = threading.Event()
    assert limiter.acquire(stop)
    stop.set()
    assert limiter.acquire(stop) is False  # would wait 1000 s; the stop returns at once


@pytest.mark.parametrize("text", ["50", "0/s", "fast", "-1/s", "50/d"])
def test_rate_errors(text: str) -> None:
    with pytest.raises(ConfigError, match="max_rate"):
        RateLimiter.parse(text)
