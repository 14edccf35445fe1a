"""The fast Part 10 writer gives the same dataset as pydicom's writer, in both little-endian syntaxes."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from copydicom.errors import InvalidInstance
from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from tests.support.synthetic import ct_dataset, to_bytes

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


def test_in_memory_dataset_and_bare_dataset_inputs() -> None:
    stage = DeidStage(DeidProfile.default(), KEY)
    ds = ct_dataset(3, rows=8, cols=8)
    from_memory = stage.process(Instance(InstanceRef("m"), b"", dataset=ct_dataset(3, rows=8, cols=8)))
    bare = io.BytesIO()
    ct_dataset(3, rows=8, cols=8).save_as(bare, implicit_vr=True, little_endian=True)
    from_bare = stage.process(Instance(InstanceRef("b"), bare.getvalue()))
    from_file = stage.process(Instance(InstanceRef("f"), to_bytes(ds)))
    assert from_memory.identity == from_bare.identity == from_file.identity
    again = dcmread(io.BytesIO(from_bare.data))
    assert again.PixelData == ds.PixelData and again.PatientID == from_file.identity.patient_id  # type: ignore[union-attr]
    with pytest.raises(InvalidInstance):
        stage.process(Instance(InstanceRef("t"), to_bytes(ds)[:400]))
