"""The pipeline's filter step and rate limiter, with in-memory fakes."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from copydicom.ledger import Ledger
from copydicom.model import InstanceRef
from copydicom.pipeline import Pipeline, Summary
from copydicom.politeness import RateLimiter
from copydicom.stages.filters import DescribedRef, parse_cli_filters, parse_filter
from tests.support.synthetic import ct_dataset, to_bytes
from tests.unit.fakes import FakeDestination, FakeSource


@pytest.fixture
def ledger(tmp_path: Path) -> Iterator[Ledger]:
    led = Ledger(tmp_path / "state.db")
    yield led
    led.close()


def dicom(i: int, **tags: Any) -> bytes:
    ds = ct_dataset(0, 0, 0, i, rows=4, cols=4)
    for key, value in tags.items():
        setattr(ds, key, value)
    return to_bytes(ds)


def test_filter_decides_on_listed_attributes_then_on_the_dataset(ledger: Ledger, tmp_path: Path) -> None:
    files = {
        "ct": dicom(1),
        "mr": dicom(2, Modality="MR"),
        "ct-scout": dicom(3, ImageType=["ORIGINAL", "PRIMARY", "LOCALIZER"]),
        "unknown-ct": dicom(4),
    }
    source = FakeSource(files)
    dest = FakeDestination()
    batch = [
        DescribedRef("ct", None, None, "S", attributes={"Modality": "CT"}),
        DescribedRef("mr", None, None, "S", attributes={"Modality": "MR"}),
        DescribedRef("ct-scout", None, None, "S", attributes={"Modality": "CT"}),
        InstanceRef("unknown-ct", None, None, "S"),
    ]
    flt = parse_filter({"all": [{"Modality": "CT"}, {"not": {"ImageType": "LOCALIZER"}}]})
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=2, route_filter=flt)
    summary = pipe.run([batch])
    pipe.close()
    assert {k: v for k, v in summary.counts.items() if v} == {"stored": 2, "filtered": 2}
    assert sorted(dest.stored) == ["ct", "unknown-ct"]
    assert "mr" not in source.fetched  # decided before download
    assert ledger.delivered_among("dest", ["mr", "ct-scout"]) == set()  # filtered: not recorded
    line = summary.line()
    assert " failed=0 filtered=2 seconds=" in line


def test_describe_supplies_attributes_for_plain_refs(ledger: Ledger, tmp_path: Path) -> None:
    source = FakeSource({"a": dicom(1), "b": dicom(2, Modality="SR")})
    dest = FakeDestination()
    seen: list[list[str]] = []

    def describe(batch: list[InstanceRef]) -> list[Mapping[str, Any] | None]:
        seen.append([r.source_id for r in batch])
        return [{"Modality": "CT"} if r.source_id == "a" else {"Modality": "SR"} for r in batch]

    flt = parse_cli_filters(["Modality=SR"])
    pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", route_filter=flt,
                    describe=describe)
    summary = pipe.run([[InstanceRef("a", None, None, "S"), InstanceRef("b", None, None, "S")]])
    pipe.close()
    assert seen == [["a", "b"]]
    assert dest.stored == ["b"] and source.fetched == ["b"]
    assert summary.counts["filtered"] == 1


def test_summary_without_filter_keeps_todays_line() -> None:
    assert "filtered" not in Summary().line()


def test_rate_limiter_is_consulted_once_per_fetch(ledger: Ledger, tmp_path: Path) -> None:
    calls: list[float] = []
    clock = [0.0]

    def sleep(s: float) -> None:
        calls.append(s)
        clock[0] += s

    limiter = RateLimiter(2, burst=1, clock=lambda: clock[0], sleep=sleep)
    source = FakeSource({str(i): b"x" for i in range(5)})
    pipe = Pipeline("r", source, [], [FakeDestination()], ledger, quarantine_dir=tmp_path / "q", workers=1,
                    rate_limiter=limiter)
    summary = pipe.run([[InstanceRef(str(i)) for i in range(5)]])
    pipe.close()
    assert summary.counts["stored"] == 5
    assert len(calls) == 4 and clock[0] == pytest.approx(2.0)  # 5 fetches at 2/s after a burst of 1


def test_pipeline_waits_for_its_window_before_a_batch(ledger: Ledger, tmp_path: Path) -> None:
    import datetime as dt

    from copydicom.politeness import TimeWindow

    now = [dt.datetime(2026, 3, 2, 18, 58)]
    waits: list[float] = []
    seen_waiting: list[float | None] = []

    def sleep(seconds: float) -> None:
        seen_waiting.append(pipe.waiting_until)
        waits.append(seconds)
        now[0] += dt.timedelta(seconds=seconds)

    window = TimeWindow.parse("19:00-07:00", clock=lambda: now[0], sleep=sleep)
    source = FakeSource({"a": b"x"})
    pipe = Pipeline("r", source, [], [FakeDestination()], ledger, quarantine_dir=tmp_path / "q", window=window)
    summary = pipe.run([[InstanceRef("a")]])
    pipe.close()
    assert summary.counts["stored"] == 1
    assert waits == [60.0, 60.0]  # two minutes until 19:00, in steps
    assert seen_waiting[0] == 120.0 and pipe.waiting_until is None
