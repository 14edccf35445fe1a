"""The listener's spool drives the route's pipeline: entries leave only once delivered or quarantined."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from copydicom.endpoints.dimse import ListenerConfig
from copydicom.endpoints.dimse.listener import ListenerSource, SpoolRunner, identity_of
from copydicom.errors import DestinationUnavailable, RejectedByDestination
from copydicom.ledger import Ledger
from copydicom.model import Instance
from copydicom.pipeline import Pipeline
from tests.support.synthetic import ct_study_files
from tests.unit.fakes import FakeDestination


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state.db")
    yield led
    led.close()


def spooled(tmp_path: Path, n: int, batch: int = 7) -> tuple[ListenerSource, list[str]]:
    cfg = ListenerConfig.from_mapping(
        "rx", {"allowed_calling": ["M"], "spool": str(tmp_path / "spool"), "batch": batch}, where="endpoints.rx")
    source = ListenerSource(cfg)
    keys = []
    for data in ct_study_files(n, series_per_study=3, rows=8, cols=8, seed="runner"):
        key = identity_of(data).orthanc_id
        source.spool.put(key, data)
        keys.append(key)
    return source, keys


def runner(source: ListenerSource, dest: FakeDestination, ledger: Ledger, tmp_path: Path) -> SpoolRunner:
    pipeline = Pipeline("rx-route", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=2)
    return SpoolRunner("rx-route", source, pipeline)


def test_everything_delivered_and_the_spool_emptied(tmp_path: Path, ledger: Ledger) -> None:
    source, keys = spooled(tmp_path, 20)
    dest = FakeDestination()
    summary = runner(source, dest, ledger, tmp_path).poll()
    assert summary.counts["stored"] == 20
    assert sorted(dest.stored) == sorted(keys)  # the dedupe key is the Orthanc ID of the instance
    assert source.spool.depth() == (0, None)


def test_batches_are_series(tmp_path: Path) -> None:
    source, _ = spooled(tmp_path, 12)
    for batch in source.batches():
        assert len({ref.series_id for ref in batch}) == 1
        assert all(ref.identity is not None and ref.identity.orthanc_id == ref.source_id for ref in batch)


def test_retryable_failures_stay_quarantined_ones_leave(tmp_path: Path, ledger: Ledger) -> None:
    source, keys = spooled(tmp_path, 10, batch=100)  # one listing: a retryable failure ends the poll
    down, bad = set(keys[:3]), {keys[3]}

    def fail(instance: Instance) -> Exception | None:
        if instance.target_id in down:
            return DestinationUnavailable("down")
        if instance.target_id in bad:
            return RejectedByDestination("refused")
        return None

    dest = FakeDestination(fail=fail)
    summary = runner(source, dest, ledger, tmp_path).poll()
    assert summary.counts["failed"] == 3 and summary.counts["quarantined"] == 1
    assert {e.key for e in source.spool.entries()} == down  # kept for the next poll
    assert len(ledger.quarantined("rx-route")) == 1
    down.clear()
    again = runner(source, dest, ledger, tmp_path).poll()
    assert again.counts["stored"] == 3 and source.spool.depth()[0] == 0
    assert sorted(dest.stored) == sorted(set(keys) - bad)  # nothing stored twice


def test_restart_after_a_crash_sends_nothing_twice(tmp_path: Path, ledger: Ledger) -> None:
    """A crash between delivery and spool removal: the ledger recognises the entries at the next start."""
    source, keys = spooled(tmp_path, 6)
    dest = FakeDestination()
    pipeline = Pipeline("rx-route", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=2)
    summary = pipeline.run(source.batches())  # delivered, but the process dies before removing entries
    assert summary.counts["stored"] == 6 and source.spool.depth()[0] == 6
    fresh_dest = FakeDestination(name=dest.name)  # a destination that cannot answer "have it" by itself
    restarted, _ = ListenerSource(source.config), None
    after = runner(restarted, fresh_dest, ledger, tmp_path).poll()
    assert after.counts["existing"] == 6 and fresh_dest.stored == []
    assert restarted.spool.depth()[0] == 0
