"""The listener's own Part 10 framing gives pynetdicom's bytes, and its header-only identity pydicom's."""

from __future__ import annotations

import io
import random

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGBaseline8Bit,
    UID,
)
from pynetdicom.dsutils import create_file_meta, encode, encode_file_meta

from copydicom.endpoints.dimse._part10 import PREAMBLE, SPOOL_HEAD, dataset_identity, file_meta, spooled_identity
from copydicom.endpoints.dimse.listener import identity_of
from copydicom.model import Identity
from tests.support.synthetic import ct_dataset

SYNTAXES = [ImplicitVRLittleEndian, ExplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian]


def _dataset(odd_uid: bool = False) -> Dataset:
    ds = ct_dataset(3, 1, 2, 7, rows=16, cols=16)
    if odd_uid:
        ds.SOPInstanceUID = "1.2.3.45"  # odd length: padded with a NUL
    # A nested sequence of undefined length before the identity elements must be skipped correctly.
    item = Dataset()
    item.ReferencedSOPClassUID = ds.SOPClassUID
    item.ReferencedSOPInstanceUID = "1.2.3.4.5.6"
    ds.ReferencedImageSequence = Sequence([item])
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientID = "PAT-ÉÈ-ü"  # not ASCII: decoded with the dataset's character set
    return ds


def _body(ds: Dataset, syntax: UID) -> bytes:
    body = encode(ds, syntax.is_implicit_VR, syntax.is_little_endian, syntax.is_deflated)
    assert body is not None
    return body


def _pynetdicom_file(ds: Dataset, syntax: UID, body: bytes) -> bytes:
    """What ``Event.encoded_dataset(include_meta=True)`` returns for this request."""
    meta = create_file_meta(sop_class_uid=ds.SOPClassUID, sop_instance_uid=ds.SOPInstanceUID, transfer_syntax=syntax)
    return PREAMBLE + encode_file_meta(meta) + body


@pytest.mark.parametrize("syntax", SYNTAXES + [JPEGBaseline8Bit], ids=lambda s: s.name)
@pytest.mark.parametrize("odd_uid", [False, True])
def test_file_meta_is_byte_identical_to_pynetdicom(syntax: UID, odd_uid: bool) -> None:
    ds = _dataset(odd_uid)
    body = _body(ds, ExplicitVRLittleEndian if syntax == JPEGBaseline8Bit else syntax)
    ours = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax) + body
    assert ours == _pynetdicom_file(ds, syntax, body)
    back = dcmread(io.BytesIO(ours))
    assert back.file_meta.TransferSyntaxUID == syntax
    assert back.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
    assert back.file_meta.FileMetaInformationGroupLength == len(ours) - len(body) - 132 - 12


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_identity_from_the_header_equals_a_full_read(syntax: UID) -> None:
    ds = _dataset()
    body = _body(ds, syntax)
    expected = Identity(ds.PatientID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
    assert dataset_identity(body, syntax) == expected
    assert identity_of(file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax) + body) == expected


def test_identity_of_a_dataset_without_uids_is_empty() -> None:
    ds = Dataset()
    ds.PatientName = "NOBODY"
    ds.Rows = 2
    assert dataset_identity(_body(ds, ExplicitVRLittleEndian), ExplicitVRLittleEndian) == Identity("", "", "", "")


def test_a_uid_that_is_not_ascii_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        file_meta("1.2.840.10008.5.1.4.1.1.2", "1.2.é", ExplicitVRLittleEndian)


@pytest.mark.parametrize("syntax", SYNTAXES, ids=lambda s: s.name)
def test_spooled_identity_reads_the_head_and_equals_a_full_read(syntax: UID, tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = _dataset()
    ds.PixelData = random.Random(7).randbytes(2 * SPOOL_HEAD)  # the file is larger than what is read (deflated too)
    body = _body(ds, syntax)
    data = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax) + body
    expected = identity_of(data)
    path = tmp_path / "entry.dcm"
    path.write_bytes(data)
    assert path.stat().st_size > SPOOL_HEAD
    assert spooled_identity(path, expected.orthanc_id) == expected


def test_spooled_identity_is_none_when_it_does_not_match_the_entry_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = _dataset()
    data = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, ExplicitVRLittleEndian) + _body(ds, ExplicitVRLittleEndian)
    path = tmp_path / "entry.dcm"
    path.write_bytes(data)
    assert spooled_identity(path, "0" * 40) is None  # e.g. replaced by another instance: read in full instead


def test_spooled_identity_is_none_when_the_header_is_longer_than_the_head(tmp_path) -> None:  # type: ignore[no-untyped-def]
    ds = _dataset()
    ds.add_new(0x00091010, "OB", b"\x00" * (SPOOL_HEAD + 2))  # a private element before group 0010
    syntax = ExplicitVRLittleEndian
    data = file_meta(ds.SOPClassUID, ds.SOPInstanceUID, syntax) + _body(ds, syntax)
    expected = identity_of(data)
    path = tmp_path / "entry.dcm"
    path.write_bytes(data)
    assert spooled_identity(path, expected.orthanc_id) is None  # PatientID lies past the bytes read


@pytest.mark.parametrize("content", [b"", b"not dicom at all", PREAMBLE + b"\x02\x00\x00\x00UL\x04\x00"])
def test_spooled_identity_of_a_short_or_foreign_file_is_none(content: bytes, tmp_path) -> None:  # type: ignore[no-untyped-def]
    path = tmp_path / "entry.dcm"
    path.write_bytes(content)
    assert spooled_identity(path, "0" * 40) is None


def test_spooled_identity_of_a_removed_entry_raises(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(FileNotFoundError):
        spooled_identity(tmp_path / "gone.dcm", "0" * 40)
