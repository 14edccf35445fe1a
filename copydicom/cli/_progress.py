"""Progress of a one-shot command: a live bar on a terminal, plain periodic lines otherwise.

On a TTY (stderr) a rich progress bar shows the total (when the source
listing knows it), percentage, rate, ETA and counts by outcome; when stderr is
not a terminal (a log file, a pipe, systemd), one plain line every
``interval`` seconds; ``--quiet`` shows nothing.  The summary line on stdout
is printed by the command either way.
"""

from __future__ import annotations

import sys
import time
from collections import Counter
from typing import Any, TextIO

_LABELS = (("stored", "sent"), ("existing", "present"), ("quarantined", "quarantined"), ("failed", "failed"),
           ("filtered", "filtered"))


class Progress:
    """Called with each :class:`~copydicom.pipeline.Outcome`; :meth:`end` closes the display.

    Parameters
    ----------
    mode
        ``"auto"`` (bar on a TTY, lines otherwise), ``"bar"``, ``"lines"`` or ``"quiet"``.
    total
        Instances expected, if the source knows (``None``: shown without percentage and ETA).
    interval
        Seconds between plain lines.
    stream
        Where to write (default stderr).
    clock
        Injectable monotonic clock (tests).
    """

    def __init__(self, mode: str = "auto", *, total: int | None = None, interval: float = 10.0,
                 stream: TextIO | None = None, clock: Any = time.monotonic) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if mode == "auto":
            mode = "bar" if self.stream.isatty() else "lines"
        self.mode = mode
        self.total = total
        self.interval = interval
        self.clock = clock
        self.counts: Counter[str] = Counter()
        self.started = clock()
        self._last_line = self.started
        self._bar: Any = None
        self._task: Any = None

    # -- the live bar --------------------------------------------------------------------

    def _start_bar(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TaskProgressColumn
        from rich.progress import TextColumn, TimeRemainingColumn

        self._bar = RichProgress(
            TextColumn("[bold]copying"), BarColumn(), MofNCompleteColumn(), TaskProgressColumn(),
            TextColumn("{task.fields[rate]}/s"), TimeRemainingColumn(), TextColumn("{task.fields[counts]}"),
            console=Console(file=self.stream), transient=False, refresh_per_second=5,
        )
        self._bar.start()
        self._task = self._bar.add_task("copy", total=self.total, rate="0", counts="")

    def set_total(self, total: int | None) -> None:
        """The total became known (a listing finished counting)."""
        self.total = total
        if self._bar is not None:
            self._bar.update(self._task, total=total)

    @property
    def done(self) -> int:
        return sum(self.counts.values())

    def rate(self) -> float:
        return self.done / max(self.clock() - self.started, 1e-6)

    def describe(self) -> str:
        """``1200/5000 (24%) 210/s ETA 18s  sent=... present=...`` (what a plain line says)."""
        parts = [f"{self.done}" + (f"/{self.total} ({100 * self.done / max(self.total, 1):.0f}%)" if self.total else "")]
        rate = self.rate()
        parts.append(f"{rate:.0f}/s")
        if self.total and rate > 0:
            parts.append(f"ETA {max(0, self.total - self.done) / rate:.0f}s")
        parts.append(" ".join(f"{label}={self.counts[kind]}" for kind, label in _LABELS if self.counts[kind]))
        return " ".join(p for p in parts if p)

    def __call__(self, outcome: Any) -> None:
        self.counts[outcome.kind] += 1
        if self.mode == "quiet":
            return
        if self.mode == "bar":
            if self._bar is None:
                self._start_bar()
            counts = " ".join(f"{label}={self.counts[kind]}" for kind, label in _LABELS if self.counts[kind])
            self._bar.update(self._task, completed=self.done, rate=f"{self.rate():.0f}", counts=counts)
            return
        now = self.clock()
        if now - self._last_line >= self.interval:
            self._last_line = now
            self.stream.write(f"progress: {self.describe()}\n")
            self.stream.flush()

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        elif self.mode == "lines" and self.done:
            self.stream.write(f"progress: {self.describe()}\n")
            self.stream.flush()
