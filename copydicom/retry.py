"""The one retry policy: exponential backoff with full jitter, capped, ``Retry-After`` honoured, stop-aware.

Every retry in copydicom goes through :class:`Backoff`: the Orthanc client's
requests, the Splunk HEC posts, the index spool's background delivery and the
daemon's route backoff.  It is built on tenacity (the call loop, the stop and
wait combinators, ``wait_random_exponential`` for the "full jitter" backoff of
the AWS Architecture Blog's "Exponential Backoff And Jitter");
what tenacity does not give is written here:

- ``Retry-After`` (RFC 9110 10.2.3) in both its forms, delay-seconds and an
  HTTP-date, capped (:data:`RETRY_AFTER_CAP`): a server that asks for an hour
  does not hold a worker (or SIGTERM) for an hour;
- a stop request interrupts a sleep at once: :meth:`Backoff.sleep` waits on a
  :class:`threading.Event` (the module's :data:`STOP` unless one is passed), and
  a call interrupted that way re-raises the last error without another attempt;
- the clock and the sleep are injectable, so tests do not pay wall-clock time:
  in-process tests pass ``sleep=`` (or replace :func:`wait`); a test that runs
  the daemon as a child process sets ``COPYDICOM_TEST_TIME_SCALE`` (a factor in
  ``(0, 1]``, read once at import) and every backoff and spool interval of that
  process shrinks by it, so a fault test waits milliseconds where production
  waits seconds, through the same code.

The daemon calls :func:`request_stop` on SIGTERM; one-shot commands never set it.
"""

from __future__ import annotations

import email.utils
import logging
import os
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

import tenacity

from copydicom.errors import RetryableError

log = logging.getLogger(__name__)
_T = TypeVar("_T")

#: The longest ``Retry-After`` obeyed, in seconds; a longer request is cut to this.
RETRY_AFTER_CAP = 30.0



def _time_scale() -> float:
    """``COPYDICOM_TEST_TIME_SCALE`` (tests of child processes), else 1; out-of-range values are ignored."""
    raw = os.environ.get("COPYDICOM_TEST_TIME_SCALE", "")
    try:
        value = float(raw) if raw else 1.0
    except ValueError:
        value = 1.0
    if not 0.0 < value <= 1.0:
        log.warning("COPYDICOM_TEST_TIME_SCALE=%r ignored: it must be in (0, 1]", raw)
        return 1.0
    return value


#: Factor applied to every wait of every policy (1 in production; see the module docstring).
TIME_SCALE = _time_scale()


def scaled(seconds: float) -> float:
    """``seconds`` on this process's backoff clock (:data:`TIME_SCALE`)."""
    return seconds * TIME_SCALE


#: The process-wide stop request (set by the daemon on SIGTERM/SIGINT); every default policy waits on it.
STOP = threading.Event()


def request_stop() -> None:
    """Interrupt every backoff sleep now and make retrying calls give up after their current attempt."""
    STOP.set()


def clear_stop() -> None:
    """Forget a stop request (a daemon starting, or a test)."""
    STOP.clear()


def stop_requested() -> bool:
    """Whether :func:`request_stop` was called (and not cleared)."""
    return STOP.is_set()


def parse_retry_after(value: str | None, *, now: Callable[[], float] = time.time,
                      cap: float | None = RETRY_AFTER_CAP) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value (RFC 9110 10.2.3), or ``None``.

    Parameters
    ----------
    value
        ``"120"`` (delay-seconds) or ``"Fri, 31 Dec 1999 23:59:59 GMT"`` (an HTTP-date,
        RFC 9110 5.6.7; the obsolete RFC 850 and asctime forms are accepted too).
    now
        The wall clock (``time.time``), for the HTTP-date form.
    cap
        The longest wait returned; ``None`` for no cap.

    Returns
    -------
    float or None
        A delay ``>= 0``; ``None`` when the header is missing or unreadable.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    seconds: float
    try:
        seconds = float(text)  # delay-seconds (a fraction is tolerated: some proxies send one)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:  # pragma: no cover - older Pythons returned None
            return None
        seconds = when.timestamp() - now()
    if seconds != seconds:  # NaN
        return None
    seconds = max(0.0, seconds)
    return seconds if cap is None else min(seconds, cap)


def wait(seconds: float, stop: threading.Event) -> bool:
    """The default sleep of every policy: wait on ``stop``; ``True`` when stopped.

    Module-level so a test can replace it for the whole process (``monkeypatch.setattr(retry, "wait", ...)``)
    when the policies are built deep inside the code under test.
    """
    return stop.wait(max(0.0, seconds))


class _Interrupted(Exception):
    """Raised out of a sleep that a stop request cut short."""


@dataclass
class Backoff:
    """Exponential backoff with full jitter, capped, that a stop request interrupts.

    Parameters
    ----------
    retries
        Attempts after the first one for :meth:`call`; ``None`` retries until stopped.
    base
        The first delay's upper bound in seconds; it doubles per failure.
    cap
        The longest delay drawn from the backoff.
    retry_after_cap
        The longest ``Retry-After`` obeyed (it replaces the drawn delay when the server says).
    stop
        The event that interrupts sleeps (the module's :data:`STOP` by default).
    sleep
        ``sleep(seconds, stop_event)``; the default waits on the event.  Tests inject a recorder.
    rng
        The random source of the jitter (``random.uniform``-like).
    """

    retries: int | None = 4
    base: float = 0.5
    cap: float = 20.0
    retry_after_cap: float = RETRY_AFTER_CAP
    stop: threading.Event = field(default_factory=lambda: STOP)
    sleep: Callable[[float, threading.Event], None] | None = None
    rng: random.Random = field(default_factory=random.Random)

    def delay(self, failures: int, retry_after: float | None = None) -> float:
        """Seconds to wait after ``failures`` consecutive failures (1 for the first).

        The server's ``Retry-After`` wins when given (capped at ``retry_after_cap``);
        otherwise a uniform draw in ``[0, min(cap, base * 2 ** (failures - 1))]``
        (tenacity's ``wait_random_exponential``: full jitter).
        """
        if retry_after is not None:
            return scaled(max(0.0, min(float(retry_after), self.retry_after_cap)))
        high = min(self.cap, self.base * 2 ** max(0, min(failures - 1, 62)))
        return scaled(self.rng.uniform(0.0, high))

    def sleep_for(self, seconds: float) -> bool:
        """Sleep ``seconds`` unless a stop is requested; return ``True`` when stopped."""
        if self.stop.is_set():
            return True
        if self.sleep is not None:
            self.sleep(seconds, self.stop)
            return self.stop.is_set()
        return wait(seconds, self.stop)

    def call(self, attempt: Callable[[], _T], *, what: str = "",
             retry_on: type[BaseException] | tuple[type[BaseException], ...] = RetryableError) -> _T:
        """Run ``attempt`` until it succeeds, retrying ``retry_on`` errors with this backoff.

        Other exceptions propagate at once.  When the attempts are used up, or a
        stop is requested, the last error is raised (never a tenacity ``RetryError``).

        Parameters
        ----------
        attempt
            One try; raises :class:`RetryableError` for a transient failure (its
            ``retry_after``, when set, is the server's ``Retry-After``).
        what
            For the log line ``"<error>; retry 2/4 in 1.3 s"`` (free of patient data).
        """
        # Fast path: most calls succeed at once, and building a tenacity loop costs ~50 us (measured:
        # a few percent of a whole instance transfer's client CPU); only a failure pays for it.
        try:
            return attempt()
        except retry_on as exc:
            first: list[BaseException] = [exc]
        stop_rule: tenacity.stop.stop_base = tenacity.stop_when_event_set(self.stop)
        if self.retries is not None:
            stop_rule = stop_rule | tenacity.stop_after_attempt(self.retries + 1)
        total = "" if self.retries is None else f"/{self.retries}"

        def wait(state: tenacity.RetryCallState) -> float:
            error = state.outcome.exception() if state.outcome is not None else None
            return self.delay(state.attempt_number, getattr(error, "retry_after", None))

        def before_sleep(state: tenacity.RetryCallState) -> None:
            error = state.outcome.exception() if state.outcome is not None else None
            seconds = state.next_action.sleep if state.next_action is not None else 0.0
            log.info("%s; retry %d%s in %.1f s", error or what, state.attempt_number, total, seconds)

        def sleep(seconds: float) -> None:
            if self.sleep_for(seconds):
                raise _Interrupted

        retrying = tenacity.Retrying(
            retry=tenacity.retry_if_exception_type(retry_on),
            stop=stop_rule,
            wait=wait,
            sleep=sleep,
            before_sleep=before_sleep,
            reraise=True,
        )
        last: list[BaseException] = list(first)

        def remembered() -> _T:
            if first:  # the loop's first attempt is the one already made above
                raise first.pop()
            try:
                return attempt()
            except BaseException as exc:
                last[:] = [exc]
                raise

        try:
            return retrying(remembered)
        except _Interrupted:
            log.info("%s: stop requested, not retrying", what or "request")
            raise last[0] from None
