"""Tests of copydicom.stages.flatten."""

from __future__ import annotations

import io
import json

import pydicom
import pytest
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian

from copydicom.errors import InvalidInstance
from copydicom.model import Instance, InstanceRef
from copydicom.stages.flatten import FlattenStage, flatten


def raw(tag: int, vr: str, value: bytes) -> RawDataElement:
    return RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def make_ds() -> Dataset:
    ds = Dataset()
    ds.PatientName = "Doe^Jane"
    ds.StudyDate = "20240131"
    ds.StudyTime = "101530.123456"
    ds.AcquisitionDateTime = "20240131101530.5+0100"
    ds.SeriesNumber = "997"
    ds.SliceThickness = "2.5"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    ds.PixelSpacing = ["0.5", "0.75"]
    ds.Rows = 512
    ds.FrameIncrementPointer = 0x00181063
    ds.StudyDescription = "X" * 300
    ds.ReferencedImageSequence = Sequence([Dataset(), Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.3"
    ds.ReferencedImageSequence[1].ReferencedSOPInstanceUID = "1.2.4"
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00190011, "LO", "SIEMENS CT VA0")
    ds.add_new(0x00191002, "SL", 7)
    ds.add_new(0x00191003, "DS", "1.5")
    ds.add_new(0x00191110, "DS", "2.5")
    ds.PixelData = b"\x00\x01" * 8
    ds.add_new(0x00091001, "OB", b"\x01\x02\x03\x04")
    return ds


def test_keyword_scheme_types_values() -> None:
    out = flatten(make_ds())
    assert out["PatientName"] == "Doe^Jane"
    assert out["StudyDate"] == "2024-01-31"
    assert out["StudyTime"] == "10:15:30.123456"
    assert out["AcquisitionDateTime"] == "2024-01-31T10:15:30.5+01:00"
    assert out["SeriesNumber"] == 997
    assert out["SliceThickness"] == 2.5
    assert out["ImageType"] == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert out["PixelSpacing"] == [0.5, 0.75]
    assert out["Rows"] == 512
    assert out["FrameIncrementPointer"] == "0018,1063"
    assert out["StudyDescription"] == "X" * 300
    assert out["ReferencedImageSequence"] == [
        {"ReferencedSOPInstanceUID": "1.2.3"},
        {"ReferencedSOPInstanceUID": "1.2.4"},
    ]
    assert out["PixelData"] == {"BinaryData": {"vr": "OB", "length": 16}}
    json.dumps(out)  # JSON-able


def test_private_tags_keep_creator_and_never_collapse() -> None:
    out = flatten(make_ds())
    assert out["0019,0010"] == "GEMS_ACQU_01"
    assert out["0019,0011"] == "SIEMENS CT VA0"
    assert out["0019,1002"] == {"creator": "GEMS_ACQU_01", "vr": "SL", "value": 7}
    assert out["0019,1003"] == {"creator": "GEMS_ACQU_01", "vr": "DS", "value": 1.5}
    assert out["0019,1110"] == {"creator": "SIEMENS CT VA0", "vr": "DS", "value": 2.5}
    assert out["0009,1001"] == {"creator": None, "vr": "OB", "value": {"BinaryData": {"vr": "OB", "length": 4}}}


def test_private_creator_lookup() -> None:
    ds = Dataset()
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00190011, "LO", "OTHER")
    ds.add_new(0x00191002, "DS", "3")
    ds.add_new(0x00191102, "DS", "4")
    out = flatten(ds)
    assert out == {
        "0019,0010": "GEMS_ACQU_01",
        "0019,0011": "OTHER",
        "0019,1002": {"creator": "GEMS_ACQU_01", "vr": "DS", "value": 3.0},
        "0019,1102": {"creator": "OTHER", "vr": "DS", "value": 4.0},
    }


def test_tag_and_spaceless_schemes() -> None:
    ds = Dataset()
    ds.PatientName = "A^B"
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2"
    assert flatten(ds, "tag") == {"0010,0010": "A^B", "0008,1140": [{"0008,1155": "1.2"}]}
    assert flatten(ds, "spaceless") == {
        "PatientsName": "A^B",
        "ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2"}],
    }
    with pytest.raises(ValueError):
        flatten(ds, "bogus")


def test_invalid_numbers_keep_raw_string_and_empty_is_none() -> None:
    ds = Dataset()
    ds._dict[Tag(0x00180050)] = raw(0x00180050, "DS", b"10.50/ 15.00")
    ds._dict[Tag(0x00200011)] = raw(0x00200011, "IS", b"12a ")
    ds._dict[Tag(0x00181150)] = raw(0x00181150, "IS", b"1.6e-005")
    ds._dict[Tag(0x00280030)] = raw(0x00280030, "DS", b"1.6e-005\\0.5 ")
    ds.StudyDate = ""
    ds.StudyTime = "1015"
    ds.AccessionNumber = None
    out = flatten(ds)
    assert out["SliceThickness"] == "10.50/ 15.00"
    assert out["SeriesNumber"] == "12a"
    assert out["ExposureTime"] == "1.6e-005"
    assert out["PixelSpacing"] == [1.6e-05, 0.5]
    assert out["StudyDate"] is None
    assert out["StudyTime"] == "10:15"
    assert out["AccessionNumber"] is None


def test_round_trip_implicit_vr_file_with_character_set() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "Müller^Jürgen"
    ds.SeriesNumber = "3"
    ds.add_new(0x00190010, "LO", "GEMS_ACQU_01")
    ds.add_new(0x00191002, "SL", 7)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, implicit_vr=True, little_endian=True, enforce_file_format=False)
    read = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
    out = flatten(read)
    assert out["PatientName"] == "Müller^Jürgen"
    assert out["SeriesNumber"] == 3
    # Implicit VR and no private dictionary entry: the bytes are marked as UN binary.
    assert out["0019,1002"]["creator"] == "GEMS_ACQU_01"
    assert out["0019,1002"]["vr"] in ("SL", "UN")


def test_include_meta_and_stage() -> None:
    ds = Dataset()
    ds.SOPInstanceUID = "1.2.3"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3"
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    out = flatten(ds, include_meta=True)
    assert out["FileMetaInformation"]["TransferSyntaxUID"] == "1.2.840.10008.1.2.1"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    inst = Instance(InstanceRef("x"), buf.getvalue())
    assert FlattenStage().process(inst) is inst
    assert inst.documents == []
    with pytest.raises(InvalidInstance):
        FlattenStage().process(Instance(InstanceRef("bad"), b""))


def test_fast_path_matches_pydicom_values() -> None:
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.PatientName = "Ödön^Zoë"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows = 64
    ds.add_new(0x00280106, "US", 0)  # SmallestImagePixelValue
    ds.WindowCenter = ["40", "400"]
    ds.add_new(0x00189306, "FD", 1.5)  # SingleCollimationWidth
    ds.add_new(0x00181310, "US", [0, 64, 64, 0])  # AcquisitionMatrix
    ds.StudyComments = "line one\r\nline two  "
    ds.ReferencedImageSequence = Sequence([Dataset()])
    ds.ReferencedImageSequence[0].ReferencedSOPInstanceUID = "1.2.5"
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=False)
    read = pydicom.dcmread(io.BytesIO(buf.getvalue()), force=True)
    out = flatten(read)
    assert out == {
        "SpecificCharacterSet": "ISO_IR 192",
        "ImageType": ["ORIGINAL", "PRIMARY"],
        "SOPInstanceUID": "1.2.3.4",
        "StudyComments": "line one\r\nline two",
        "PatientName": "Ödön^Zoë",
        "SingleCollimationWidth": 1.5,
        "AcquisitionMatrix": [0, 64, 64, 0],
        "Rows": 64,
        "SmallestImagePixelValue": 0,
        "WindowCenter": [40.0, 400.0],
        "ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2.5"}],
    }
    assert flatten(read) == flatten(ds)  # raw (fast) and converted (in-memory) paths agree


def test_human_scheme_uses_the_standards_names_and_keeps_private_tags_by_number() -> None:
    from pydicom.dataset import Dataset

    from copydicom.stages.flatten import flatten

    ds = Dataset()
    ds.PatientName = "DOE^JANE"
    ds.add_new(0x00091010, "LO", "vendor value")
    ds.add_new(0x00090010, "LO", "ACME 1.0")
    out = flatten(ds, "human")
    assert out["Patient's Name"] == "DOE^JANE"
    assert out["0009,1010"]["creator"] == "ACME 1.0" and "0009,0010" in out
    assert flatten(ds, "spaceless")["PatientsName"] == "DOE^JANE"
