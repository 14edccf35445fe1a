from __future__ import annotations

from copydicom.model import Identity, Instance, InstanceRef, orthanc_id
from copydicom.stages.dose import DoseStage
from copydicom.stages.index_docs import IndexDocumentsStage
from tests.support.synthetic import ct_dataset, to_bytes
from tests.unit.dose import builder as b


def test_stage_builds_instance_and_dose_documents() -> None:
    ds = ct_dataset(1, 1, 1, 1, rows=8, cols=8)
    ident = Identity.from_dataset(ds)
    inst = Instance(InstanceRef(ident.orthanc_id, series_id="series-x"), to_bytes(ds))
    out = IndexDocumentsStage("r", deidentified=False).process(inst)
    assert [d["doc_type"] for d in out.documents] == ["instance"]
    doc = out.documents[0]
    assert (doc["_id"], doc["ID"], doc["ParentSeries"], doc["route"]) == (ident.orthanc_id, ident.orthanc_id,
                                                                          "series-x", "r")
    assert doc["ParentStudy"] == orthanc_id(ident.patient_id, ident.study_uid)
    assert doc["ParentPatient"] == orthanc_id(ident.patient_id)
    assert doc["Modality"] == "CT"

    report = b.reread(b.ct_report([b.ct_event("1.2.3.9", protocol="Head")]))
    rinst = Instance(InstanceRef("rdsr-src"), b.to_bytes(report))
    rinst = DoseStage().process(rinst)
    rinst = IndexDocumentsStage("r", deidentified=True).process(rinst)
    types = [d["doc_type"] for d in rinst.documents]
    assert types == ["irradiation_event", "dose_summary", "instance"]
    event = rinst.documents[0]
    sent = Identity.from_dataset(report).orthanc_id  # a de-identifying route names what was sent, not the source
    assert (event["ID"], event["route"], event["deidentified"], event["protocol"]) == (sent, "r", True, "Head")
    # running it again neither re-wraps nor duplicates documents
    again = IndexDocumentsStage("r", deidentified=True).process(rinst)
    assert [d["doc_type"] for d in again.documents] == ["irradiation_event", "dose_summary", "instance"]


def _deidentified_documents(*, source_ids: bool) -> tuple[list[dict[str, object]], Identity, Instance]:
    from copydicom.stages.deid import DeidProfile, DeidStage

    report = b.reread(b.ct_report([b.ct_event("1.2.3.9", protocol="Head")]))
    source = Identity.from_dataset(report)
    ref = InstanceRef(source.orthanc_id, identity=source, series_id=source.series_orthanc_id)
    inst = Instance(ref, b.to_bytes(report), identity=source)
    out = DeidStage(DeidProfile.default(), b"index-ids-key-0123456789abcdef-01").process(inst)
    out = DoseStage().process(out)
    out = IndexDocumentsStage("r", deidentified=True, source_ids=source_ids).process(out)
    return out.documents, source, out


def test_deidentified_documents_carry_only_the_deidentified_ids() -> None:
    """Regression (issue 11 item 5): ID/Parent* carried the source IDs, and ParentPatient = SHA-1(PatientID)."""
    docs, source, out = _deidentified_documents(source_ids=False)
    leaks = {source.orthanc_id, source.series_orthanc_id, orthanc_id(source.patient_id, source.study_uid),
             orthanc_id(source.patient_id)}
    assert out.identity is not None and out.identity != source
    sent = out.identity
    for doc in docs:
        text = repr(doc)
        assert not any(leak in text for leak in leaks), doc["doc_type"]
        assert doc["ID"] == sent.orthanc_id
    instance_doc = next(d for d in docs if d["doc_type"] == "instance")
    assert instance_doc["_id"] == sent.orthanc_id
    assert instance_doc["ParentSeries"] == sent.series_orthanc_id
    assert instance_doc["ParentStudy"] == orthanc_id(sent.patient_id, sent.study_uid)
    assert instance_doc["ParentPatient"] == orthanc_id(sent.patient_id)


def test_index_source_ids_opt_in_keeps_the_source_ids() -> None:
    docs, source, _ = _deidentified_documents(source_ids=True)
    instance_doc = next(d for d in docs if d["doc_type"] == "instance")
    assert instance_doc["ID"] == source.orthanc_id
    assert instance_doc["ParentPatient"] == orthanc_id(source.patient_id)
