"""A generated PHI-canary corpus: no planted value may survive in the output bytes."""

from __future__ import annotations

import io

import pytest
from pydicom import Dataset, dcmread
from pydicom.sequence import Sequence

from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from tests.support.synthetic import ct_dataset, to_bytes

KEY = b"canary-key-0123456789abcdef-0123"
UIDS = ["1.2.826.0.1.3680043.10.1381.777.1", "1.2.826.0.1.3680043.10.1381.777.2",
        "1.2.826.0.1.3680043.10.1381.777.3", "1.2.826.0.1.3680043.10.1381.777.4"]
TEXT = ["CANARYNAME", "CANARYID42", "CANARYACC", "CANARYDEEP", "CANARYPRIV", "CANARYSRTEXT", "CANARYSRDOC",
        "CANARYOVL", "CANARYCURVE", "CANARYINST", "CANARYDESC", "CANARYOPER", "CANARYPRIVSQ"]
DATES = ["19710304", "20240229"]


def _item(**kw: object) -> Dataset:
    d = Dataset()
    for k, v in kw.items():
        setattr(d, k, v)
    return d


def _corpus(charset: str | None) -> Dataset:
    ds = ct_dataset(3, 1, 0, 0, rows=8, cols=8)
    ds.PatientName = "CANARYNAME^PAT"
    ds.PatientID = "CANARYID42"
    ds.PatientBirthDate = DATES[0]
    ds.StudyDate = DATES[1]
    ds.AccessionNumber = "CANARYACC"
    ds.InstitutionName = "CANARYINST"
    ds.StudyDescription = "CANARYDESC"
    ds.OperatorsName = "CANARYOPER^X"
    ds.SOPInstanceUID, ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = UIDS
    # Three and more levels deep, in sequences the table does not name.
    deepest = _item(ReferringPhysicianName="CANARYDEEP^DOC", InstitutionName="CANARYDEEP HOSP",
                    ReferencedSOPInstanceUID=UIDS[0], StudyDate=DATES[1], PatientID="CANARYID42")
    level3 = _item(FrameContentSequence=Sequence([deepest]))
    level2 = _item(PlanePositionSequence=Sequence([level3]))
    ds.SharedFunctionalGroupsSequence = Sequence([_item(PixelMeasuresSequence=Sequence([level2]))])
    ds.ReferencedImageSequence = Sequence([_item(ReferencedSOPClassUID="1.2.840.10008.5.1.4.1.1.2",
                                                 ReferencedSOPInstanceUID=UIDS[1])])
    # Private blocks, including a private sequence.
    ds.add_new(0x00090010, "LO", "CANARY CORP")
    ds.add_new(0x00091001, "LO", "CANARYPRIV")
    ds.add_new(0x00091002, "SQ", Sequence([_item(PatientName="CANARYPRIVSQ^X")]))
    # SR content tree: TEXT, PNAME, DATE, UIDREF items, nested.
    pname = _item(ValueType="PNAME", PersonName="CANARYSRDOC^X")
    date = _item(ValueType="DATE", Date=DATES[0])
    uidref = _item(ValueType="UIDREF", UID=UIDS[2])
    text = _item(ValueType="TEXT", TextValue="Patient CANARYSRTEXT seen", ContentSequence=Sequence([pname, date, uidref]))
    ds.ValueType = "CONTAINER"
    ds.ContentSequence = Sequence([text])
    # Overlays and curves (retired, still found in archives).
    ds.add_new(0x60003000, "OB", b"CANARYOVL" + b"\x00" * 7)
    ds.add_new(0x60024000, "LT", "CANARYOVL comment")
    ds.add_new(0x50003000, "OB", b"CANARYCURVE\x00")
    ds.add_new(0x50002500, "LO", "CANARYCURVE label")
    if charset == "ISO 2022 IR 87":
        ds.SpecificCharacterSet = ["", "ISO 2022 IR 87"]
        ds.PatientName = "CANARYNAME^PAT=山田^太郎"
        ds.InstitutionName = "CANARYINST 山田病院"
    elif charset == "ISO_IR 192":
        ds.SpecificCharacterSet = "ISO_IR 192"
        ds.PatientName = "CANARYNAME^Jörg=ヤマダ^タロウ"
        ds.InstitutionName = "CANARYINST Müller-Klinik"
    return ds


def _needles(charset: str | None) -> list[bytes]:
    needles = [t.encode() for t in TEXT] + [u.encode() for u in UIDS] + [d.encode() for d in DATES]
    if charset == "ISO 2022 IR 87":
        needles += ["山田".encode("iso2022_jp")[3:-3], "山田病院".encode("iso2022_jp")[3:-3]]
    elif charset == "ISO_IR 192":
        needles += ["Jörg".encode(), "ヤマダ".encode(), "Müller".encode()]
    return needles


@pytest.mark.parametrize("charset", [None, "ISO 2022 IR 87", "ISO_IR 192"])
def test_no_canary_left(charset: str | None) -> None:
    data = to_bytes(_corpus(charset))
    needles = _needles(charset)
    assert all(n in data for n in needles)  # the corpus really carries them
    out = DeidStage(DeidProfile.default(), KEY).process(Instance(InstanceRef("c"), data))
    left = [n for n in needles if n in out.data]
    assert left == []
    assert all(n not in repr(out.audit).encode() for n in needles)
    again = dcmread(io.BytesIO(out.data))
    assert again.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2"
    # SR tree kept (cleaned, not dropped), references consistent with the top level.
    text = again.ContentSequence[0]
    assert text.ValueType == "TEXT" and text.TextValue == "CLEANED"
    assert [i.ValueType for i in text.ContentSequence] == ["PNAME", "DATE", "UIDREF"]
    assert text.ContentSequence[2].UID != UIDS[2]
    deep = again.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].PlanePositionSequence[0]
    assert deep.FrameContentSequence[0].ReferencedSOPInstanceUID == again.SOPInstanceUID
    assert again.ReferencedImageSequence[0].ReferencedSOPInstanceUID == str(
        DeidStage(DeidProfile.default(), KEY).uid(UIDS[1]))
    assert again.ReferencedImageSequence[0].ReferencedSOPClassUID == "1.2.840.10008.5.1.4.1.1.2"


def test_scrub_mode_removes_header_identifiers_from_sr_text() -> None:
    ds = _corpus(None)
    ds.ContentSequence[0].TextValue = "CANARYNAME PAT id CANARYID42 born 19710304, acc CANARYACC: normal"
    profile = DeidProfile(name="scrub", options=("retain_long_modified_dates", "clean_structured_content"),
                          free_text="scrub")
    out = DeidStage(profile, KEY).process(Instance(InstanceRef("c"), to_bytes(ds)))
    assert out.dataset is not None
    assert out.dataset.ContentSequence[0].TextValue == "* * id * born *, acc *: normal"
