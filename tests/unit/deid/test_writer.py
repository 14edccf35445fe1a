"""The fast Part 10 writer gives the same dataset as pydicom's writer, in both little-endian syntaxes."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from copydicom.testbench.synthetic import ct_dataset, to_bytes

KEY = b"writer-key-0123456789abcdef-0123"


@pytest.mark.parametrize("ts", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
def test_fast_writer_matches_pydicom(ts: str) -> None:
    ds = ct_dataset(2, rows=16, cols=16)
    data = to_bytes(ds)
    if ts == ImplicitVRLittleEndian:
        parsed = dcmread(io.BytesIO(data))
        parsed.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        buffer = io.BytesIO()
        parsed.save_as(buffer, implicit_vr=True, little_endian=True)
        data = buffer.getvalue()
    out = DeidStage(DeidProfile.default(), KEY).process(Instance(InstanceRef("w"), data))
    assert out.dataset is not None
    fast = dcmread(io.BytesIO(out.data))
    assert fast.file_meta.TransferSyntaxUID == ts
    reference = io.BytesIO()
    out.dataset.save_as(reference, enforce_file_format=True)
    slow = dcmread(io.BytesIO(reference.getvalue()))
    assert [(e.tag, e.VR, e.value) for e in fast] == [(e.tag, e.VR, e.value) for e in slow]
    assert fast.PixelData == ds.PixelData
    assert [i.CodeValue for i in fast.DeidentificationMethodCodeSequence] == ["113100", "113107", "113104"]
