"""Pipeline with in-memory fakes: dedupe, quarantine, failures."""

from __future__ import annotations

from pathlib import Path

import pytest

from copydicom.errors import (
    DestinationUnavailable,
    InvalidInstance,
    RejectedByDestination,
    SourceUnavailable,
)
from copydicom.ledger import Ledger
from copydicom.model import Instance, InstanceRef, StoreOutcome
from copydicom.pipeline import Outcome, Pipeline, Summary, safe_reason
from copydicom.state import quarantine_file_name
from tests.unit.fakes import FakeDestination, FakeSource, RaisingStage


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    led = Ledger(tmp_path / "state.db")
    yield led  # type: ignore[misc]
    led.close()


def make(ledger: Ledger, tmp_path: Path, source: FakeSource, dests: list[FakeDestination],
         stages: list[object] = (), workers: int = 2) -> Pipeline:  # type: ignore[assignment]
    return Pipeline("r", source, stages, dests, ledger, quarantine_dir=tmp_path / "q", workers=workers)  # type: ignore[arg-type]


def series_batch(ids: list[str], series: str = "S1") -> list[InstanceRef]:
    return [InstanceRef(i, None, None, series) for i in ids]


def kinds(summary: Summary) -> dict[str, int]:
    return {k: v for k, v in summary.counts.items() if v}


def test_dedupe_asks_destination_once_per_series_then_trusts_ledger(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({i: i.encode() for i in ("a", "b", "c")})
    dest = FakeDestination(held={"b"})
    pipe = make(ledger, tmp_path, source, [dest])
    summary = pipe.run([series_batch(["a", "b", "c"])])
    assert kinds(summary) == {"stored": 2, "existing": 1}
    assert dest.has_calls == [(["a", "b", "c"], "S1")]
    assert sorted(dest.stored) == ["a", "c"]
    assert sorted(source.fetched) == ["a", "c"]
    pipe.close()

    # A second run: the ledger answers, the destination is not asked and nothing is fetched.
    source2 = FakeSource({})
    pipe2 = make(ledger, tmp_path, source2, [dest])
    summary = pipe2.run([series_batch(["a", "b", "c"])])
    assert kinds(summary) == {"existing": 3}
    assert dest.has_calls == [(["a", "b", "c"], "S1")]
    assert source2.fetched == []
    pipe2.close()
    assert ledger.delivered_among("dest", ["a", "b", "c"]) == {"a", "b", "c"}


def test_a_mostly_new_source_does_not_ask_a_destination_whose_store_answers(ledger: Ledger, tmp_path: Path) -> None:
    """The receive spool (``mostly_new``) and Orthanc (``store_reports_existing``): no look-up before the
    store; what the destination holds is still "existing" (its store says so), and the ledger still answers
    first. A destination without the flag is asked as before."""
    source = FakeSource({i: i.encode() for i in ("a", "b", "c")})
    source.mostly_new = True  # type: ignore[attr-defined]
    answering = FakeDestination("answering", held={"b"})
    answering.store_reports_existing = True  # type: ignore[attr-defined]
    plain = FakeDestination("plain", held={"b"})
    pipe = make(ledger, tmp_path, source, [answering, plain])
    summary = pipe.run([series_batch(["a", "b", "c"]), [InstanceRef("a", None, None, "S1")]])
    assert answering.has_calls == []
    assert plain.has_calls == [(["a", "b", "c"], "S1")]
    assert sorted(answering.stored) == ["a", "b", "c"]  # "a" once: the second batch is answered by the ledger
    assert sorted(plain.stored) == ["a", "c"]
    assert kinds(summary) == {"stored": 2, "existing": 2}
    pipe.close()
    assert ledger.delivered_among("answering", ["a", "b", "c"]) == {"a", "b", "c"}


def test_a_dry_run_still_asks(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({"a": b"a", "b": b"b"})
    source.mostly_new = True  # type: ignore[attr-defined]
    dest = FakeDestination(held={"b"})
    dest.store_reports_existing = True  # type: ignore[attr-defined]
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", dry_run=True)  # type: ignore[list-item]
    summary = pipe.run([series_batch(["a", "b"])])
    assert dest.has_calls == [(["a", "b"], "S1")]
    assert dest.stored == []
    assert kinds(summary) == {"stored": 1, "existing": 1}
    pipe.close()


def test_single_reference_is_checked_individually(ledger: Ledger, tmp_path: Path) -> None:
    dest = FakeDestination(held={"x"})
    source = FakeSource({"x": b"x", "y": b"y"})
    pipe = make(ledger, tmp_path, source, [dest])
    summary = pipe.run([[InstanceRef("x", 1)], [InstanceRef("y", 2)]])
    pipe.close()
    assert kinds(summary) == {"existing": 1, "stored": 1}
    assert sorted(c[0][0] for c in dest.has_calls) == ["x", "y"]
    assert all(hint is None for _, hint in dest.has_calls)
    assert source.fetched == ["y"]


def test_two_destinations_only_the_missing_one_receives(ledger: Ledger, tmp_path: Path) -> None:
    d1 = FakeDestination("d1", held={"a", "b"})
    d2 = FakeDestination("d2", held={"a"})
    pipe = make(ledger, tmp_path, FakeSource({"a": b"a", "b": b"b"}), [d1, d2])
    summary = pipe.run([series_batch(["a", "b"])])
    pipe.close()
    assert kinds(summary) == {"existing": 1, "stored": 1}
    assert d1.stored == [] and d2.stored == ["b"]


def test_skippable_stage_error_quarantines_with_bytes(ledger: Ledger, tmp_path: Path) -> None:
    stage = RaisingStage(InvalidInstance("no SOP Instance UID"), {"b"})
    dest = FakeDestination()
    pipe = make(ledger, tmp_path, FakeSource({"a": b"A", "b": b"B"}), [dest], [stage])
    summary = pipe.run([series_batch(["a", "b"])])
    pipe.close()
    assert kinds(summary) == {"stored": 1, "quarantined": 1}
    assert not summary.ok
    (entry,) = ledger.quarantined("r")
    assert (entry.source_id, entry.code, entry.reason) == ("b", "invalid", "InvalidInstance: no SOP Instance UID")
    assert entry.path == str(tmp_path / "q" / "r" / quarantine_file_name("r", "b"))
    assert Path(entry.path).read_bytes() == b"B"
    assert oct(Path(entry.path).stat().st_mode & 0o777) == "0o600"
    assert dest.stored == ["a"]


def test_unexpected_exception_quarantines_without_quoted_values(ledger: Ledger, tmp_path: Path) -> None:
    stage = RaisingStage(ValueError("bad value 'DOE^JOHN' in \"1970-01-01\""), {"a"})
    pipe = make(ledger, tmp_path, FakeSource({"a": b"A"}), [FakeDestination()], [stage])
    summary = pipe.run([series_batch(["a"])])
    pipe.close()
    assert kinds(summary) == {"quarantined": 1}
    (entry,) = ledger.quarantined()
    assert entry.code == "invalid"
    assert "DOE" not in entry.reason and "1970" not in entry.reason
    assert entry.reason == "InvalidInstance: cannot process: ValueError: bad value '…' in '…'"


def test_rejection_by_destination_quarantines(ledger: Ledger, tmp_path: Path) -> None:
    dest = FakeDestination(fail=lambda inst: RejectedByDestination("HTTP 400") if inst.target_id == "a" else None)
    pipe = make(ledger, tmp_path, FakeSource({"a": b"A", "b": b"B"}), [dest])
    summary = pipe.run([series_batch(["a", "b"])])
    pipe.close()
    assert kinds(summary) == {"quarantined": 1, "stored": 1}
    assert [(e.source_id, e.code) for e in ledger.quarantined()] == [("a", "rejected")]


def test_retryable_errors_fail_without_quarantine_or_delivery(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({"a": b"A", "b": b"B"}, errors={"a": SourceUnavailable("GET on pacs: HTTP 503")})
    dest = FakeDestination(fail=lambda inst: DestinationUnavailable("down") if inst.target_id == "b" else None)
    pipe = make(ledger, tmp_path, source, [dest])
    summary = pipe.run([series_batch(["a", "b"])])
    pipe.close()
    assert kinds(summary) == {"failed": 2}
    assert summary.first_retryable in ("GET on pacs: HTTP 503", "down")
    assert ledger.quarantined() == []
    assert ledger.delivered_among("dest", ["a", "b"]) == set()


def test_dry_run_fetches_and_stores_nothing(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({"a": b"A"})
    dest = FakeDestination()
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", dry_run=True)
    summary = pipe.run([series_batch(["a", "b"])])
    pipe.close()
    assert kinds(summary) == {"stored": 2}
    assert source.fetched == [] and dest.stored == []
    assert ledger.delivered_among("dest", ["a", "b"]) == set()


def test_summary_line_format() -> None:
    s = Summary()
    s.counts.update({"stored": 3, "existing": 2, "quarantined": 1, "failed": 4})
    line = s.line()
    assert line.startswith("replicated=3 skipped_existing=2 quarantined=1 failed=4 seconds=")
    float(line.rsplit("=", 1)[1])


def test_summary_line_prints_warnings_between_failed_and_seconds_only_when_non_zero() -> None:
    s = Summary(show_filtered=True)
    s.counts.update({"stored": 3, "filtered": 1})
    assert "warnings=" not in s.line()
    s.add(Outcome(InstanceRef("a"), "stored", warnings=(("d1", "B000H"), ("d2", "B007H"))))
    s.changed = 1
    line = s.line()
    assert line.startswith("replicated=4 skipped_existing=0 quarantined=0 failed=0 filtered=1 warnings=2 changed=1 "
                           "seconds="), line


class WarningDestination(FakeDestination):
    """Stores everything; odd target IDs are stored with a warning, as a C-STORE 0xB000 would be."""

    def store(self, instance: Instance) -> StoreOutcome:
        outcome = super().store(instance)
        if instance.target_id in {"b", "d"}:
            instance.warn(self.name, "warning B000H")
        return outcome


def test_a_delivery_with_a_warning_is_delivered_and_counted(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({i: i.encode() for i in ("a", "b", "c", "d")})
    warns, plain = WarningDestination("warns"), FakeDestination("plain")
    pipe = make(ledger, tmp_path, source, [warns, plain])
    summary = Summary()
    outcomes = list(pipe.stream([series_batch(["a", "b", "c", "d"])]))
    for outcome in outcomes:
        summary.add(outcome)
    pipe.close()
    assert kinds(summary) == {"stored": 4} and summary.warnings == 2
    assert sorted(o.ref.source_id for o in outcomes if o.warnings) == ["b", "d"]
    assert all(o.kind == "stored" and o.warnings == (("warns", "warning B000H"),) for o in outcomes if o.warnings)
    assert ledger.delivered_among("warns", ["a", "b", "c", "d"]) == {"a", "b", "c", "d"}
    assert "warnings=2 " in summary.line()


def test_safe_reason_strips_quoted_values() -> None:
    assert safe_reason(KeyError("SMITH")) == "KeyError: '…'"
    assert safe_reason(RuntimeError("plain")) == "RuntimeError: plain"


def test_stop_does_not_start_queued_instances(ledger: Ledger, tmp_path: Path) -> None:
    """A stop lets running instances finish but starts none of those queued behind them."""
    import time

    outcomes: list[Outcome] = []

    class StoppingSource(FakeSource):
        def fetch(self, ref: InstanceRef) -> bytes:
            # While "a" runs on the only worker, wait for "b" to be queued, then request a stop.
            deadline = time.monotonic() + 10
            while pipe._pool._work_queue.qsize() < 1 and time.monotonic() < deadline:  # type: ignore[attr-defined]
                time.sleep(0.005)
            pipe.stop()
            return super().fetch(ref)

    source = StoppingSource({i: i.encode() for i in "abcd"})
    dest = FakeDestination()
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1,
                    on_outcome=outcomes.append)
    summary = pipe.run([series_batch(list("abcd"))])
    pipe.close()
    assert source.fetched == ["a"]
    assert dest.stored == ["a"]
    by_id = {o.ref.source_id: (o.kind, o.reason) for o in outcomes}
    assert by_id.pop("a") == ("stored", "")
    assert by_id.pop("b") == ("failed", "not started: stop requested")
    assert set(by_id.values()) <= {("failed", "not started: stop requested")}  # "c" may have been queued too
    assert "d" not in by_id
    assert summary.counts["stored"] == 1 and summary.counts["failed"] == len(by_id) + 1
    assert ledger.delivered_among("dest", list("abcd")) == {"a"}
