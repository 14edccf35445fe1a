"""Malformed and unusual DICOM files for the bad-input fault test, built with pydicom.

Each builder returns the bytes of one Part 10 file derived from a small
synthetic CT (:func:`tests.support.synthetic.ct_dataset`) with one
defect or peculiarity.  Nothing here comes from a real patient.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable

import numpy as np
from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.filewriter import dcmwrite
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
)

from tests.support.synthetic import ct_dataset


def _base(name: str, rows: int = 32) -> Dataset:
    ds = ct_dataset(patient=7, study=1, series=0, instance=abs(hash(name)) % 10000, rows=rows, cols=rows,
                    seed=f"bad-{name}")
    return ds


def _write(ds: Dataset, syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = UID(syntax)
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    ds.file_meta = meta
    buf = io.BytesIO()
    little = syntax != ExplicitVRBigEndian
    dcmwrite(buf, ds, enforce_file_format=True, little_endian=little, implicit_vr=False)
    return buf.getvalue()


def _raw(ds: Dataset, group: int, element: int, vr: str, value: bytes) -> None:
    """Put an element with exactly these value bytes (no validation, as a vendor might)."""
    raw = RawDataElement(Tag(group, element), vr, len(value), value, 0, False, True)
    ds[Tag(group, element)] = raw


def missing_patient_id() -> bytes:
    ds = _base("missing-pid")
    del ds.PatientID
    return _write(ds)


def illegal_pn() -> bytes:
    ds = _base("illegal-pn")
    ds.PatientName = "DOE\x01^JO\x1bHN^^^^^^EXTRA=ONE=TWO=THREE"
    ds.ReferringPhysicianName = "\x00\x7f^" + "X" * 400
    return _write(ds)


def wrong_vr_lengths() -> bytes:
    ds = _base("vr-lengths")
    _raw(ds, 0x0008, 0x0020, "DA", b"2025011")        # DA: 8 bytes
    _raw(ds, 0x0008, 0x0060, "CS", b"COMPUTED_TOMOGRAPHY_LONG")
    _raw(ds, 0x0018, 0x0088, "DS", b"1.2345678901234567890"[:20])
    _raw(ds, 0x0028, 0x0030, "DS", b"0.5")           # odd length
    return _write(ds)


def empty_pixel_data() -> bytes:
    ds = _base("empty-pixels")
    ds.PixelData = b""
    return _write(ds)


def deflated() -> bytes:
    return _write(_base("deflated"), DeflatedExplicitVRLittleEndian)


def big_endian() -> bytes:
    ds = _base("big-endian")
    pixels = np.frombuffer(ds.PixelData, dtype="<u2")
    ds.PixelData = pixels.astype(">u2").tobytes()
    return _write(ds, ExplicitVRBigEndian)


def jpeg() -> bytes:
    """Encapsulated JPEG Baseline frames (a marker-valid stream: SOI, APP0, COM, EOI; not decoded in flight)."""
    ds = _base("jpeg")
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    frame = (b"\xff\xd8\xff\xe0\x00\x10JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
             b"\xff\xfe\x00\x0acopydicom\xff\xd9")
    ds.PixelData = encapsulate([frame])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    return _write(ds, JPEGBaseline8Bit)


def multiframe_50mb() -> bytes:
    ds = _base("multiframe", rows=512)
    frames = 100  # 512 x 512 x 2 bytes x 100 = 52,428,800 bytes
    ds.NumberOfFrames = frames
    rng = np.random.default_rng(50)
    ds.PixelData = rng.integers(0, 4096, size=(frames, 512, 512), dtype=np.uint16).tobytes()
    return _write(ds)


def private_garbage() -> bytes:
    ds = _base("private")
    block = ds.private_block(0x0011, "GARBAGE VENDOR", create=True)
    block.add_new(0x10, "OB", os.urandom(777))
    block.add_new(0x11, "LO", "")
    _raw(ds, 0x0011, 0x1011, "LO", b"\xff\x00\xfe\x01\x80\x81")
    _raw(ds, 0x0013, 0x1001, "UN", b"\x00\x01\x02\x03\x04")  # no creator
    return _write(ds)


def broken_sequence_delimiter() -> bytes:
    """A sequence of undefined length whose Sequence Delimitation Item is corrupted."""
    ds = _base("broken-seq")
    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = "113691", "DCM", "IEC Body Dosimetric Phantom"
    ds.ProcedureCodeSequence = Sequence([item])
    ds["ProcedureCodeSequence"].is_undefined_length = True
    data = _write(ds)
    delimiter = b"\xfe\xff\xdd\xe0\x00\x00\x00\x00"
    at = data.rindex(delimiter)
    return data[:at] + b"\xfe\xff\xdd\xe1\xff\xff\xff\xff" + data[at + len(delimiter):]


BAD_INPUTS: dict[str, Callable[[], bytes]] = {
    "missing-patient-id": missing_patient_id,
    "illegal-pn": illegal_pn,
    "wrong-vr-lengths": wrong_vr_lengths,
    "empty-pixel-data": empty_pixel_data,
    "deflated": deflated,
    "big-endian": big_endian,
    "jpeg": jpeg,
    "multiframe-50mb": multiframe_50mb,
    "private-garbage": private_garbage,
    "broken-sequence-delimiter": broken_sequence_delimiter,
}
