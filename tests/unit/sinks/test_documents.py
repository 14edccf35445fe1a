from __future__ import annotations

from copydicom.model import orthanc_id
from copydicom.sinks.documents import dose_documents, event_time, instance_document, iso_datetime
from tests.unit.sinks.docs_helpers import flat_instance, instance_doc


def test_instance_document_top_level_fields_and_id() -> None:
    doc = instance_doc(3)
    flat = flat_instance(3)
    expected_id = orthanc_id(flat["PatientID"], flat["StudyInstanceUID"], flat["SeriesInstanceUID"], flat["SOPInstanceUID"])
    assert doc["_id"] == expected_id
    assert doc["ID"] == expected_id
    assert doc["doc_type"] == "instance"
    assert doc["Modality"] == "CT"
    assert doc["StudyDate"] == "20240101"
    assert doc["SeriesNumber"] == 1
    assert doc["SOPInstanceUID"] == "1.2.826.0.1.3680043.99.0.1.3"
    assert doc["timestamp"] == "2024-01-01T10:16:00.25"
    assert doc["tags"] == flat
    assert doc["route"] == "main" and doc["deidentified"] is False
    assert "ReferencedImageSequence" not in doc  # sequences stay in the tree only


def test_deidentified_document_id_is_the_target_instance() -> None:
    flat = flat_instance(1)
    doc = instance_document(flat, orthanc={"instance": "src-id"}, route="research", deidentified=True)
    assert doc["ID"] == "src-id"
    assert doc["_id"] == orthanc_id(
        flat["PatientID"], flat["StudyInstanceUID"], flat["SeriesInstanceUID"], flat["SOPInstanceUID"]
    )
    assert doc["deidentified"] is True


def test_event_time_fallbacks() -> None:
    assert event_time({"AcquisitionDateTime": "20230405123456.5+0100"}) == "2023-04-05T12:34:56.5"
    assert event_time({"ContentDate": "20230405", "ContentTime": "0915"}) == "2023-04-05T09:15:00"
    assert event_time({"StudyDate": "20230405"}) == "2023-04-05T00:00:00"
    assert event_time({"StudyDate": "garbage"}) is None
    assert iso_datetime("2023-04-05", "12:00:01") == "2023-04-05T12:00:01"


def test_dose_documents_pass_through() -> None:
    out = dose_documents([{"_id": "e1", "doc_type": "dose_event", "dlp": 1.0}], orthanc={"instance": "i"},
                         route="r", deidentified=True)
    assert out == [{"_id": "e1", "doc_type": "dose_event", "dlp": 1.0, "ID": "i", "route": "r", "deidentified": True}]
