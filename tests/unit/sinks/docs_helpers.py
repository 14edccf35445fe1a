"""Shared document factories for the index-sink tests."""

from __future__ import annotations

from typing import Any

from copydicom.model import orthanc_id
from copydicom.sinks.documents import instance_document


def flat_instance(i: int, *, modality: str = "CT", study: int | None = None, day: int = 1) -> dict[str, Any]:
    s = i // 10 if study is None else study
    return {
        "PatientID": f"P{s % 7}",
        "StudyInstanceUID": f"1.2.826.0.1.3680043.99.{s}",
        "SeriesInstanceUID": f"1.2.826.0.1.3680043.99.{s}.1",
        "SOPInstanceUID": f"1.2.826.0.1.3680043.99.{s}.1.{i}",
        "Modality": modality,
        "StudyDate": f"202401{day:02d}",
        "StudyTime": "101500",
        "AcquisitionDate": f"202401{day:02d}",
        "AcquisitionTime": "101600.25",
        "SeriesDescription": "Dose Record" if modality == "SR" else "Axial",
        "SeriesNumber": 1,
        "Manufacturer": "ACME",
        "ReferencedImageSequence": [{"ReferencedSOPInstanceUID": "1.2.3"}],
        "ImageType": ["ORIGINAL", "PRIMARY", "AXIAL"],
    }


def instance_doc(i: int, **kw: Any) -> dict[str, Any]:
    flat = flat_instance(i, **kw)
    ids = (flat["PatientID"], flat["StudyInstanceUID"], flat["SeriesInstanceUID"], flat["SOPInstanceUID"])
    return instance_document(
        flat,
        orthanc={
            "instance": orthanc_id(*ids),
            "series": orthanc_id(*ids[:3]),
            "study": orthanc_id(*ids[:2]),
            "patient": orthanc_id(ids[0]),
        },
        route="main",
        deidentified=False,
    )


def dose_event(n: int, *, protocol: str = "Head", ctdivol: float = 50.0, dlp: float = 800.0) -> dict[str, Any]:
    return {
        "_id": f"1.2.826.0.1.3680043.99.dose.{n}",
        "doc_type": "dose_event",
        "event_kind": "CT",
        "protocol": protocol,
        "procedure": "CT Head",
        "ctdivol": ctdivol,
        "dlp": dlp,
        "StudyInstanceUID": "1.2.826.0.1.3680043.99.0",
        "timestamp": "2024-01-01T10:16:00",
    }
