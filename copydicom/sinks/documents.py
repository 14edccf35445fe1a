"""Index documents: one per instance, plus pass-through dose documents.

An instance document holds the flattened tag tree (see
``copydicom.stages.flatten``) under ``tags`` and, at the top level, the
Orthanc identifiers, the DICOM UIDs and the commonly searched attributes
named by their DICOM keyword (PS3.6 Table 6-1), so that ``Modality:SR`` in
Elasticsearch and ``SeriesDescription="Dose Record"`` in Splunk work.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping

from copydicom.model import orthanc_id

#: Attributes copied to the top level of every instance document (PS3.6 keywords).
TOP_LEVEL_KEYWORDS: tuple[str, ...] = (
    "PatientID",
    "AccessionNumber",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "SOPClassUID",
    "Modality",
    "StudyDate",
    "StudyTime",
    "StudyDescription",
    "SeriesDate",
    "SeriesDescription",
    "SeriesNumber",
    "InstanceNumber",
    "Manufacturer",
    "ManufacturerModelName",
    "StationName",
    "InstitutionName",
    "BodyPartExamined",
    "ProtocolName",
    "AcquisitionDateTime",
    "ContentDate",
    "ContentTime",
)

#: Date/time pairs tried in order for the document's event time (PS3.3 C.7.6.1, C.7.3.1, C.7.2.1).
_TIME_SOURCES: tuple[tuple[str, str], ...] = (
    ("AcquisitionDate", "AcquisitionTime"),
    ("ContentDate", "ContentTime"),
    ("SeriesDate", "SeriesTime"),
    ("StudyDate", "StudyTime"),
)


def scalar(value: Any) -> Any:
    """Return a JSON scalar for a flattened value: the first of a multi-value, ``None`` for sequences."""
    if isinstance(value, list):
        if not value:
            return None
        return scalar(value[0]) if not isinstance(value[0], dict) else None
    if isinstance(value, dict):
        # Some flatteners keep {"Value": [...]} (PS3.18 F.2.2) or {"Alphabetic": ...} for PN.
        if "Value" in value:
            return scalar(value["Value"])
        if "Alphabetic" in value:
            return value["Alphabetic"]
        return None
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)


def iso_datetime(date: Any, time: Any = None) -> str | None:
    """Turn DICOM DA (``YYYYMMDD``) and TM (``HHMMSS.FFFFFF``) into ISO 8601 without zone.

    Returns ``None`` when the date is missing or malformed (PS3.5 Table 6.2-1).
    """
    d = str(scalar(date) or "").strip().replace("-", "").replace(".", "")
    if len(d) < 8 or not d[:8].isdigit():
        return None
    out = f"{d[0:4]}-{d[4:6]}-{d[6:8]}"
    t = str(scalar(time) or "").strip().replace(":", "")
    digits = t.split(".")[0]
    if len(digits) >= 2 and digits.isdigit():
        digits = (digits + "0000")[:6]
        out += f"T{digits[0:2]}:{digits[2:4]}:{digits[4:6]}"
        if "." in t:
            frac = "".join(ch for ch in t.split(".", 1)[1] if ch.isdigit())[:6]
            if frac:
                out += "." + frac
    else:
        out += "T00:00:00"
    return out


def event_time(flat: Mapping[str, Any]) -> str | None:
    """The instance's own time: AcquisitionDateTime, else acquisition, content, series, study date/time."""
    adt = str(scalar(flat.get("AcquisitionDateTime")) or "")
    if len(adt) >= 8:
        return iso_datetime(adt[:8], adt[8:].split("+")[0].split("-")[0] or None)
    for date_kw, time_kw in _TIME_SOURCES:
        value = iso_datetime(flat.get(date_kw), flat.get(time_kw))
        if value is not None:
            return value
    return None


def instance_document(
    flat: Mapping[str, Any],
    *,
    orthanc: Mapping[str, str],
    route: str,
    deidentified: bool,
) -> dict[str, Any]:
    """Build the index document of one instance.

    Parameters
    ----------
    flat
        The flattened tag tree keyed by DICOM keyword (``flatten(ds, scheme="keyword")``).
    orthanc
        Source Orthanc IDs: ``instance`` (required), ``series``, ``study``, ``patient``.
    route
        The route name.
    deidentified
        True when ``flat`` describes the de-identified instance.

    Returns
    -------
    dict
        ``_id`` is the Orthanc ID of the instance the tags describe: the source
        instance ID, or for de-identified tags the ID of the de-identified
        instance (computed from its identifiers), so both can live in one index.
    """
    source_id = orthanc["instance"]
    doc: dict[str, Any] = {
        "doc_type": "instance",
        "ID": source_id,
        "ParentSeries": orthanc.get("series"),
        "ParentStudy": orthanc.get("study"),
        "ParentPatient": orthanc.get("patient"),
        "route": route,
        "deidentified": bool(deidentified),
    }
    for keyword in TOP_LEVEL_KEYWORDS:
        value = scalar(flat.get(keyword))
        if value is not None and value != "":
            doc[keyword] = value
    doc["timestamp"] = event_time(flat)
    doc["tags"] = dict(flat)
    doc["_id"] = source_id
    if deidentified:
        parts = [str(doc.get(k, "")) for k in ("PatientID", "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")]
        if parts[3]:
            doc["_id"] = orthanc_id(*parts)
    return doc


def dose_documents(
    docs: Iterable[Mapping[str, Any]],
    *,
    orthanc: Mapping[str, str],
    route: str,
    deidentified: bool,
) -> list[dict[str, Any]]:
    """Pass dose documents through, adding route, de-identification flag and the source instance ``ID``.

    The ``_id`` and ``doc_type`` set by the dose extractor are kept.
    """
    out: list[dict[str, Any]] = []
    for d in docs:
        doc = dict(d)
        doc.setdefault("ID", orthanc["instance"])
        doc["route"] = route
        doc["deidentified"] = bool(deidentified)
        out.append(doc)
    return out


def document_time(doc: Mapping[str, Any]) -> str | None:
    """The ISO time of any document: ``timestamp``, else the event time of its tags/fields."""
    ts = doc.get("timestamp")
    if isinstance(ts, str) and ts:
        return ts
    tags = doc.get("tags")
    return event_time(tags if isinstance(tags, Mapping) else doc)
