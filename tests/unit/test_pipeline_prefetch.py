"""Prefetch: downloads overlap stores, within the in-flight bound, with the same outcomes and stop semantics.

The behaviour shared with direct downloads (dedupe, quarantine, failures) runs both ways in
``test_pipeline.py``; these tests cover what only prefetch does.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from copydicom.ledger import Ledger
from copydicom.model import Instance, InstanceRef, PrefersPrefetch, StoreOutcome
from copydicom.pipeline import Outcome, Pipeline
from tests.unit.fakes import FakeDestination, FakeSource


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "state.db")
    yield led  # type: ignore[misc]
    led.close()


def batch(ids: str) -> list[InstanceRef]:
    return [InstanceRef(i, None, None, "S1") for i in ids]


class SlowStoreDestination(FakeDestination):
    """A destination that prefers prefetch; ``on_store`` runs inside each store (before it completes)."""

    prefers_prefetch = True

    def __init__(self, on_store: object = None) -> None:
        super().__init__()
        self.on_store = on_store

    def store(self, instance: Instance) -> StoreOutcome:
        if callable(self.on_store):
            self.on_store(instance)
        return super().store(instance)


class SignallingSource(FakeSource):
    """Sets an event per fetched ID."""

    def __init__(self, ids: str) -> None:
        super().__init__({i: i.encode() for i in ids})
        self.events = {i: threading.Event() for i in ids}

    def fetch(self, ref: InstanceRef) -> bytes:
        data = super().fetch(ref)
        self.events[ref.source_id].set()
        return data


def test_a_destination_that_prefers_it_turns_prefetch_on(ledger: Ledger, tmp_path: Path) -> None:
    slow, plain = SlowStoreDestination(), FakeDestination("plain")
    assert isinstance(slow, PrefersPrefetch) and not isinstance(plain, PrefersPrefetch)
    cases = [([plain], {}, False), ([slow], {}, True), ([plain, slow], {}, True),
             ([slow], {"prefetch": False}, False), ([plain], {"prefetch": True}, True),
             ([slow], {"dry_run": True}, False)]
    for dests, options, expected in cases:
        pipe = Pipeline("r", FakeSource({}), [], dests, ledger, quarantine_dir=tmp_path / "q", **options)  # type: ignore[arg-type]
        assert pipe.prefetch is expected, (dests, options)
        pipe.close()


@pytest.mark.parametrize("prefetch", [True, False])
def test_the_next_download_overlaps_a_store(ledger: Ledger, tmp_path: Path, prefetch: bool) -> None:
    """One worker: with prefetch, "b" is downloaded while "a" is being stored; without, only after."""
    source = SignallingSource("ab")
    seen: dict[str, bool] = {}

    def on_store(instance: Instance) -> None:
        if instance.ref.source_id == "a":
            # With prefetch the download of "b" happens meanwhile; give it up to 10 s (no timing asserted).
            seen["b fetched during the store of a"] = source.events["b"].wait(10 if prefetch else 0)

    dest = SlowStoreDestination(on_store)
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1, prefetch=prefetch)
    summary = pipe.run([batch("ab")])
    pipe.close()
    assert summary.counts["stored"] == 2
    assert seen == {"b fetched during the store of a": prefetch}
    assert dest.stored == ["a", "b"]


def test_bytes_held_stay_within_twice_the_workers(ledger: Ledger, tmp_path: Path) -> None:
    """Downloaded but not yet stored: at most ``2 * workers`` instances, however far the source could run."""
    ids = "abcdefghijkl"
    source = SignallingSource(ids)
    lock = threading.Lock()
    finished: list[str] = []
    ahead: list[int] = []
    release = threading.Event()

    def on_store(instance: Instance) -> None:
        if instance.ref.source_id == "a":
            # Hold the first store until every download that may start has had its chance.
            source.events["d"].wait(10)  # 2 workers, 4 in flight: a, b, c, d may be downloaded
            release.wait(0.3)
        with lock:
            ahead.append(len(source.fetched) - len(finished))
            finished.append(instance.ref.source_id)

    dest = SlowStoreDestination(on_store)
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=2, prefetch=True)
    summary = pipe.run([batch(ids)])
    pipe.close()
    assert summary.counts["stored"] == len(ids)
    assert max(ahead) <= 4


def test_a_stop_drops_instances_downloaded_ahead(ledger: Ledger, tmp_path: Path) -> None:
    """An instance downloaded ahead but not started when a stop comes ends as for direct downloads."""
    source = SignallingSource("abcd")
    outcomes: list[Outcome] = []

    def on_store(instance: Instance) -> None:
        if instance.ref.source_id == "a":
            assert source.events["b"].wait(10)  # "b" is downloaded ahead, queued behind "a"
            pipe.stop()

    dest = SlowStoreDestination(on_store)
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1, prefetch=True,
                    on_outcome=outcomes.append)
    summary = pipe.run([batch("abcd")])
    pipe.close()
    assert dest.stored == ["a"]
    by_id = {o.ref.source_id: (o.kind, o.reason) for o in outcomes}
    assert by_id.pop("a") == ("stored", "")
    assert by_id.pop("b") == ("failed", "not started: stop requested")
    assert set(by_id.values()) <= {("failed", "not started: stop requested")}
    assert "d" not in by_id
    assert summary.counts["stored"] == 1
    assert ledger.delivered_among("dest", list("abcd")) == {"a"}
