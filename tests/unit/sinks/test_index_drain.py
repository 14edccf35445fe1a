"""``IndexDestination.drain``: a one-shot command waits for its spool, then reports what is left."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import pytest

from copydicom.cli._args import duration
from copydicom.errors import IndexUnavailable
from copydicom.sinks.index_destination import IndexDestination
from copydicom.sinks.spool import Spool, SpooledIndex


class FlakySink:
    """Down for the first ``down`` sends, then takes everything."""

    name = "flaky"

    def __init__(self, down: int) -> None:
        self.down = down
        self.received: list[dict[str, Any]] = []

    def send(self, documents: list[dict[str, Any]]) -> None:
        if self.down > 0:
            self.down -= 1
            raise IndexUnavailable("index down")
        self.received.extend(documents)

    def close(self) -> None:
        pass


def _destination(tmp_path: Path, down: int) -> tuple[IndexDestination, FlakySink]:
    sink = FlakySink(down)
    spooled = SpooledIndex(sink, Spool(tmp_path / "state.db"))
    spooled.submit([{"_id": f"doc-{i}", "n": i} for i in range(3)])
    return IndexDestination(spooled), sink


def test_drain_waits_for_an_index_that_comes_back(tmp_path: Path) -> None:
    dest, sink = _destination(tmp_path, down=2)
    assert dest.drain(30.0) == 0
    assert len(sink.received) == 3 and sink.down == 0
    dest.close()


def test_drain_gives_up_at_the_deadline_and_keeps_the_documents(tmp_path: Path) -> None:
    dest, sink = _destination(tmp_path, down=10**6)
    assert dest.drain(0.0) == 3
    assert sink.down == 10**6 - 1  # one attempt, no wait past a zero deadline
    dest.close()
    assert Spool(tmp_path / "state.db").pending("flaky") == 3  # kept for the next run


def test_duration_syntax() -> None:
    assert [duration(t) for t in ("30s", "5m", "2h", "1d", "0s")] == [30.0, 300.0, 7200.0, 86400.0, 0.0]
    for bad in ("30", "5 min", "-1s", ""):
        with pytest.raises(argparse.ArgumentTypeError):
            duration(bad)
