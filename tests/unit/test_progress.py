"""The one-shot progress display: plain lines off a terminal, a live bar on one, nothing when quiet."""

from __future__ import annotations

import io
from dataclasses import dataclass

from copydicom.cli._progress import Progress


@dataclass
class _Outcome:
    kind: str


class _Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class _Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_plain_lines_show_total_percentage_rate_eta_and_counts() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(total=100, interval=10, stream=out, clock=clock)
    assert progress.mode == "lines"
    for i in range(40):
        clock.now += 0.5  # 2 instances per second
        progress(_Outcome("stored" if i % 4 else "existing"))
    progress.end()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("progress: 20/100 (20%) 2/s ETA 40s")
    assert lines[-1] == "progress: 40/100 (40%) 2/s ETA 30s sent=30 present=10"


def test_unknown_total_has_no_percentage_and_quiet_prints_nothing() -> None:
    out, clock = io.StringIO(), _Clock()
    progress = Progress(total=None, interval=1, stream=out, clock=clock)
    clock.now += 2
    progress(_Outcome("quarantined"))
    assert out.getvalue() == "progress: 1 0/s quarantined=1\n"
    quiet = io.StringIO()
    q = Progress("quiet", total=5, stream=quiet, clock=clock)
    q(_Outcome("stored"))
    q.end()
    assert quiet.getvalue() == "" and q.done == 1


def test_a_terminal_gets_a_live_bar() -> None:
    tty = _Tty()
    progress = Progress(total=3, stream=tty)
    assert progress.mode == "bar"
    for kind in ("stored", "stored", "failed"):
        progress(_Outcome(kind))
    progress.end()
    text = tty.getvalue()
    assert "3/3" in text and "100%" in text and "failed=1" in text
