"""The stage's own reader (one structure walk) gives the same output bytes as pydicom's dcmread."""

from __future__ import annotations

import io

import pytest
from pydicom import Dataset, dcmread
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from copydicom.stages.structure import read_fast
from tests.support.synthetic import ct_dataset, to_bytes
from tests.unit.deid.test_defects16 import _specimen_ds
from tests.unit.dose import builder as b

KEY = b"fast-read-key-0123456789abcdef01"


def _with_ts(ds: Dataset, ts: str) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ts
    ds.file_meta = meta
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _rich() -> Dataset:
    ds = _specimen_ds()
    item = Dataset()
    item.ValueType = "PNAME"
    item.PersonName = "NESTED^PERSON"
    inner = Dataset()
    inner.ReferencedSOPInstanceUID = "1.2.3.4.99"
    item.ReferencedSOPSequence = Sequence([inner])
    ds.ContentSequence = Sequence([item])
    ds.add_new(0x00091001, "LO", "private")
    ds.add_new(0x00090010, "LO", "VENDOR")
    ds.OtherPatientIDs = ["X1", "X2"]
    return ds


def _cases() -> list[tuple[str, bytes]]:
    rle = ct_dataset(2, rows=8, cols=8)
    rle.PixelData = encapsulate([b"\x00" * 64, b"\x01" * 64])
    rle["PixelData"].VR = "OB"
    rle.NumberOfFrames = 2
    sr = b.ct_report([b.ct_event("1.2.3.1"), b.ct_event("1.2.3.2")], n_events="2")
    return [
        ("ct explicit", to_bytes(ct_dataset(1, rows=8, cols=8))),
        ("rich explicit", _with_ts(_rich(), ExplicitVRLittleEndian)),
        ("rich implicit", _with_ts(_rich(), ImplicitVRLittleEndian)),
        ("rle encapsulated", _with_ts(rle, RLELossless)),
        ("dose sr", b.to_bytes(sr)),
    ]


@pytest.mark.parametrize("name,data", _cases(), ids=[c[0] for c in _cases()])
def test_fast_reader_output_is_byte_identical(name: str, data: bytes) -> None:
    fast = read_fast(data)
    assert fast is not None
    slow = dcmread(io.BytesIO(data))
    assert [int(t) for t in fast.keys()] == [int(t) for t in slow.keys()]
    stage = DeidStage(DeidProfile(name="t", accept_pixel_risk=True), KEY)
    via_fast = stage.process(Instance(InstanceRef("f"), data)).data
    via_dcmread = stage.process(Instance(InstanceRef("s"), data, dataset=slow)).data
    assert via_fast == via_dcmread


@pytest.mark.parametrize("size", [32, 8224])  # 0x0020 and 0x2020: binary values that look like blanks
def test_validation_gate_reads_binary_values_as_binary(size: int) -> None:
    ds = ct_dataset(1, rows=size, cols=2)
    out = DeidStage(DeidProfile.default(), KEY).process(Instance(InstanceRef("v"), to_bytes(ds)))
    assert out.dataset is not None and out.dataset.Rows == size
