"""Documents built from real flatten/extract_dose output land in the SQLite index as expected."""

from __future__ import annotations

from pathlib import Path

from copydicom.model import Identity
from copydicom.sinks.documents import dose_documents, instance_document
from copydicom.sinks.sqlite_index import SqliteIndex, SqliteIndexConfig
from copydicom.stages.dose import extract_dose
from copydicom.stages.flatten import flatten
from tests.support.synthetic import ct_dataset
from tests.unit.dose import builder as b


def test_flattened_ct_and_dose_report(tmp_path: Path) -> None:
    ds = ct_dataset(1, 2, 3, 4, rows=8, cols=8)
    ds.AcquisitionDate = "20240305"
    ds.AcquisitionTime = "081500"
    flat = flatten(ds, scheme="keyword")
    ident = Identity.from_dataset(ds)
    doc = instance_document(flat, orthanc={"instance": ident.orthanc_id, "series": ident.series_orthanc_id},
                            route="r1", deidentified=False)
    assert doc["_id"] == ident.orthanc_id
    assert doc["Modality"] == "CT"
    assert doc["timestamp"] == "2024-03-05T08:15:00"
    assert doc["SOPInstanceUID"] == ds.SOPInstanceUID

    report = b.reread(b.ct_report([b.ct_event("1.2.3.100", protocol="Head std", ctdivol="55.5", dlp="900")]))
    rflat = flatten(report, scheme="keyword")
    dose = dose_documents(extract_dose(report), orthanc={"instance": "rdsr-id"}, route="r1", deidentified=False,
                          flat=rflat)
    kinds = sorted(d["doc_type"] for d in dose)
    assert kinds == ["dose_summary", "irradiation_event"]
    event = next(d for d in dose if d["doc_type"] == "irradiation_event")
    assert (event["_id"], event["protocol"], event["ctdivol"], event["dlp"], event["event_kind"]) == (
        "1.2.3.100", "Head std", 55.5, 900.0, "CT")

    index = SqliteIndex(SqliteIndexConfig("local", tmp_path / "i.db"))
    index.send([doc, *dose])
    assert list(index.search("SELECT protocol, ctdivol, dlp, event_kind FROM dose_events")) == [
        {"protocol": "Head std", "ctdivol": 55.5, "dlp": 900.0, "event_kind": "CT"}]
    assert list(index.search("SELECT total_dlp FROM dose_summaries")) == [{"total_dlp": 456.7}]
    assert list(index.search("SELECT modality FROM series")) == [{"modality": "CT"}]
    index.close()
