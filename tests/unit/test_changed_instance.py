"""Pipeline policy for an instance whose content changed at the source after delivery (issue 11 item 3).

Fakes here; the real Orthanc scenario (``OverwriteInstances: true``) is tests/integration/test_changed_instance.py.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from copydicom.ledger import Ledger
from copydicom.model import Instance, InstanceRef, StoreOutcome
from copydicom.observability import Metrics
from copydicom.pipeline import Pipeline
from tests.unit.fakes import FakeDestination, FakeSource

ID = "11111111-22222222-33333333-44444444-55555555"


class DigestSource(FakeSource):
    """A source that tells the MD5 of what it holds (as Orthanc's ``/attachments/dicom/md5``)."""

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.md5_asked: list[str] = []

    def content_md5(self, ref: InstanceRef) -> str | None:
        self.md5_asked.append(ref.source_id)
        return hashlib.md5(self.files[ref.source_id]).hexdigest()


class ReplacingDestination(FakeDestination):
    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.replaced: list[bytes] = []

    def replace(self, instance: Instance) -> StoreOutcome:
        self.replaced.append(instance.data)
        return "stored"


def _run(tmp_path: Path, policy: str) -> tuple[DigestSource, ReplacingDestination, list[str], Metrics]:
    ledger = Ledger(tmp_path / "state.db")
    source = DigestSource({ID: b"version 1"})
    dest = ReplacingDestination("d")
    metrics = Metrics()
    pipeline = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q",  # type: ignore[list-item]
                        on_changed=policy,  # type: ignore[arg-type]
                        on_outcome=lambda o: metrics.observe_outcome("r", o))
    lines = []
    try:
        lines.append(pipeline.run([[InstanceRef(ID, seq=1)]]).line())
        lines.append(pipeline.run([[InstanceRef(ID, seq=2)]]).line())  # announced again, same bytes
        source.files[ID] = b"version 2"
        lines.append(pipeline.run([[InstanceRef(ID, seq=3)]]).line())  # announced again, new bytes
        lines.append(pipeline.run([[InstanceRef(ID)]]).line())  # a listing (no change feed): not asked
    finally:
        pipeline.close()
        ledger.close()
    return source, dest, lines, metrics


def test_report_counts_and_keeps(tmp_path: Path) -> None:
    source, dest, lines, metrics = _run(tmp_path, "report")
    assert lines[0].startswith("replicated=1 skipped_existing=0")
    assert lines[1].startswith("replicated=0 skipped_existing=1") and "changed=" not in lines[1]
    assert lines[2].startswith("replicated=0 skipped_existing=1 quarantined=0 failed=0 changed=1 seconds=")
    assert "changed=" not in lines[3]
    assert dest.stored == [ID] and dest.replaced == []
    assert source.md5_asked == [ID, ID]  # only for announced, delivered instances
    assert metrics.value("copydicom_changed_instances_total", {"route": "r", "action": "kept"}) == 1
    ledger = Ledger(tmp_path / "state.db")
    assert ledger.counts()["r"] == {"changed": 1}
    ledger.close()


def test_resend_replaces(tmp_path: Path) -> None:
    _, dest, lines, metrics = _run(tmp_path, "resend")
    assert lines[2].startswith("replicated=1 skipped_existing=0 quarantined=0 failed=0 changed=1 seconds=")
    assert dest.replaced == [b"version 2"]
    assert metrics.value("copydicom_changed_instances_total", {"route": "r", "action": "replaced"}) == 1
    ledger = Ledger(tmp_path / "state.db")
    assert ledger.delivered_md5("d", [ID]) == {ID: hashlib.md5(b"version 2").hexdigest()}
    ledger.close()


@pytest.mark.parametrize("policy", ["report", "resend"])
def test_a_source_that_cannot_tell_is_not_asked(tmp_path: Path, policy: str) -> None:
    ledger = Ledger(tmp_path / "state.db")
    source = FakeSource({ID: b"v1"})
    dest = FakeDestination("d")
    pipeline = Pipeline("r", source, [], [dest], ledger, quarantine_dir=tmp_path / "q",  # type: ignore[list-item]
                        on_changed=policy)  # type: ignore[arg-type]
    try:
        pipeline.run([[InstanceRef(ID, seq=1)]])
        source.files[ID] = b"v2"
        assert pipeline.run([[InstanceRef(ID, seq=2)]]).changed == 0
    finally:
        pipeline.close()
        ledger.close()
