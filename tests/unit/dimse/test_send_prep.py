"""What the C-STORE destination and the Q/R source read before any network: file meta, identity, config."""

from __future__ import annotations

import io

import pytest
from pydicom import dcmread
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_file_meta_info

from copydicom.endpoints.dimse import DimseConfig
from copydicom.endpoints.dimse.scu import identity_of, read_file_meta
from copydicom.errors import ConfigError, InvalidInstance
from tests.support.synthetic import ct_study_files


def one_file() -> bytes:
    return next(iter(ct_study_files(1, rows=8, cols=8, seed="prep")))


def test_file_meta_gives_the_uids_and_where_the_data_set_starts() -> None:
    data = one_file()
    ds = dcmread(io.BytesIO(data))
    meta = read_file_meta(data)
    assert (meta.sop_class, meta.sop_instance) == (ds.SOPClassUID, ds.SOPInstanceUID)
    assert meta.transfer_syntax == ds.file_meta.TransferSyntaxUID
    # The data set starts right after group 0002: its first element is of a later group, little endian.
    group = int.from_bytes(data[meta.offset:meta.offset + 2], "little")
    assert group > 2 and group == min(elem.tag.group for elem in ds)


def test_file_meta_without_sop_uids_leaves_them_empty_for_the_caller_to_decode() -> None:
    data = one_file()
    ds = dcmread(io.BytesIO(data))
    meta = ds.file_meta
    del meta.MediaStorageSOPClassUID
    del meta.MediaStorageSOPInstanceUID
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=False)
    rest = data[read_file_meta(data).offset:]
    found = read_file_meta(head.getvalue() + rest)
    assert (found.sop_class, found.sop_instance) == ("", "") and found.transfer_syntax


@pytest.mark.parametrize("data", [b"", b"not dicom at all" * 20, b"\0" * 128 + b"DICM"])
def test_not_part10_is_invalid(data: bytes) -> None:
    with pytest.raises(InvalidInstance):
        read_file_meta(data)


def test_identity_from_the_header() -> None:
    data = one_file()
    ds = dcmread(io.BytesIO(data))
    identity = identity_of(data)
    assert (identity.study_uid, identity.series_uid, identity.sop_uid) == (
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)


def test_retrieve_level_and_spool_settings() -> None:
    cfg = DimseConfig.from_url("dicom://PACS@127.0.0.1:104", name="p")
    assert cfg.retrieve_level == "series" and cfg.retrieve_spool is None and cfg.retrieve_spool_limit == 1 << 30
    assert DimseConfig.from_url("dicom://PACS@127.0.0.1:104?retrieve_level=image", name="p").retrieve_level == "image"
    with pytest.raises(ConfigError, match="retrieve_level"):
        DimseConfig.from_url("dicom://PACS@127.0.0.1:104?retrieve_level=study", name="p")
    with pytest.raises(ConfigError, match="retrieve_spool_limit"):
        DimseConfig.from_mapping("p", {"type": "dimse", "called_aet": "P", "host": "127.0.0.1", "port": 104,
                                       "retrieve_spool_limit": 0}, where="endpoints.p")
