"""Radiation dose extraction from dose structured reports (PS3.16 TID 10001, 10011, 10021).

Public API
----------
``is_dose_report(ds)``, ``is_dose_screen(ds)``, ``extract_dose(ds)`` and the
pipeline stage :class:`DoseStage`.

Documents
---------
Every document has ``_id`` (deterministic: the Irradiation Event UID for an
event, ``"summary-" + SOP Instance UID`` for a summary, ``"screen-" + SOP
Instance UID`` for a dose screen), ``doc_type`` (``irradiation_event``,
``dose_summary`` or ``dose_screen``), ``report`` (``sop_instance_uid``,
``study_instance_uid``, ``series_instance_uid``, ``sop_class_uid``,
``template``), ``equipment`` (``manufacturer``, ``model``, ``station``,
``device_serial``), ``study`` (``accession``, ``description``, ``date``),
``not_patient`` (bool, QA/phantom), ``not_patient_reason`` and
``quality.warnings`` (list of strings).

Events add ``event`` (``uid``, ``index``, ``protocol``, ``target_region``,
``type``, ``comment``) and ``ct`` (TID 10013), or ``projection`` and for
mammography ``mammo`` (TID 10003), or for TID 10021 one event per
Radiopharmaceutical Administration (``event.uid`` the administration's UID,
``event.type`` 113502) with ``radiopharmaceutical`` (agent, radionuclide, route,
start, stop, ``administered_activity_mbq``, ``effective_dose_msv`` and
``organ_doses``: organ, laterality, ``dose_mgy``, reference authority; TID 10022,
TID 10023).  Summaries add ``totals`` as the report states them (never
re-summed), ``events_extracted``, and for TID 10021 ``radiopharmaceutical`` (the
first administration) and ``radiopharmaceutical_administrations``.

Projection events read Exposure Time from the current code 113824 or the
retired 113735 (``raw.exposure_time_ms.code`` says which), normalised to ms.
A row repeated in an event (kVp, tube current, exposure time, exposure, pulse
width: one per pulse on some equipment) keeps its first value in the scalar
field and every value in ``<field>_values`` (with ``raw.<field>_values``).
``not_patient_reason`` names the attribute and the matched QA/phantom pattern
(``PatientID matches the QA/phantom pattern 'qa'``), never the value.

Numbers are normalised to the unit in their field name (``ctdivol_mgy``,
``dap_gy_m2``, ``dlp_mgy_cm``, ``fluoro_time_s``...).  Beside them, the section
has ``raw``: ``{"ctdivol_mgy": {"value": "12.3", "unit": "mGy"}}`` with the
Numeric Value text and UCUM code as written.  A missing item is ``None`` with
no raw entry (a scout with no dose is null, never 0); an unreadable value or
unit is ``None`` with its raw entry and a warning.  Coded values are
``{"code", "scheme", "meaning", "concept"}``: the first three as written in the
report, ``concept`` normalised to ``"SCHEME:value"`` with SRT mapped to SCT
(``"SCT:116152004"`` for both ``P5-08001/SRT`` and ``116152004/SCT``).
"""

from __future__ import annotations

from copydicom.model import Instance
from copydicom.stages.dose._report import extract_dose, is_dose_report, is_dose_screen, not_patient
from copydicom.stages.flatten import read_dataset

__all__ = ["DoseStage", "extract_dose", "is_dose_report", "is_dose_screen", "not_patient"]

_SR_OR_SC = ("1.2.840.10008.5.1.4.1.1.88.", "1.2.840.10008.5.1.4.1.1.7")


class DoseStage:
    """Pipeline stage that appends dose documents of dose reports and dose screens.

    Other instances pass through untouched.  When the dataset is not parsed,
    the stage parses it without pixels only if the File Meta says it is an SR
    or a Secondary Capture (cheap), else it leaves the instance alone.
    """

    name = "dose"

    def process(self, instance: Instance) -> Instance:
        ds = instance.dataset
        if ds is None:
            sop_class = _sop_class_from_meta(instance.data)
            if sop_class is not None and not sop_class.startswith(_SR_OR_SC):
                return instance
            ds = read_dataset(instance)
        instance.documents.extend(extract_dose(ds))
        return instance


def _sop_class_from_meta(data: bytes) -> str | None:
    """The Media Storage SOP Class UID from the first bytes of a Part 10 file, if present."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    marker = data.find(b"\x02\x00\x02\x00", 132, 132 + 1024)
    if marker == -1:
        return None
    if data[marker + 4 : marker + 6] == b"UI":
        length = int.from_bytes(data[marker + 6 : marker + 8], "little")
        start = marker + 8
    else:
        length = int.from_bytes(data[marker + 4 : marker + 8], "little")
        start = marker + 8
    return data[start : start + length].decode("ascii", errors="replace").strip("\x00 ")
