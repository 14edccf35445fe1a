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
    assert (event["ID"], event["route"], event["deidentified"], event["protocol"]) == ("rdsr-src", "r", True, "Head")
    # running it again neither re-wraps nor duplicates documents
    again = IndexDocumentsStage("r", deidentified=True).process(rinst)
    assert [d["doc_type"] for d in again.documents] == ["irradiation_event", "dose_summary", "instance"]
