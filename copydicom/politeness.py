"""Politeness toward a clinical source: a working window and a rate limit per route.

``window: "19:00-07:00"`` lets a route work only inside the window (local time;
a window may cross midnight); ``max_rate: 50/s`` caps the instances per second
read from the source, shared by all of the route's workers.  Both take an
injectable clock so tests do not pay wall-clock time, and both wait on a
``threading.Event`` so that a stop request ends the wait at once.
"""

from __future__ import annotations

import datetime as _dt
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from copydicom.errors import ConfigError

_HHMM = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")
_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|sec|second|m|min|minute|h|hour)\s*$")
_PER = {"s": 1.0, "sec": 1.0, "second": 1.0, "m": 60.0, "min": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}


@dataclass(frozen=True)
class TimeWindow:
    """Daily working hours ``HH:MM-HH:MM`` (local time); ``start > end`` crosses midnight.

    ``00:00-24:00`` is always open; ``start == end`` is refused (ambiguous).
    """

    start: int  # minutes after midnight
    end: int
    text: str = ""
    clock: Callable[[], _dt.datetime] = field(default=_dt.datetime.now, compare=False, repr=False)
    #: Replaces the stop-aware wait (tests advance a fake clock with it).
    sleep: Callable[[float], object] | None = field(default=None, compare=False, repr=False)

    @classmethod
    def parse(cls, text: str, *, where: str = "window", clock: Callable[[], _dt.datetime] | None = None,
              sleep: Callable[[float], object] | None = None) -> TimeWindow:
        match = _HHMM.match(str(text))
        if not match:
            raise ConfigError(f"{where}: expected \"HH:MM-HH:MM\" (e.g. \"19:00-07:00\"), got {text!r}")
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        start, end = h1 * 60 + m1, h2 * 60 + m2
        if end > 24 * 60 or start == end:
            raise ConfigError(f"{where}: {text!r} is not a window (start and end must differ, end <= 24:00)")
        return cls(start, end, str(text).strip(), clock or _dt.datetime.now, sleep)

    def is_open(self, now: _dt.datetime | None = None) -> bool:
        now = now or self.clock()
        minute = now.hour * 60 + now.minute
        if self.start < self.end:
            return self.start <= minute < self.end
        return minute >= self.start or minute < self.end

    def seconds_until_open(self, now: _dt.datetime | None = None) -> float:
        """0 inside the window, else the seconds until it opens."""
        now = now or self.clock()
        if self.is_open(now):
            return 0.0
        opening = now.replace(hour=self.start // 60, minute=self.start % 60, second=0, microsecond=0)
        if opening <= now:
            opening += _dt.timedelta(days=1)
        return (opening - now).total_seconds()

    def wait_open(self, stop: threading.Event, *, on_wait: Callable[[float], None] | None = None,
                  max_step: float = 60.0) -> bool:
        """Block until the window is open; ``False`` if ``stop`` was set first.

        Sleeps in steps of at most ``max_step`` seconds (the clock may jump,
        and the configuration of a daemon may say "status: waiting").
        """
        while True:
            delay = self.seconds_until_open()
            if delay <= 0:
                return True
            if stop.is_set():
                return False
            if on_wait is not None:
                on_wait(delay)
            (self.sleep or stop.wait)(min(delay, max_step))


def closed_for(text: str | None, now: _dt.datetime | None = None) -> float | None:
    """Seconds until a route's ``window:`` opens if it is closed at ``now``; ``None`` when open or unset.

    What ``status`` and the daemon's route state say ("waiting for window 19:00-07:00"): outside
    its window a route starts no batch (:meth:`TimeWindow.wait_open`), so it is waiting on purpose.
    ``text`` was checked by the configuration.
    """
    if not text:
        return None
    delay = TimeWindow.parse(text).seconds_until_open(now)
    return delay if delay > 0 else None


def waiting_text(text: str, delay: float) -> str:
    """``waiting for window 19:00-07:00 (opens in 2h)`` (durations written as in the config)."""
    seconds = max(0, int(delay))
    shown = f"{seconds}s"
    for unit, size in (("h", 3600), ("m", 60)):
        if seconds >= size:
            shown = f"{seconds // size}{unit}"
            break
    return f"waiting for window {text} (opens in {shown})"


class RateLimiter:
    """A token bucket shared by a route's workers: at most ``rate`` acquisitions per second.

    Bursts are capped at ``burst`` (default: one second's worth, at least 1).
    :meth:`acquire` blocks the calling worker until its token is due, or until
    the ``stop`` event it is given is set.  ``clock`` and ``sleep`` are
    injectable for tests (``sleep`` replaces the stop-aware wait).
    """

    def __init__(
        self,
        rate: float,
        *,
        burst: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] | None = None,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be > 0")
        self.rate = rate
        self.burst = max(1.0, burst if burst is not None else rate)
        self.clock = clock
        self._sleep = sleep
        self._tokens = self.burst
        self._stamp = clock()
        self._lock = threading.Lock()

    @classmethod
    def parse(cls, text: str, *, where: str = "max_rate", **kwargs: object) -> RateLimiter:
        """``"50/s"``, ``"3000/m"``, ``"100000/h"``."""
        match = _RATE.match(str(text))
        if not match or float(match.group(1)) <= 0:
            raise ConfigError(f"{where}: expected a rate like \"50/s\", \"3000/m\" or \"100000/h\", got {text!r}")
        return cls(float(match.group(1)) / _PER[match.group(2)], **kwargs)  # type: ignore[arg-type]

    def _reserve(self) -> float:
        """Take a token (possibly in debt); return how long the caller must wait for it."""
        with self._lock:
            now = self.clock()
            self._tokens = min(self.burst, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= 1.0
            return 0.0 if self._tokens >= 0 else -self._tokens / self.rate

    def acquire(self, stop: threading.Event | None = None) -> bool:
        """Wait for one token; ``False`` if ``stop`` was set meanwhile."""
        stop = stop or threading.Event()
        delay = self._reserve()
        if delay > 0:
            if self._sleep is not None:
                self._sleep(delay)
            else:
                stop.wait(delay)
        return not stop.is_set()
