"""Metrics values after outcomes from a real pipeline with fakes, and after spool flushes."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

import pytest

from copydicom.errors import DestinationUnavailable, InvalidInstance, RejectedByDestination
from copydicom.ledger import Ledger
from copydicom.model import Instance, InstanceRef
from copydicom.observability import Metrics
from copydicom.pipeline import Outcome, Pipeline
from copydicom.sinks.spool import FlushResult, Spool, SpooledIndex
from tests.unit.fakes import FakeDestination, FakeSource, RaisingStage
from tests.unit.sinks.docs_helpers import instance_doc


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state.db")
    yield led
    led.close()


class SlowStage:
    """A stage named ``deid`` that only passes the instance on."""

    name = "deid"

    def process(self, instance: Instance) -> Instance:
        return instance


def _refs(ids: list[str]) -> list[list[InstanceRef]]:
    return [[InstanceRef(i, n)] for n, i in enumerate(ids, 1)]


def test_counters_per_route_and_destination(ledger: Ledger, tmp_path: Path) -> None:
    metrics = Metrics()
    files = {i: i.encode() for i in ("a", "b", "c", "d", "e", "f")}
    # d1 already holds "a"; d2 refuses "e" (quarantine) and is down for "f" (failed).
    d1 = FakeDestination("d1", held={"a"})

    def d2_fail(instance: Instance) -> Exception | None:
        if instance.target_id == "e":
            return RejectedByDestination("refused")
        if instance.target_id == "f":
            return DestinationUnavailable("down")
        return None

    d2 = FakeDestination("d2", held={"a"}, fail=d2_fail)
    stages: list[Any] = [SlowStage(), RaisingStage(InvalidInstance("broken"), {"d"})]
    pipe = Pipeline("r1", FakeSource(files), stages, [d1, d2], ledger, quarantine_dir=tmp_path / "q", workers=2,
                    on_outcome=lambda o: metrics.observe_outcome("r1", o))
    summary = pipe.run(_refs(["a", "b", "c", "d", "e", "f"]))
    pipe.close()
    assert dict(summary.counts) == {"existing": 1, "stored": 2, "quarantined": 2, "failed": 1}

    def inst(dest: str, outcome: str) -> float | None:
        return metrics.value("copydicom_instances_total", {"route": "r1", "destination": dest, "outcome": outcome})

    # d1 stored b, c, e, f (e and f failed only at d2, which comes after d1); d holds for both.
    assert inst("d1", "existing") == 1.0
    assert inst("d1", "stored") == 4.0
    assert inst("d1", "quarantined") == 1.0
    assert inst("d2", "existing") == 1.0
    assert inst("d2", "stored") == 2.0
    assert inst("d2", "quarantined") == 2.0
    assert inst("d2", "failed") == 1.0
    assert inst("d1", "failed") is None

    def route(outcome: str) -> float | None:
        return metrics.value("copydicom_route_instances_total", {"route": "r1", "outcome": outcome})

    assert (route("stored"), route("existing"), route("quarantined"), route("failed")) == (2.0, 1.0, 2.0, 1.0)
    # b, c, e and f were sent to at least one destination: four transfer times.
    assert metrics.value("copydicom_transfer_seconds_count", {"route": "r1"}) == 4.0
    # deid ran on every fetched instance (b..f); the raising stage too (timed when it raises).
    assert metrics.value("copydicom_stage_seconds_count", {"route": "r1", "stage": "deid"}) == 5.0
    assert metrics.value("copydicom_stage_seconds_count", {"route": "r1", "stage": "raising"}) == 5.0


def test_two_metrics_objects_do_not_share_values() -> None:
    first, second = Metrics(), Metrics()
    outcome = Outcome(InstanceRef("x"), "stored", destinations=(("d", "stored"),), seconds=0.5)
    first.observe_outcome("r", outcome)
    first.observe_outcome("r", outcome)
    second.observe_outcome("r", outcome)
    labels = {"route": "r", "destination": "d", "outcome": "stored"}
    assert first.value("copydicom_instances_total", labels) == 2.0
    assert second.value("copydicom_instances_total", labels) == 1.0
    assert first.value("copydicom_transfer_seconds_sum", {"route": "r"}) == 1.0


def test_backlog_and_rendered_text() -> None:
    metrics = Metrics()
    metrics.set_backlog("r", 42)
    metrics.set_backlog("other", -3)  # a checkpoint past a stale Last never shows as negative
    text, ctype = metrics.render()
    assert ctype.startswith("text/plain")
    lines = text.decode().splitlines()
    assert 'copydicom_backlog_changes{route="r"} 42.0' in lines
    assert 'copydicom_backlog_changes{route="other"} 0.0' in lines


class Sink:
    name = "idx"

    def __init__(self) -> None:
        self.down = False

    def send(self, documents: list[dict[str, Any]]) -> None:
        from copydicom.errors import IndexUnavailable

        if self.down:
            raise IndexUnavailable("down")

    def close(self) -> None:
        pass


def test_documents_indexed_from_spool_flush_results(tmp_path: Path) -> None:
    metrics = Metrics()
    spool = Spool(tmp_path / "spool.db")
    sink = Sink()
    spooled = SpooledIndex(sink, spool, batch_size=2)
    spooled.on_flush = metrics.observe_flush
    sink.down = True
    spooled.submit([instance_doc(i) for i in range(5)])
    spooled.flush()
    assert metrics.value("copydicom_index_spool_pending", {"sink": "idx"}) == 5.0
    assert metrics.value("copydicom_index_documents_total", {"sink": "idx", "result": "delivered"}) is None
    sink.down = False
    spooled.flush()
    assert metrics.value("copydicom_index_spool_pending", {"sink": "idx"}) == 0.0
    assert metrics.value("copydicom_index_documents_total", {"sink": "idx", "result": "delivered"}) == 5.0
    metrics.observe_flush("idx", FlushResult(delivered=0, rejected=2, pending=0))
    assert metrics.value("copydicom_index_documents_total", {"sink": "idx", "result": "rejected"}) == 2.0
    spool.close()


def test_deidentification_time_from_the_real_stage(ledger: Ledger, tmp_path: Path) -> None:
    from copydicom.stages.deid import DeidProfile, DeidStage
    from tests.support.synthetic import ct_dataset, to_bytes

    metrics = Metrics()
    files = {f"i{k}": to_bytes(ct_dataset(0, 0, 0, k, rows=16, cols=16, seed="deid-time")) for k in range(3)}
    stage = DeidStage(DeidProfile.default(), b"metrics-key-0123456789abcdef-012")
    dest = FakeDestination("d")
    pipe = Pipeline("r", FakeSource(files), [stage], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1,
                    on_outcome=lambda o: metrics.observe_outcome("r", o))
    summary = pipe.run(_refs(sorted(files)))
    pipe.close()
    assert dict(summary.counts) == {"stored": 3}
    assert metrics.value("copydicom_stage_seconds_count", {"route": "r", "stage": "deid"}) == 3.0
    total = metrics.value("copydicom_stage_seconds_sum", {"route": "r", "stage": "deid"})
    assert total is not None and total > 0
