"""The listener's own Part 10 framing gives pynetdicom's bytes, and its header-only identity pydicom's."""

from __future__ import annotations

import io

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

from copydicom.endpoints.dimse._part10 import PREAMBLE, dataset_identity, file_meta
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
