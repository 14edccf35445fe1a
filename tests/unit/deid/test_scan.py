"""Risk scan findings: kinds and tag paths, never values."""

from __future__ import annotations

from pydicom import Dataset
from pydicom.sequence import Sequence

from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage, scan_dataset
from tests.support.synthetic import ct_dataset, to_bytes


def test_scan_reports_each_kind() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    ds.add_new(0x00090010, "LO", "VENDOR")
    ds.add_new(0x00091001, "LO", "free text")
    item = Dataset()
    item.PersonName = "NESTED^NAME"
    ds.add_new(0x0040A730, "SQ", Sequence([item]))
    found = {(f.path, f.kind) for f in scan_dataset(ds)}
    assert ("(0010,0020)", "PatientID is not a pseudonym") in found
    assert ("(0010,0010)", "person name") in found
    assert ("(0040,A730)>(0040,A123)", "person name") in found
    assert ("(0009,1001)", "private attribute with text") in found
    assert ("(0008,0020)", "date not shifted") in found
    assert ("(0008,0050)", "identifier") in found
    assert ("(0008,1030)", "free text") in found
    assert all("SYN" not in str(f) and "DOE" not in str(f) for f in scan_dataset(ds))


def test_scan_of_default_output_is_clean() -> None:
    out = DeidStage(DeidProfile.default(), b"scan-key-0123456789abcdef-012345").process(
        Instance(InstanceRef("s"), to_bytes(ct_dataset(1, rows=8, cols=8))))
    assert out.dataset is not None
    assert scan_dataset(out.dataset) == []
