"""Feed-reset detection: a checkpoint ahead of the source, or naming another resource, holds the route."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pytest

from copydicom.feedcheck import names_change, reset_reason
from copydicom.ledger import Ledger
from copydicom.model import FeedPosition, InstanceRef
from copydicom.pipeline import Outcome
from copydicom.runner import ChangesRunner
from copydicom.sources.orthanc import ChangesPage
from copydicom.state import FeedResetDetected


class Feed:
    """Changes 1..n naming ``i<seq>`` (or ``rebuilt<seq>`` once ``rebuilt``)."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.rebuilt = False

    def _id(self, seq: int) -> str:
        return f"rebuilt{seq}" if self.rebuilt else f"i{seq}"

    def last_change(self) -> int:
        return self.n

    def changes_page(self, since: int) -> ChangesPage:
        seqs = list(range(since + 1, self.n + 1))
        return ChangesPage(seqs, [[InstanceRef(self._id(s), s)] for s in seqs], self.n, True,
                           {s: self._id(s) for s in seqs})

    def names_change(self, position: FeedPosition) -> bool | None:
        if position.resource is None or position.seq > self.n:
            return None
        return self._id(position.seq) == position.resource


class Pipe:
    def __init__(self) -> None:
        self.stop_event = threading.Event()
        self.seen: list[str] = []

    def stream(self, batches: Iterable[list[InstanceRef]]) -> Iterator[Outcome]:
        for batch in batches:
            for ref in batch:
                self.seen.append(ref.source_id)
                yield Outcome(ref, "stored")


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state.db")
    yield led
    led.close()


def test_checkpoint_keeps_the_resource_of_its_change(ledger: Ledger) -> None:
    feed, pipe = Feed(8), Pipe()
    ChangesRunner("r", feed, pipe, ledger).poll()  # type: ignore[arg-type]
    assert ledger.position("r") == FeedPosition(8, "i8")


def test_checkpoint_raised_by_5000_is_a_reset_and_nothing_is_sent(ledger: Ledger) -> None:
    """The review's scenario: checkpoint 5,000 above the source; 0 of 5 new sent, backlog -4987."""
    feed, pipe = Feed(8), Pipe()
    ChangesRunner("r", feed, pipe, ledger).poll()  # type: ignore[arg-type]
    ledger.store.rebase_checkpoint("r", FeedPosition(8 + 5000, "i8"))
    feed.n = 13  # five new instances
    runner = ChangesRunner("r", feed, pipe, ledger)  # type: ignore[arg-type]
    seen_before = list(pipe.seen)
    with pytest.raises(FeedResetDetected, match="below the checkpoint 5008"):
        runner.poll()
    assert pipe.seen == seen_before  # nothing processed
    assert ledger.checkpoint("r") == 5008  # not advanced, not moved back
    reset = ledger.feed_resets()["r"]
    assert (reset.checkpoint, reset.source_last) == (5008, 13)
    assert runner.feed_reset is not None
    # The reset holds until repaired: the next poll refuses again without asking the feed.
    with pytest.raises(FeedResetDetected):
        ChangesRunner("r", feed, pipe, ledger).poll()  # type: ignore[arg-type]
    # A re-based checkpoint (the repair of the convergence issue) clears it.
    ledger.store.rebase_checkpoint("r", FeedPosition(0))
    ChangesRunner("r", feed, pipe, ledger).poll()  # type: ignore[arg-type]
    assert ledger.feed_resets() == {} and ledger.position("r") == FeedPosition(13, "i13")


def test_rebuilt_source_past_the_checkpoint_is_a_reset(ledger: Ledger, caplog: pytest.LogCaptureFixture) -> None:
    feed, pipe = Feed(5), Pipe()
    ChangesRunner("r", feed, pipe, ledger).poll()  # type: ignore[arg-type]
    feed.rebuilt, feed.n = True, 9  # wiped and rebuilt: seq 5 now names another instance
    with pytest.raises(FeedResetDetected, match="names another resource"):
        ChangesRunner("r", feed, pipe, ledger).poll()  # type: ignore[arg-type]
    assert ledger.checkpoint("r") == 5
    assert not any(s.startswith("rebuilt") for s in pipe.seen)
    errors = [r for r in caplog.records if r.levelname == "ERROR"]
    assert errors and "reset" in errors[0].getMessage() and "i5" not in errors[0].getMessage()


def test_reason_rules() -> None:
    assert reset_reason(None, 3, None) is None
    assert reset_reason(FeedPosition(5, "x"), 5, True) is None
    assert reset_reason(FeedPosition(5, "x"), 9, None) is None  # change gone (deleted): cannot tell
    assert reset_reason(FeedPosition(5, "x"), 4, None) is not None
    assert reset_reason(FeedPosition(5, "x"), 9, False) is not None


class Client:
    def __init__(self, changes: list[dict[str, Any]]) -> None:
        self.changes_list = changes
        self.asked: list[tuple[int, int]] = []

    def changes(self, since: int, limit: int) -> dict[str, Any]:
        self.asked.append((since, limit))
        return {"Changes": [c for c in self.changes_list if c["Seq"] > since][:limit]}


def test_names_change_asks_for_exactly_the_checkpoint_change() -> None:
    client = Client([{"Seq": 7, "ID": "abc"}, {"Seq": 9, "ID": "def"}])
    assert names_change(client, FeedPosition(7, "abc")) is True
    assert client.asked == [(6, 1)]
    assert names_change(client, FeedPosition(7, "zzz")) is False
    assert names_change(client, FeedPosition(8, "abc")) is None  # the change of seq 8 is gone
    assert names_change(client, FeedPosition(7, None)) is None


def test_health_answers_503_and_metric_is_set_during_a_reset() -> None:
    from copydicom.observability._config import MetricsConfig
    from copydicom.observability._health import HealthChecker
    from copydicom.observability._metrics import Metrics
    from copydicom.state import FeedReset

    class View:
        name = "r"
        poll_seconds = 10.0
        started = last_success = last_progress = 1000.0
        failing_since = None
        last_error = ""
        feed_reset: Any = FeedReset("r", 1000.0, 5008, None, 13, "below the checkpoint")

    checker = HealthChecker(MetricsConfig.from_mapping({}, where="metrics"), sources={}, ledger=lambda: None,
                            routes=lambda: [View()], clock=lambda: 1001.0)
    healthy, body = checker.check()
    assert not healthy and "feed reset" in body["routes"]["r"]["problem"]
    View.feed_reset = None
    assert checker.check()[0]
    metrics = Metrics()
    metrics.set_feed_reset("r", True)
    assert metrics.value("copydicom_feed_reset", {"route": "r"}) == 1.0


def test_checkpoint_command_rebases_and_clears_the_reset_but_not_under_a_running_daemon(
    ledger: Ledger, capsys: pytest.CaptureFixture[str]
) -> None:
    from copydicom.cli import main
    from copydicom.state import FeedReset

    ledger.advance_checkpoint("r", 5008, "i8")
    ledger.store.feed_reset_put(FeedReset("r", 1.0, 5008, "i8", 13, "below the checkpoint"))
    state = str(ledger.path)
    assert main(["checkpoint", "--state", state, "--route", "r"]) == 0
    assert "checkpoint 5008; FEED RESET: below the checkpoint" in capsys.readouterr().out
    lock = ledger.store.lock_route("r")  # a daemon follows the route
    assert main(["checkpoint", "--state", state, "--route", "r", "--rebase", "0"]) == 2
    lock.release()
    assert main(["checkpoint", "--state", state, "--route", "r", "--rebase", "0"]) == 0
    assert ledger.position("r") == FeedPosition(0) and ledger.feed_resets() == {}
