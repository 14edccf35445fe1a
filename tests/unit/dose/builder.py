"""Build radiation dose SR fixtures with pydicom (PS3.16 TID 10001 / 10011 / 10021).

Each builder returns a dataset that went through a Part 10 write and read, so
the extractor sees what it sees in production (raw, unconverted elements).
Values given as ``bytes`` are written verbatim (malformed numbers, text in a
character set other than the declared one).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import pydicom
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence as DicomSequence
from pydicom.tag import Tag
from pydicom.uid import ExplicitVRLittleEndian

DCM = "DCM"
CT_SOP = "1.2.840.10008.5.1.4.1.1.88.67"
ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"
RRDSR_SOP = "1.2.840.10008.5.1.4.1.1.88.68"
SC_SOP = "1.2.840.10008.5.1.4.1.1.7"

Code = tuple[str, str, str]


def code_ds(code: Code) -> Dataset:
    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = code
    return ds


def _raw(ds: Dataset, tag: int, vr: str, value: bytes) -> None:
    if len(value) % 2:
        value += b" "
    ds._dict[Tag(tag)] = RawDataElement(Tag(tag), vr, len(value), value, 0, False, True)


def item(concept: Code, value_type: str, rel: str = "CONTAINS") -> Dataset:
    ds = Dataset()
    ds.RelationshipType = rel
    ds.ValueType = value_type
    ds.ConceptNameCodeSequence = DicomSequence([code_ds(concept)])
    return ds


def container(concept: Code, children: Sequence[Dataset], rel: str = "CONTAINS") -> Dataset:
    ds = item(concept, "CONTAINER", rel)
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = DicomSequence(list(children))
    return ds


def num(concept: Code, value: str | bytes | None, unit: str, rel: str = "CONTAINS") -> Dataset:
    ds = item(concept, "NUM", rel)
    if value is None:  # empty Measured Value Sequence
        ds.MeasuredValueSequence = DicomSequence([])
        return ds
    mv = Dataset()
    mv.MeasurementUnitsCodeSequence = DicomSequence([code_ds((unit, "UCUM", unit))])
    if isinstance(value, bytes):
        _raw(mv, 0x0040A30A, "DS", value)
    else:
        mv.NumericValue = value
    ds.MeasuredValueSequence = DicomSequence([mv])
    return ds


def coded(concept: Code, value: Code, rel: str = "CONTAINS", children: Sequence[Dataset] = ()) -> Dataset:
    ds = item(concept, "CODE", rel)
    ds.ConceptCodeSequence = DicomSequence([code_ds(value)])
    if children:
        ds.ContentSequence = DicomSequence(list(children))
    return ds


#: Placeholder text -> the bytes written in its place by :func:`to_bytes`
#: (pydicom re-encodes text on write, so raw bytes in a foreign charset are patched in).
_PATCHES: dict[bytes, bytes] = {}


def text(concept: Code, value: str | bytes) -> Dataset:
    ds = item(concept, "TEXT")
    if isinstance(value, bytes):
        if len(value) % 2:
            value += b" "
        placeholder = f"~{len(_PATCHES)}~".ljust(len(value), "~").encode("ascii")
        assert len(placeholder) == len(value), "raw text too short for a placeholder"
        _PATCHES[placeholder] = value
        ds.TextValue = placeholder.decode("ascii")
    else:
        ds.TextValue = value
    return ds


def uidref(concept: Code, value: str) -> Dataset:
    ds = item(concept, "UIDREF")
    ds.UID = value
    return ds


# Concepts (PS3.16 Annex D)
ROOT = ("113701", DCM, "X-Ray Radiation Dose Report")
PROCEDURE_REPORTED = ("121058", DCM, "Procedure reported")
CT_PROC_SRT = ("P5-08000", "SRT", "Computed Tomography X-Ray")
CT_PROC_SCT = ("77477000", "SCT", "Computed Tomography X-Ray")
PROJECTION = ("113704", DCM, "Projection X-Ray")
MAMMO_SCT = ("71651007", "SCT", "Mammography")
CT_ACCUM = ("113811", DCM, "CT Accumulated Dose Data")
N_EVENTS = ("113812", DCM, "Total Number of Irradiation Events")
DLP_TOTAL = ("113813", DCM, "CT Dose Length Product Total")
CT_ACQ = ("113819", DCM, "CT Acquisition")
PROTOCOL = ("125203", DCM, "Acquisition Protocol")
TARGET = ("123014", DCM, "Target Region")
CHEST = ("51185008", "SCT", "Chest")
ACQ_TYPE = ("113820", DCM, "CT Acquisition Type")
SPIRAL = ("P5-08001", "SRT", "Spiral Acquisition")
CONSTANT_ANGLE = ("113805", DCM, "Constant Angle Acquisition")
EVENT_UID = ("113769", DCM, "Irradiation Event UID")
CT_PARAMS = ("113822", DCM, "CT Acquisition Parameters")
EXPOSURE_TIME = ("113824", DCM, "Exposure Time")
SCAN_LENGTH = ("113825", DCM, "Scanning Length")
PITCH = ("113828", DCM, "Pitch Factor")
N_SOURCES = ("113823", DCM, "Number of X-Ray Sources")
SOURCE = ("113831", DCM, "CT X-Ray Source Parameters")
SOURCE_ID = ("113832", DCM, "Identification of the X-Ray Source")
KVP = ("113733", DCM, "KVP")
MAX_MA = ("113833", DCM, "Maximum X-Ray Tube Current")
MA = ("113734", DCM, "X-Ray Tube Current")
ROT_TIME = ("113834", DCM, "Exposure Time per Rotation")
CT_DOSE = ("113829", DCM, "CT Dose")
CTDIVOL = ("113830", DCM, "Mean CTDIvol")
PHANTOM = ("113835", DCM, "CTDIw Phantom Type")
BODY_PHANTOM = ("113691", DCM, "IEC Body Dosimetry Phantom")
DLP = ("113838", DCM, "DLP")
ACCUM_XRAY = ("113702", DCM, "Accumulated X-Ray Dose Data")
PLANE = ("113764", DCM, "Acquisition Plane")
PLANE_A = ("113620", DCM, "Plane A")
PLANE_B = ("113621", DCM, "Plane B")
SINGLE_PLANE = ("113622", DCM, "Single Plane")
DAP_TOTAL = ("113722", DCM, "Dose Area Product Total")
DOSE_RP_TOTAL = ("113725", DCM, "Dose (RP) Total")
FLUORO_DAP_TOTAL = ("113726", DCM, "Fluoro Dose Area Product Total")
ACQ_DAP_TOTAL = ("113727", DCM, "Acquisition Dose Area Product Total")
FLUORO_TIME = ("113730", DCM, "Total Fluoro Time")
XRAY_EVENT = ("113706", DCM, "Irradiation Event X-Ray Data")
EVENT_TYPE = ("113721", DCM, "Irradiation Event Type")
FLUOROSCOPY_SRT = ("P5-06000", "SRT", "Fluoroscopy")
STATIONARY = ("113611", DCM, "Stationary Acquisition")
DAP = ("122130", DCM, "Dose Area Product")
DOSE_RP = ("113738", DCM, "Dose (RP)")
PULSE_RATE = ("113791", DCM, "Pulse Rate")
N_PULSES = ("113768", DCM, "Number of Pulses")
PULSE_WIDTH = ("113793", DCM, "Pulse Width")
AGD = ("111631", DCM, "Average Glandular Dose")
ACC_AGD = ("111637", DCM, "Accumulated Average Glandular Dose")
LATERALITY_SRT = ("G-C171", "SRT", "Laterality")
LATERALITY_SCT = ("272741003", "SCT", "Laterality")
LEFT_BREAST_SRT = ("T-04030", "SRT", "Left breast")
RIGHT_BREAST_SCT = ("73056007", "SCT", "Right breast")
RRD_ROOT = ("113500", DCM, "Radiopharmaceutical Radiation Dose Report")
ADMIN = ("113502", DCM, "Radiopharmaceutical Administration")
AGENT = ("F-61FDB", "SRT", "Radiopharmaceutical agent")
FDG = ("C-B1031", "SRT", "Fluorodeoxyglucose F^18^")
RADIONUCLIDE = ("89457008", "SCT", "Radionuclide")
F18 = ("C-111A1", "SRT", "^18^Fluorine")
ACTIVITY = ("113507", DCM, "Administered activity")
ADMIN_UID = ("113503", DCM, "Radiopharmaceutical Administration Event UID")
EFFECTIVE_DOSE = ("113839", DCM, "Effective Dose")


def ct_source(ident: str, kvp: str, ma: str, max_ma: str = "500", rot: str = "0.5") -> Dataset:
    return container(SOURCE, [
        text(SOURCE_ID, ident),
        num(KVP, kvp, "kV"),
        num(MAX_MA, max_ma, "mA"),
        num(MA, ma, "mA"),
        num(ROT_TIME, rot, "s"),
    ])


def ct_event(
    uid: str,
    protocol: str | bytes | None = "Chest routine",
    ctdivol: str | bytes | None = "12.3",
    dlp: str | bytes | None = "456.7",
    sources: Sequence[Dataset] | None = None,
    scan_length: str = "350",
    scan_length_unit: str = "mm",
    pitch: str = "0.984",
    acq_type: Code = SPIRAL,
    dose: bool = True,
    dlp_unit: str = "mGy.cm",
    target: Code = CHEST,
) -> Dataset:
    children: list[Dataset] = []
    if protocol is not None:
        children.append(text(PROTOCOL, protocol))
    children += [coded(TARGET, target), coded(ACQ_TYPE, acq_type), uidref(EVENT_UID, uid)]
    srcs = list(sources) if sources is not None else [ct_source("A", "120", "200")]
    children.append(container(CT_PARAMS, [
        num(EXPOSURE_TIME, "5.2", "s"),
        num(SCAN_LENGTH, scan_length, scan_length_unit),
        num(PITCH, pitch, "{ratio}"),
        num(N_SOURCES, str(len(srcs)), "{X-Ray sources}"),
        *srcs,
    ]))
    if dose:
        children.append(container(CT_DOSE, [
            num(CTDIVOL, ctdivol, "mGy"),
            coded(PHANTOM, BODY_PHANTOM),
            num(DLP, dlp, dlp_unit),
        ]))
    return container(CT_ACQ, children)


def _document(root: Code, sop_class: str, children: Sequence[Dataset], template: str | None,
              **attrs: Any) -> Dataset:
    ds = Dataset()
    ds.SpecificCharacterSet = attrs.pop("charset", "ISO_IR 100")
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = attrs.pop("sop_uid", "1.2.826.0.1.3680043.8.498.1")
    ds.StudyInstanceUID = attrs.pop("study_uid", "1.2.826.0.1.3680043.8.498.2")
    ds.SeriesInstanceUID = attrs.pop("series_uid", "1.2.826.0.1.3680043.8.498.3")
    ds.Modality = "SR"
    ds.SeriesNumber = attrs.pop("series_number", "9001")
    ds.StudyDate = "20240131"
    ds.AccessionNumber = "ACC123"
    ds.StudyDescription = attrs.pop("study_description", "CT CHEST")
    ds.Manufacturer = attrs.pop("manufacturer", "ACME")
    ds.ManufacturerModelName = "Scanner 9000"
    ds.StationName = "CT1"
    ds.PatientName = attrs.pop("patient_name", "Doe^Jane")
    ds.PatientID = "P1"
    for key, value in attrs.items():
        setattr(ds, key, value)
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = DicomSequence([code_ds(root)])
    if template is not None:
        tpl = Dataset()
        tpl.MappingResource = "DCMR"
        tpl.TemplateIdentifier = template
        ds.ContentTemplateSequence = DicomSequence([tpl])
    ds.ContentSequence = DicomSequence(list(children))
    return reread(ds)


def reread(ds: Dataset) -> Dataset:
    """Write ``ds`` as a Part 10 file and read it back."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return pydicom.dcmread(io.BytesIO(to_bytes(ds)))


def to_bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    for placeholder, value in _PATCHES.items():
        data = data.replace(placeholder, value)
    return data


def ct_report(events: Sequence[Dataset], total_dlp: str | bytes = "456.7", n_events: str = "1",
              template: str | None = "10011", proc: Code = CT_PROC_SRT, sop_class: str = CT_SOP,
              **attrs: Any) -> Dataset:
    children = [
        coded(PROCEDURE_REPORTED, proc, rel="HAS CONCEPT MOD"),
        container(CT_ACCUM, [num(N_EVENTS, n_events, "{events}"), num(DLP_TOTAL, total_dlp, "mGy.cm")]),
        *events,
    ]
    return _document(ROOT, sop_class, children, template, **attrs)


def xray_event(uid: str, dap: str | bytes = "0.000123", dap_unit: str = "Gy.m2", dose_rp: str = "0.0021",
               dose_rp_unit: str = "Gy", plane: Code = SINGLE_PLANE, kvp: str = "75", pulses: str = "30",
               protocol: str | None = "Cardiac fluoro", ev_type: Code = FLUOROSCOPY_SRT,
               extra: Sequence[Dataset] = ()) -> Dataset:
    children = [coded(PLANE, plane), coded(EVENT_TYPE, ev_type)]
    if protocol is not None:
        children.append(text(PROTOCOL, protocol))
    children += [
        uidref(EVENT_UID, uid),
        num(DAP, dap, dap_unit),
        num(DOSE_RP, dose_rp, dose_rp_unit),
        num(PULSE_RATE, "15", "{pulse}/s"),
        num(N_PULSES, pulses, "{pulses}"),
        num(PULSE_WIDTH, "8", "ms"),
        num(KVP, kvp, "kV"),
        *extra,
    ]
    return container(XRAY_EVENT, children)


def accumulated_xray(plane: Code, dap_total: str, dap_unit: str, rp_total: str, rp_unit: str,
                     fluoro_time: str, time_unit: str = "s", fluoro_dap: str = "0.002",
                     acq_dap: str = "0.001") -> Dataset:
    return container(ACCUM_XRAY, [
        coded(PLANE, plane),
        # TID 10004 rows, included without a container (PS3.16 TID 10002)
        num(DAP_TOTAL, dap_total, dap_unit),
        num(DOSE_RP_TOTAL, rp_total, rp_unit),
        num(FLUORO_DAP_TOTAL, fluoro_dap, "Gy.m2"),
        num(ACQ_DAP_TOTAL, acq_dap, "Gy.m2"),
        num(FLUORO_TIME, fluoro_time, time_unit),
    ])


def projection_report(events: Sequence[Dataset], accumulated: Sequence[Dataset], proc: Code = PROJECTION,
                      template: str | None = "10001", **attrs: Any) -> Dataset:
    children = [coded(PROCEDURE_REPORTED, proc, rel="HAS CONCEPT MOD"), *accumulated, *events]
    return _document(ROOT, CT_SOP, children, template, **attrs)


def rrdsr(activity: str = "370", unit: str = "MBq", effective: str | None = "7.0") -> Dataset:
    admin_children = [
        coded(AGENT, FDG),
        coded(RADIONUCLIDE, F18),
        uidref(ADMIN_UID, "1.2.3.4.5.6"),
        num(ACTIVITY, activity, unit),
    ]
    if effective is not None:
        admin_children.append(num(EFFECTIVE_DOSE, effective, "mSv"))
    return _document(RRD_ROOT, RRDSR_SOP, [container(ADMIN, admin_children)], "10021")


ORGAN_DOSE_INFO = ("113517", DCM, "Organ Dose Information")
ORGAN_DOSE = ("113518", DCM, "Organ Dose")
FINDING_SITE_SRT = ("G-C0E3", "SRT", "Finding Site")
BLADDER = ("89837001", "SCT", "Urinary bladder")
KIDNEY = ("64033007", "SCT", "Kidney")
REFERENCE_AUTHORITY = ("121406", DCM, "Reference Authority")
ICRP_106 = ("113523", DCM, "ICRP Publication 106")
START = ("123003", DCM, "Radiopharmaceutical Start DateTime")
EXPOSURE_TIME_RETIRED = ("113735", DCM, "Exposure Time")
EXPOSURE_TIME_CURRENT = ("113824", DCM, "Exposure Time")
MA = ("113734", DCM, "X-Ray Tube Current")


def datetime_item(concept: Code, value: str) -> Dataset:
    ds = item(concept, "DATETIME")
    ds.DateTime = value
    return ds


def organ_dose(organ: Code, dose: str, unit: str = "mGy", laterality: Code | None = None) -> Dataset:
    children = [coded(FINDING_SITE_SRT, organ)]
    if laterality is not None:
        children.append(coded(LATERALITY_SCT, laterality))
    children += [num(ORGAN_DOSE, dose, unit), coded(REFERENCE_AUTHORITY, ICRP_106)]
    return container(ORGAN_DOSE_INFO, children)


def administration(uid: str, activity: str, organs: Sequence[Dataset] = (), effective: str | None = None,
                   start: str | None = None) -> Dataset:
    children = [coded(AGENT, FDG), coded(RADIONUCLIDE, F18), uidref(ADMIN_UID, uid), num(ACTIVITY, activity, "MBq")]
    if start is not None:
        children.append(datetime_item(START, start))
    if effective is not None:
        children.append(num(EFFECTIVE_DOSE, effective, "mSv"))
    children += list(organs)
    return container(ADMIN, children)


def rrdsr_multi(admins: Sequence[Dataset]) -> Dataset:
    return _document(RRD_ROOT, RRDSR_SOP, list(admins), "10021")


def dose_screen(description: str = "Dose Report", sop_class: str = SC_SOP) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = "1.2.826.0.1.3680043.8.498.77"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.SeriesInstanceUID = "1.2.826.0.1.3680043.8.498.78"
    ds.Modality = "CT"
    ds.SeriesNumber = "997"
    ds.SeriesDescription = description
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    ds.Manufacturer = "GE MEDICAL SYSTEMS"
    return reread(ds)
