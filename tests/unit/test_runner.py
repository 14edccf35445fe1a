"""ChangesRunner: the checkpoint is a low-watermark that never passes an unfinished change."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from copydicom.ledger import Ledger
from copydicom.model import InstanceRef
from copydicom.pipeline import Outcome, OutcomeKind
from copydicom.runner import ChangesRunner
from copydicom.sources.orthanc import ChangesPage


class FakeFeed:
    """Changes 1..n; ``instances`` are the seqs that announce a NewInstance (ID ``i<seq>``)."""

    def __init__(self, n: int, instances: set[int], page_size: int = 3) -> None:
        self.n = n
        self.instances = instances
        self.page_size = page_size
        self.asked: list[int] = []

    def last_change(self) -> int:
        return self.n

    def names_change(self, position: object) -> bool | None:
        return None

    def changes_page(self, since: int) -> ChangesPage:
        self.asked.append(since)
        seqs = list(range(since + 1, min(self.n, since + self.page_size) + 1))
        batches = [[InstanceRef(f"i{s}", s)] for s in seqs if s in self.instances]
        return ChangesPage(seqs, batches, self.n, not seqs or seqs[-1] == self.n)


class FakePipeline:
    """Yields an outcome per reference; ``kinds`` maps source IDs to a non-default outcome.

    Outcomes are yielded in reverse order within a page, as a pool may finish them.
    """

    def __init__(self, kinds: dict[str, OutcomeKind] | None = None) -> None:
        self.kinds = kinds or {}
        self.stop_event = threading.Event()
        self.seen: list[str] = []

    def stream(self, batches: Iterable[list[InstanceRef]]) -> Iterator[Outcome]:
        refs = [ref for batch in batches for ref in batch]
        for ref in reversed(refs):
            self.seen.append(ref.source_id)
            yield Outcome(ref, self.kinds.get(ref.source_id, "stored"))


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state.db")
    yield led
    led.close()


def runner(feed: FakeFeed, pipe: FakePipeline, ledger: Ledger, start_from: str = "beginning") -> ChangesRunner:
    return ChangesRunner("r", feed, pipe, ledger, start_from=start_from)  # type: ignore[arg-type]


def test_all_success_moves_checkpoint_to_the_end(ledger: Ledger) -> None:
    feed = FakeFeed(7, {1, 3, 4, 7})
    pipe = FakePipeline()
    summary = runner(feed, pipe, ledger).poll()
    assert ledger.checkpoint("r") == 7
    assert summary.counts["stored"] == 4
    assert feed.asked == [0, 3, 6]


def test_failed_seq_holds_the_checkpoint_and_later_successes_do_not_move_it(ledger: Ledger) -> None:
    feed = FakeFeed(9, {1, 2, 3, 5, 6}, page_size=9)
    pipe = FakePipeline({"i3": "failed"})
    summary = runner(feed, pipe, ledger).poll()
    assert ledger.checkpoint("r") == 2  # 3 failed; 5 and 6 succeeded but sit above it
    assert summary.counts["failed"] == 1 and summary.counts["stored"] == 4
    assert feed.asked == [0]  # the run stops at a failure

    # Next poll: the failure is gone; the run restarts from the watermark and finishes.
    pipe2 = FakePipeline()
    runner(feed, pipe2, ledger).poll()
    assert pipe2.seen == ["i6", "i5", "i3"]
    assert ledger.checkpoint("r") == 9


def test_quarantined_and_existing_count_as_finished(ledger: Ledger) -> None:
    feed = FakeFeed(4, {1, 2, 3, 4}, page_size=10)
    runner(feed, FakePipeline({"i2": "quarantined", "i3": "existing"}), ledger).poll()
    assert ledger.checkpoint("r") == 4


def test_failure_in_a_later_page_keeps_earlier_pages(ledger: Ledger) -> None:
    feed = FakeFeed(9, {2, 5, 8}, page_size=3)
    runner(feed, FakePipeline({"i8": "failed"}), ledger).poll()
    assert ledger.checkpoint("r") == 7
    assert feed.asked == [0, 3, 6]


def test_checkpoint_never_moves_backwards(ledger: Ledger) -> None:
    ledger.advance_checkpoint("r", 10)
    ledger.advance_checkpoint("r", 4)
    assert ledger.checkpoint("r") == 10
    # A runner resumes from the saved checkpoint, not from 0.
    feed = FakeFeed(12, {11, 12}, page_size=5)
    pipe = FakePipeline()
    runner(feed, pipe, ledger).poll()
    assert feed.asked == [10]
    assert sorted(pipe.seen) == ["i11", "i12"]
    assert ledger.checkpoint("r") == 12


def test_start_from_now_skips_history(ledger: Ledger) -> None:
    feed = FakeFeed(5, {1, 2, 3, 4, 5})
    pipe = FakePipeline()
    runner(feed, pipe, ledger, start_from="now").poll()
    assert pipe.seen == []
    assert ledger.checkpoint("r") == 5


def test_stop_request_ends_the_poll_at_the_watermark(ledger: Ledger) -> None:
    feed = FakeFeed(9, {1, 4, 7}, page_size=3)
    pipe = FakePipeline()
    original = pipe.stream

    def stream_then_stop(batches: Iterable[list[InstanceRef]]) -> Iterator[Outcome]:
        yield from original(batches)
        pipe.stop_event.set()

    pipe.stream = stream_then_stop  # type: ignore[method-assign]
    runner(feed, pipe, ledger).poll()
    assert feed.asked == [0]
    assert ledger.checkpoint("r") == 3
