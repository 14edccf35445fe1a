"""Issue 16: conformance defects found on public files, each a regression test."""

from __future__ import annotations

import pytest
from pydicom import Dataset
from pydicom.sequence import Sequence

from copydicom.errors import InvalidInstance
from copydicom.model import Identity, Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage, scan_dataset
from tests.support.synthetic import ct_dataset, to_bytes


def bare_bytes(ds: Dataset) -> bytes:
    """A dataset without Part 10 header, implicit VR little endian (a C-STORE payload)."""
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset

    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = True
    write_dataset(fp, ds)
    return fp.getvalue()

KEY = b"defects16-key-0123456789abcdef01"
ALL = [
    DeidProfile.default(),
    DeidProfile(name="basic", options=()),
    DeidProfile(name="scrub", free_text="scrub"),
    DeidProfile.named("hipaa_safe_harbor"),
]


def _specimen_ds() -> Dataset:
    ds = ct_dataset(3, rows=8, cols=8)
    ds.AccessionNumber = "S24-01234"
    step_items = []
    for text in ("S24-01234", "container C-778812 fixed", "Formalin", "block of SYNTHETIC0003 tissue"):
        ci = Dataset()
        ci.ValueType = "TEXT"
        ci.TextValue = text
        step_items.append(ci)
    step = Dataset()
    step.SpecimenPreparationStepContentItemSequence = Sequence(step_items)
    spec = Dataset()
    spec.SpecimenIdentifier = "SPEC-99812"
    spec.SpecimenUID = "1.2.3.4.5.6"
    spec.SpecimenPreparationSequence = Sequence([step])
    spec.SpecimenShortDescription = "SPEC-99812"
    ds.SpecimenDescriptionSequence = Sequence([spec])
    ds.ContainerIdentifier = "C-778812"
    ds.ImageComments = "ok"
    ds.SoftwareVersions = ["V1", "S24-01234"]  # kept by every profile: an identifier copied in
    return ds


@pytest.mark.parametrize("profile", ALL, ids=lambda p: p.name)
def test_identifiers_copied_into_nested_text_are_replaced(profile: DeidProfile) -> None:
    out, audit = DeidStage(profile, KEY).deidentify_dataset(_specimen_ds())
    texts = []

    def walk(d: Dataset) -> None:
        for e in d:
            if e.VR == "SQ":
                for it in e.value:
                    walk(it)
            elif e.VR in ("LO", "SH", "ST", "LT", "UT", "UC"):
                texts.append(str(e.value))

    walk(out)
    blob = "|".join(texts)
    for ident in ("S24-01234", "C-778812", "SPEC-99812", "SYNTHETIC0003"):
        assert ident not in blob, (profile.name, ident)
    if profile.free_text == "scrub" and out.get("SpecimenDescriptionSequence"):
        steps = out.SpecimenDescriptionSequence[0].SpecimenPreparationSequence[0]
        values = [i.TextValue for i in steps.SpecimenPreparationStepContentItemSequence]
        assert values[2] == "Formalin"  # scrubbed text without an identifier stays
    assert ["(0018,1020)", "C(identifier)"] in audit


def test_private_only_removes_no_identifier() -> None:
    profile = DeidProfile.named("private_only")
    assert profile is not None
    ds = _specimen_ds()
    ds.add_new(0x00090010, "LO", "VENDOR")
    ds.add_new(0x00091001, "LO", "private text")
    out = DeidStage(profile, KEY).process(Instance(InstanceRef("p"), to_bytes(ds)))
    assert out.dataset is not None
    steps = out.dataset.SpecimenDescriptionSequence[0].SpecimenPreparationSequence[0]
    assert steps.SpecimenPreparationStepContentItemSequence[0].TextValue == "S24-01234"
    assert out.dataset.PatientID == "SYN000003" and out.dataset.AccessionNumber == "S24-01234"
    assert [e for e in out.dataset if e.tag.is_private] == []
    assert "PatientIdentityRemoved" not in out.dataset


def test_d_on_type1_sequence_keeps_one_item_of_dummies() -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    obs = Dataset()
    obs.VerifyingObserverName = "SMITH^JANE"
    obs.VerifyingOrganization = "EXAMPLE HOSPITAL"
    obs.VerificationDateTime = "20240102101010"
    code = Dataset()
    code.CodeValue = "1234"
    code.CodingSchemeDesignator = "L"
    code.CodeMeaning = "SMITH JANE"
    obs.VerifyingObserverIdentificationCodeSequence = Sequence([code])
    ds.VerifyingObserverSequence = Sequence([obs, obs])
    ds.VerificationFlag = "VERIFIED"
    out, audit = DeidStage(DeidProfile.default(), KEY).deidentify_dataset(ds)
    seq = out.VerifyingObserverSequence
    assert len(seq) == 1 and ["(0040,A073)", "D"] in audit
    item = seq[0]
    assert item.VerifyingObserverName == "ANONYMOUS"
    assert item.VerifyingOrganization == "ANONYMIZED"
    assert item.VerificationDateTime == "19000101000000"
    assert item.VerifyingObserverIdentificationCodeSequence[0].CodeMeaning == "ANONYMIZED"
    assert "SMITH" not in str(out)


@pytest.mark.parametrize("options", [(), ("clean_graphics",)])
def test_overlay_group_removed_whole(options: tuple[str, ...]) -> None:
    ds = ct_dataset(1, rows=8, cols=8)
    for group in (0x6000, 0x6002):
        ds.add_new((group << 16) | 0x0010, "US", 8)
        ds.add_new((group << 16) | 0x0011, "US", 8)
        ds.add_new((group << 16) | 0x0040, "CS", "G")
        ds.add_new((group << 16) | 0x0050, "SS", [1, 1])
        ds.add_new((group << 16) | 0x0100, "US", 1)
        ds.add_new((group << 16) | 0x0102, "US", 0)
        ds.add_new((group << 16) | 0x3000, "OW", b"\xff" * 8)
    stage = DeidStage(DeidProfile(options=options), KEY)
    out = stage.process(Instance(InstanceRef("o"), to_bytes(ds)))
    assert out.dataset is not None
    assert [e.tag for e in out.dataset if e.tag.group & 0xFF00 == 0x6000] == []


def test_empty_patient_ids_never_share_a_pseudonym() -> None:
    stage = DeidStage(DeidProfile.default(), KEY)
    outs = []
    for patient, pid in ((1, ""), (2, ""), (3, "   ")):
        ds = ct_dataset(patient, rows=8, cols=8)
        ds.PatientID = pid
        outs.append(stage.process(Instance(InstanceRef(str(patient)), to_bytes(ds))))
    pids = [o.dataset.PatientID for o in outs if o.dataset is not None]
    assert len(set(pids)) == 3 and all(p.startswith("ANON") for p in pids)
    dates = [o.dataset.StudyDate for o in outs if o.dataset is not None]
    assert dates[0] != dates[1] or pids[0] != pids[1]
    # Same study, same subject: the pseudonym is stable per study, and the prediction agrees.
    ds = ct_dataset(1, instance=5, rows=8, cols=8)
    ds.PatientID = ""
    again = stage.process(Instance(InstanceRef("again"), to_bytes(ds)))
    assert again.dataset is not None and again.dataset.PatientID == pids[0]
    predicted = stage.transform_identity(Identity("", ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID))
    assert predicted.patient_id == pids[0]


def test_empty_patient_id_with_patient_map_quarantine_policy() -> None:
    from copydicom.errors import DeidentificationError
    from copydicom.stages.deid import PatientMap

    pmap = PatientMap(path="x.csv", missing="quarantine", ids={"SYN000001": "R1"})
    stage = DeidStage(DeidProfile(patient_map=pmap), KEY)
    ds = ct_dataset(1, rows=8, cols=8)
    ds.PatientID = ""
    with pytest.raises(DeidentificationError, match="PatientID empty"):
        stage.process(Instance(InstanceRef("e"), to_bytes(ds)))


def test_missing_sop_instance_uid_refused_with_reason() -> None:
    stage = DeidStage(DeidProfile.default(), KEY)
    ds = ct_dataset(1, rows=8, cols=8)
    ds.SOPInstanceUID = ""
    with pytest.raises(InvalidInstance, match=r"SOP Instance UID \(0008,0018\) missing"):
        stage.deidentify_dataset(ds)
    del ds.SOPInstanceUID
    with pytest.raises(InvalidInstance, match=r"SOP Instance UID \(0008,0018\) missing"):
        stage.process(Instance(InstanceRef("m"), bare_bytes(ds)))


def test_rich_output_scans_clean() -> None:
    ds = _specimen_ds()
    item = Dataset()
    item.ValueType = "PNAME"
    item.PersonName = "NESTED^PERSON"
    text = Dataset()
    text.ValueType = "TEXT"
    text.TextValue = "seen by NESTED"
    ds.ContentSequence = Sequence([item, text])
    ds.OperatorsName = "OPERATOR^ONE"
    ds.ReferencedSOPInstanceUID = "1.2.3.999"
    ds.add_new(0x00091001, "LO", "private")
    ds.add_new(0x00090010, "LO", "VENDOR")
    ds.add_new(0x60000010, "US", 8)
    out = DeidStage(DeidProfile.default(), KEY).process(Instance(InstanceRef("r"), to_bytes(ds)))
    assert out.dataset is not None
    assert [str(f) for f in scan_dataset(out.dataset)] == []
