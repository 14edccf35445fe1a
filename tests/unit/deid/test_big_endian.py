"""A big endian input keeps a well-formed De-identification Method Code Sequence (found by the fault suite)."""

from __future__ import annotations

import io

import pydicom
from pydicom.uid import ExplicitVRBigEndian

from copydicom.stages.deid import DeidProfile, DeidStage
from tests.faults.bad_inputs import big_endian


def test_big_endian_output_has_a_readable_method_code_sequence() -> None:
    stage = DeidStage(DeidProfile.from_mapping("p", {}, where="p"), b"k" * 32)
    original = pydicom.dcmread(io.BytesIO(big_endian()))
    out, _ = stage.deidentify_dataset(original)
    check = pydicom.dcmread(io.BytesIO(stage._write(out)))
    assert check.file_meta.TransferSyntaxUID == ExplicitVRBigEndian
    codes = [(item.CodeValue, item.CodingSchemeDesignator) for item in check.DeidentificationMethodCodeSequence]
    assert codes[0] == ("113100", "DCM")
    assert all(value.isdigit() and scheme == "DCM" for value, scheme in codes)
    assert check.pixel_array.tobytes() == original.pixel_array.tobytes()
