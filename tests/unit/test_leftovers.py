"""Regressions for the defects the round-2 review left open (notes/review.md, "Not fixed")."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from copydicom import registry
from copydicom.config import parse_config
from copydicom.ledger import Ledger
from copydicom.model import Destination, Instance, InstanceRef, Source, StoreOutcome
from copydicom.registry import BuildContext, EndpointConfig, EndpointType
from copydicom.routes import build_route
from tests.support.synthetic import ct_dataset, to_bytes


def deep_instance(depth: int = 100) -> bytes:
    """A valid-looking CT instance with a sequence nested ``depth`` deep (Orthanc 1.10.1 crashes on it)."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    ds = ct_dataset(8, 0, 0, 1, rows=8, cols=8)
    inner = cur = Dataset()
    for _ in range(depth):
        nxt = Dataset()
        cur.ReferencedImageSequence = Sequence([nxt])
        cur = nxt
    ds.ReferencedImageSequence = Sequence([inner])
    return to_bytes(ds)


# -- 1. every source's fetch goes through the structure check ------------------------------

HELD: dict[str, bytes] = {}
STORED: list[str] = []


class ByteConfig(EndpointConfig):
    """A source or destination type no code in copydicom knows about (a plug-in)."""

    type: str = "bytes"

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> ByteConfig:
        return cls(name=name or "bytes")


class ByteSource:
    name = "bytes"

    def batches(self) -> Iterator[list[InstanceRef]]:
        yield [InstanceRef(key) for key in sorted(HELD)]

    def fetch(self, ref: InstanceRef) -> bytes:
        return HELD[ref.source_id]

    def close(self) -> None:
        pass


class ByteDestination:
    name = "sink"

    def has(self, target_ids: Iterable[str], *, series_hint: str | None = None) -> set[str]:
        return set()

    def store(self, instance: Instance) -> StoreOutcome:
        STORED.append(instance.ref.source_id)
        return "stored"

    def close(self) -> None:
        pass


def _byte_source(config: ByteConfig, ctx: BuildContext) -> Source:
    return ByteSource()


def _byte_destination(config: ByteConfig, ctx: BuildContext) -> Destination:
    return ByteDestination()


BYTES: EndpointType[ByteConfig] = EndpointType(
    name="bytes", description="test plug-in", schemes=("bytes",), config=ByteConfig, source=_byte_source,
    destination=_byte_destination,
)


@pytest.fixture
def plugin() -> Iterator[None]:
    HELD.clear()
    STORED.clear()
    registry.register(BYTES)
    yield
    registry.unregister("bytes")


def _run_route(tmp_path: Path, source: dict[str, Any]) -> tuple[dict[str, int], Ledger]:
    config = parse_config(
        {
            "state": "state.db",
            "endpoints": {"src": source, "sink": {"type": "bytes"}},
            "routes": [{"name": "r", "source": "src", "destinations": ["sink"], "trigger": "manual"}],
        },
        base_dir=tmp_path,
    )
    ledger = Ledger(config.state)
    runtime = build_route(config.routes[0], config, ledger)
    try:
        summary = runtime.pipeline.run(runtime.source.batches())
    finally:
        runtime.close()
    return dict(summary.counts), ledger


def _quarantined_reasons(ledger: Ledger) -> list[str]:
    try:
        return [e.reason for e in ledger.quarantined()]
    finally:
        ledger.close()


def test_a_plugin_source_gets_the_structure_check_without_asking(plugin: None, tmp_path: Path) -> None:
    """The check runs for every route (one place), not in each source: a new source cannot forget it."""
    good = to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8))
    HELD.update({"deep": deep_instance(), "good": good, "cut": good[:-100]})
    counts, ledger = _run_route(tmp_path, {"type": "bytes"})
    assert STORED == ["good"]
    assert counts["quarantined"] == 2
    reasons = _quarantined_reasons(ledger)
    assert any("nest" in r for r in reasons) and any("trunc" in r or "past the end" in r for r in reasons)
    kept = sorted(p.read_bytes() for p in (tmp_path / "quarantine").rglob("*.dcm"))
    assert kept == sorted([HELD["deep"], HELD["cut"]])  # retryable: the bytes are kept


def test_s3_restore_quarantines_a_deeply_nested_object(plugin: None, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(name, "testing")
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="arch")
        client.put_object(Bucket="arch", Key="ct/1/2/3.dcm", Body=deep_instance())
        client.put_object(Bucket="arch", Key="ct/1/2/4.dcm", Body=to_bytes(ct_dataset(8, 0, 0, 2, rows=8, cols=8)))
        counts, ledger = _run_route(tmp_path, {"type": "s3", "bucket": "arch", "prefix": "ct/",
                                               "region": "us-east-1"})
    assert STORED == ["ct/1/2/4.dcm"]
    assert counts["quarantined"] == 1
    assert "nest" in _quarantined_reasons(ledger)[0]


def test_dicomweb_source_instance_is_structure_checked(tmp_path: Path) -> None:
    """The DICOMweb source, fetched through a pipeline as build_route makes it, refuses deep nesting."""
    from copydicom.endpoints.dicomweb._source import DicomwebSource
    from copydicom.pipeline import Pipeline
    from copydicom.routes import fetched_check
    from tests.unit.dicomweb.test_source_spool import FakeClient, refs
    from tests.unit.fakes import FakeDestination

    client = FakeClient(2)
    client.files[0] = deep_instance()
    source = DicomwebSource(client)  # type: ignore[arg-type]
    ledger = Ledger(tmp_path / "state.db")
    dest = FakeDestination()
    try:
        pipe = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q", workers=1,
                        check_fetched=fetched_check)
        summary = pipe.run([refs(client)])
    finally:
        ledger.close()
    assert summary.counts["quarantined"] == 1 and summary.counts["stored"] == 1
    assert len(dest.stored) == 1

