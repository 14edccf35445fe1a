"""Index documents: one per instance, plus pass-through dose documents.

An instance document holds the flattened tag tree (see
``copydicom.stages.flatten``) under ``tags`` and, at the top level, the
Orthanc identifiers, the DICOM UIDs and the commonly searched attributes
named by their DICOM keyword (PS3.6 Table 6-1), so that ``Modality:SR`` in
Elasticsearch and ``SeriesDescription="Dose Record"`` in Splunk work.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

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


def _split_datetime(value: str) -> tuple[str, str | None]:
    """Split a DICOM DT (``YYYYMMDDHHMMSS.F+ZZZZ``) or ISO 8601 date-time into date and time, dropping the zone."""
    if len(value) >= 10 and value[4] == "-":
        date, _, time = value[:10], "", value[11:]
    else:
        date, time = value[:8], value[8:]
    for sep in ("+", "-", "Z"):
        time = time.split(sep)[0]
    return date, time or None


def event_time(flat: Mapping[str, Any]) -> str | None:
    """The instance's own time: AcquisitionDateTime, else acquisition, content, series, study date/time.

    Accepts DICOM forms (DA ``YYYYMMDD``, TM ``HHMMSS``, DT) and the ISO forms of
    :func:`copydicom.stages.flatten.flatten` (``YYYY-MM-DD``, ``HH:MM:SS``).
    """
    adt = str(scalar(flat.get("AcquisitionDateTime")) or "")
    if len(adt) >= 8:
        date, time = _split_datetime(adt)
        value = iso_datetime(date, time)
        if value is not None:
            return value
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
        Orthanc IDs: ``instance`` (required), ``series``, ``study``, ``patient``; on a
        de-identifying route those of the de-identified instance (see
        :mod:`copydicom.stages.index_docs`), unless the route opts in to the source's.
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


def _path(doc: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = doc
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _text(value: Any) -> Any:
    """A coded value ``{"code", "scheme", "meaning"}`` becomes its meaning."""
    if isinstance(value, Mapping):
        return value.get("meaning") or value.get("code")
    return value


def dose_fields(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Flat summary fields of a dose document, the same in every index and dashboard.

    From the extractor's nested form (``event.protocol``, ``ct.ctdivol_mgy``,
    ``ct.dlp_mgy_cm``, ``projection.dap_gy_m2``, ``totals.*``; PS3.16 TID 10011,
    TID 10001): ``protocol``, ``procedure``, ``event_kind`` (``CT``, ``projection``,
    ``fluoro``, ``mammography``, ``screen``), ``ctdivol`` (mGy), ``dlp`` (mGy.cm), ``dap`` (Gy.m2),
    ``total_dlp``, ``total_dap``, ``StudyInstanceUID``, ``StudyDate``.
    """
    kind = doc.get("doc_type")
    out: dict[str, Any] = {
        "StudyInstanceUID": _path(doc, "report.study_instance_uid"),
        "StudyDate": _path(doc, "study.date"),
        "procedure": _text(_path(doc, "study.description")),
        "Manufacturer": _path(doc, "equipment.manufacturer"),
    }
    if kind == "irradiation_event":
        out["protocol"] = _text(_path(doc, "event.protocol"))
        if isinstance(doc.get("ct"), Mapping):
            out["event_kind"] = "CT"
            out["ctdivol"] = _path(doc, "ct.ctdivol_mgy")
            out["dlp"] = _path(doc, "ct.dlp_mgy_cm")
        elif isinstance(doc.get("mammo"), Mapping):
            out["event_kind"] = "mammography"
            out["dap"] = _path(doc, "projection.dap_gy_m2")
        elif isinstance(doc.get("projection"), Mapping):
            ev_type = str(_text(_path(doc, "event.type")) or "").lower()
            out["event_kind"] = "fluoro" if "fluoro" in ev_type else "projection"
            out["dap"] = _path(doc, "projection.dap_gy_m2")
    elif kind == "dose_summary":
        out["total_dlp"] = _path(doc, "totals.ct_dlp_mgy_cm")
        out["total_dap"] = _path(doc, "totals.dap_gy_m2")
        if out["total_dap"] is None:
            out["total_dap"] = _path(doc, "totals.fluoro_dap_gy_m2")
    elif kind == "dose_screen":
        out["event_kind"] = "screen"
    return {k: v for k, v in out.items() if v is not None}


def dose_documents(
    docs: Iterable[Mapping[str, Any]],
    *,
    orthanc: Mapping[str, str],
    route: str,
    deidentified: bool,
    flat: Mapping[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """Pass dose documents through, adding route, de-identification flag, the source instance ``ID``,
    the event ``timestamp`` of the report instance (from ``flat``, its flattened tags) and
    :func:`dose_fields`.  The ``_id`` and ``doc_type`` set by the dose extractor are kept.
    """
    when = event_time(flat) if flat is not None else None
    out: list[dict[str, Any]] = []
    for d in docs:
        doc = dict(d)
        for key, value in dose_fields(d).items():
            doc.setdefault(key, value)
        doc.setdefault("ID", orthanc["instance"])
        doc["route"] = route
        doc["deidentified"] = bool(deidentified)
        if when is not None:
            doc.setdefault("timestamp", when)
        elif "timestamp" not in doc and doc.get("StudyDate"):
            doc["timestamp"] = iso_datetime(doc["StudyDate"])
        out.append(doc)
    return out


def document_time(doc: Mapping[str, Any]) -> str | None:
    """The ISO time of any document: ``timestamp``, else the event time of its tags/fields."""
    ts = doc.get("timestamp")
    if isinstance(ts, str) and ts:
        return ts
    tags = doc.get("tags")
    return event_time(tags if isinstance(tags, Mapping) else doc)
