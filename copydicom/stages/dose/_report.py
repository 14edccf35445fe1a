"""Recognising dose reports and dose screens, and building the documents.

Recognition is by content (SOP Class and root concept), never by series
number (PS3.4 B.5: 88.67 X-Ray Radiation Dose SR, 88.68 Radiopharmaceutical
Radiation Dose SR, 88.76 Enhanced X-Ray Radiation Dose SR; PS3.16 TID 10001,
10011, 10021 roots).
"""

from __future__ import annotations

import re
from typing import Any

from pydicom.dataset import Dataset

from copydicom.stages._values import element_text, iso_date
from copydicom.stages.dose import _codes as c
from copydicom.stages.dose._content import ContentItem, Context, code_of
from copydicom.stages.dose._templates import TEMPLATES, DoseReport

XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
RADIOPHARMACEUTICAL_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.68"
ENHANCED_XRAY_RADIATION_DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.76"
DOSE_SR_CLASSES = frozenset({XRAY_RADIATION_DOSE_SR, RADIOPHARMACEUTICAL_RADIATION_DOSE_SR,
                             ENHANCED_XRAY_RADIATION_DOSE_SR})
#: Secondary Capture Image Storage and its multi-frame variants (PS3.4 B.5).
SECONDARY_CAPTURE_CLASSES = frozenset({
    "1.2.840.10008.5.1.4.1.1.7", "1.2.840.10008.5.1.4.1.1.7.1", "1.2.840.10008.5.1.4.1.1.7.2",
    "1.2.840.10008.5.1.4.1.1.7.3", "1.2.840.10008.5.1.4.1.1.7.4",
})
_DOSE_ROOTS = frozenset({c.XRAY_RADIATION_DOSE_REPORT, c.RADIOPHARMACEUTICAL_RADIATION_DOSE_REPORT})
_SCREEN_TEXT = re.compile(
    r"dose\s*(report|info|summary|screen|record)|patient\s*protocol|exposure\s*(dose|report)|radiation\s*dose",
    re.IGNORECASE,
)
# QA / phantom indicators, in the spirit of OpenREM's "not-patient indicators": a token bounded by
# non-letters (so QA1234, PHANTOM_01, "Monthly QA" match and the name Qaderi does not).  IDs and names
# take the wider list; descriptions a narrower one ("stress test" is a patient examination).
_QA_ID_OR_NAME = re.compile(
    r"(?<![a-z])(phantom|qa|qc|test|physics|calibration|constancy|dummy|quality\s*(?:control|assurance))(?![a-z])",
    re.IGNORECASE,
)
_QA_DESCRIPTION = re.compile(
    r"(?<![a-z])(phantom|qa|qc|quality\s*(?:control|assurance)|test\s*patient|constancy|physics)(?![a-z])",
    re.IGNORECASE,
)
_QA_FIELDS: tuple[tuple[str, re.Pattern[str]], ...] = (
    ("PatientID", _QA_ID_OR_NAME),
    ("PatientName", _QA_ID_OR_NAME),
    ("StudyDescription", _QA_DESCRIPTION),
    ("RequestedProcedureDescription", _QA_DESCRIPTION),
    ("PerformedProcedureStepDescription", _QA_DESCRIPTION),
)


def _str(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    if value is None:
        return ""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def _root_concept(ds: Dataset) -> c.Concept | None:
    seq = ds.get("ConceptNameCodeSequence")
    return code_of(seq[0]) if seq else None


def is_dose_report(ds: Dataset) -> bool:
    """True for an X-ray or radiopharmaceutical radiation dose SR, recognised by content.

    A dose SR SOP Class, or any SR whose root concept is 113701 "X-Ray
    Radiation Dose Report" or 113500 "Radiopharmaceutical Radiation Dose
    Report" (GE writes Enhanced/Comprehensive SR with the 113701 root).
    """
    if _str(ds, "SOPClassUID") in DOSE_SR_CLASSES:
        return True
    return _root_concept(ds) in _DOSE_ROOTS


def is_dose_screen(ds: Dataset) -> bool:
    """True for a secondary-capture "dose screen" (a picture of the dose page, no RDSR values).

    Secondary Capture SOP Class (or an image typed SECONDARY / SCREEN SAVE)
    whose series description, image comments, derivation description or image
    type names a dose report or a patient protocol.
    """
    if is_dose_report(ds):
        return False
    image_type = _str(ds, "ImageType").upper()
    if _str(ds, "SOPClassUID") not in SECONDARY_CAPTURE_CLASSES and "SCREEN SAVE" not in image_type \
            and "SECONDARY" not in image_type:
        return False
    for keyword in ("SeriesDescription", "ImageComments", "DerivationDescription", "ProtocolName", "ImageType"):
        if _SCREEN_TEXT.search(_str(ds, keyword)):
            return True
    return False


def not_patient(ds: Dataset) -> tuple[bool, str | None]:
    """Whether the subject is a phantom / QA object, and why.

    Quality Control Subject (0010,0200) = YES (PS3.3 C.7.1.1) is the standard
    flag.  Older equipment has none, so, as OpenREM's not-patient indicators do,
    patterns are matched: a token such as ``QA``, ``QC``, ``PHANTOM``, ``TEST``,
    ``PHYSICS`` in the patient ID or name (``QA1234``, ``CT^PHANTOM``), or
    ``QA``/``phantom``/``quality control`` in a study or procedure description.
    The reason names the attribute and the matched pattern, never the value.
    """
    if _str(ds, "QualityControlSubject").upper() == "YES":
        return True, "QualityControlSubject is YES"
    for keyword, pattern in _QA_FIELDS:
        match = pattern.search(_str(ds, keyword))
        if match:
            token = re.sub(r"\s+", " ", match.group(1).lower())
            return True, f"{keyword} matches the QA/phantom pattern '{token}'"
    return False, None


def select_template(ds: Dataset, root: ContentItem) -> tuple[type[DoseReport] | None, str | None]:
    """The document template, from Content Template Sequence, then root and procedure codes."""
    seq = ds.get("ContentTemplateSequence")
    if seq:
        tid = _str(seq[0], "TemplateIdentifier")
        if tid in TEMPLATES:
            return TEMPLATES[tid], None
    if root.name == c.RADIOPHARMACEUTICAL_RADIATION_DOSE_REPORT:
        return TEMPLATES["10021"], None
    proc = root.find(c.PROCEDURE_REPORTED)
    proc_code = proc.code_value() if proc else None
    if proc_code == c.COMPUTED_TOMOGRAPHY:
        return TEMPLATES["10011"], None
    if proc_code in (c.PROJECTION_XRAY, c.MAMMOGRAPHY):
        return TEMPLATES["10001"], None
    if root.find(c.CT_ACQUISITION) or root.find(c.CT_ACCUMULATED_DOSE_DATA):
        return TEMPLATES["10011"], "template: no template identifier; CT content found"
    if root.find(c.IRRADIATION_EVENT_XRAY_DATA) or root.find(c.ACCUMULATED_XRAY_DOSE_DATA):
        return TEMPLATES["10001"], "template: no template identifier; projection X-ray content found"
    return None, "template: not a known dose report template"


def _header(ds: Dataset, ctx: Context, template: str | None) -> dict[str, Any]:
    study_date = element_text(ds, 0x00080020)
    flag, reason = not_patient(ds)
    return {
        "report": {
            "sop_instance_uid": _str(ds, "SOPInstanceUID") or None,
            "study_instance_uid": _str(ds, "StudyInstanceUID") or None,
            "series_instance_uid": _str(ds, "SeriesInstanceUID") or None,
            "sop_class_uid": _str(ds, "SOPClassUID") or None,
            "template": template,
        },
        "equipment": {
            "manufacturer": ctx.decode(ds, 0x00080070, "equipment.manufacturer"),
            "model": ctx.decode(ds, 0x00081090, "equipment.model"),
            "station": ctx.decode(ds, 0x00081010, "equipment.station"),
            "device_serial": ctx.decode(ds, 0x00181000, "equipment.device_serial"),
        },
        "study": {
            "accession": ctx.decode(ds, 0x00080050, "study.accession"),
            "description": ctx.decode(ds, 0x00081030, "study.description"),
            "date": iso_date(study_date) if study_date else None,
        },
        "not_patient": flag,
        "not_patient_reason": reason,
    }


def extract_dose(ds: Dataset) -> list[dict[str, Any]]:
    """The dose documents of one instance: events and a summary, or a dose-screen record.

    Returns ``[]`` for an instance that is neither a dose report nor a dose
    screen.  Never raises on bad content: problems become ``quality.warnings``.
    """
    sop_uid = _str(ds, "SOPInstanceUID")
    if not is_dose_report(ds):
        if is_dose_screen(ds):
            ctx = Context.from_dataset(ds)
            doc = {"_id": "screen-" + sop_uid, "doc_type": "dose_screen", **_header(ds, ctx, None)}
            doc["screen"] = {"series_description": ctx.decode(ds, 0x0008103E, "screen.series_description")}
            doc["quality"] = {"warnings": ctx.warnings}
            return [doc]
        return []
    ctx = Context.from_dataset(ds)
    root = ContentItem.from_dataset(ds)
    template_cls, note = select_template(ds, root)
    if note:
        ctx.warnings.append(note)
    header = _header(ds, ctx, template_cls.TEMPLATE if template_cls else None)
    report: DoseReport | None = None
    if template_cls is not None:
        try:
            report = template_cls.from_root(root, ctx)  # type: ignore[attr-defined]
        except Exception as exc:  # noqa: BLE001 - a malformed tree must not stop the pipeline
            ctx.warnings.append(f"template: content tree unreadable ({type(exc).__name__}); no events extracted")
            report = None
    docs: list[dict[str, Any]] = []
    if report is not None:
        for event, sections, warnings in report.events:
            warnings = list(warnings)
            event_id = event.get("uid")
            if not event_id:
                event_id = f"event-{sop_uid}-{event['index']}"
                warnings.append("event.uid: no Irradiation Event UID")
            doc = {"_id": event_id, "doc_type": "irradiation_event", **_copy(header), "event": event}
            doc.update(sections)
            doc["quality"] = {"warnings": warnings}
            docs.append(doc)
    summary: dict[str, Any] = {"_id": "summary-" + sop_uid, "doc_type": "dose_summary", **_copy(header)}
    summary["totals"] = report.totals if report is not None else {}
    summary["events_extracted"] = len(docs)
    if report is not None:
        summary.update(report.extra)
    summary["quality"] = {"warnings": list(ctx.warnings)}
    docs.append(summary)
    return docs


def _copy(header: dict[str, Any]) -> dict[str, Any]:
    return {k: (dict(v) if isinstance(v, dict) else v) for k, v in header.items()}
