"""Coded concepts of the radiation dose templates, as data.

Every code used by the extractor is listed here with the template that uses it
(PS3.16, TID 10001-10007, 10011-10014, 10021-10022; code meanings from PS3.16
Annex D, DICOM Controlled Terminology).  Concepts are compared by code value
and coding scheme only, never by meaning text.  SNOMED codes arrive either in
the retired SNOMED-RT form (scheme ``SRT``, e.g. ``P5-08000``) or as SNOMED CT
(scheme ``SCT``, ``77477000``); :data:`SRT_TO_SCT` maps the former to the
latter so both compare equal.
"""

from __future__ import annotations

from typing import NamedTuple


class Concept(NamedTuple):
    """A coded concept: code value and (normalised) coding scheme designator."""

    value: str
    scheme: str


#: SNOMED-RT ids (``SRT``) to SNOMED CT ids (``SCT``) for the concepts used here
#: (PS3.16 Annex O, "SNOMED Concept Id to SNOMED ID Mapping").
SRT_TO_SCT: dict[str, str] = {
    "P5-08000": "77477000",  # Computed Tomography X-Ray
    "P5-08001": "116152004",  # Spiral Acquisition
    "P5-06000": "44491008",  # Fluoroscopy
    "P5-40010": "71651007",  # Mammography
    "G-C171": "272741003",  # Laterality
    "T-04020": "73056007",  # Right breast
    "T-04030": "80248007",  # Left breast
    "T-04080": "63762007",  # Both breasts
    "F-61FDB": "349358000",  # Radiopharmaceutical agent
    "C-10072": "89457008",  # Radionuclide
    "G-A100": "24028007",  # Right
    "G-A101": "7771000",  # Left
    "G-A102": "51440002",  # Right and left
    "G-C0E3": "363698007",  # Finding Site
    "G-C340": "410675002",  # Route of administration
}


def concept(value: str | None, scheme: str | None) -> Concept | None:
    """Normalise a code: strip blanks, upper-case the scheme, map SRT to SCT.

    Returns ``None`` for an empty code value.
    """
    v = (value or "").strip()
    if not v:
        return None
    s = (scheme or "").strip().upper()
    if s == "SRT" or s == "SNM3":
        mapped = SRT_TO_SCT.get(v)
        if mapped is not None:
            return Concept(mapped, "SCT")
    return Concept(v, s)


def _dcm(value: str) -> Concept:
    return Concept(value, "DCM")


def _sct(value: str) -> Concept:
    return Concept(value, "SCT")


# Document roots (PS3.16 TID 10001 / TID 10011 / TID 10021)
XRAY_RADIATION_DOSE_REPORT = _dcm("113701")
RADIOPHARMACEUTICAL_RADIATION_DOSE_REPORT = _dcm("113500")
PROCEDURE_REPORTED = _dcm("121058")
COMPUTED_TOMOGRAPHY = _sct("77477000")
PROJECTION_XRAY = _dcm("113704")
MAMMOGRAPHY = _sct("71651007")
COMMENT = _dcm("121106")

# TID 10011 CT Radiation Dose / TID 10012 CT Accumulated Dose Data
CT_ACCUMULATED_DOSE_DATA = _dcm("113811")
TOTAL_NUMBER_OF_IRRADIATION_EVENTS = _dcm("113812")
CT_DOSE_LENGTH_PRODUCT_TOTAL = _dcm("113813")
CT_EFFECTIVE_DOSE_TOTAL = _dcm("113814")

# TID 10013 CT Irradiation Event Data (and TID 10014 Scanning Length)
CT_ACQUISITION = _dcm("113819")
ACQUISITION_PROTOCOL = _dcm("125203")
TARGET_REGION = _dcm("123014")
CT_ACQUISITION_TYPE = _dcm("113820")
IRRADIATION_EVENT_UID = _dcm("113769")
CT_ACQUISITION_PARAMETERS = _dcm("113822")
EXPOSURE_TIME_CT = _dcm("113824")
SCANNING_LENGTH = _dcm("113825")
NOMINAL_SINGLE_COLLIMATION_WIDTH = _dcm("113826")
NOMINAL_TOTAL_COLLIMATION_WIDTH = _dcm("113827")
PITCH_FACTOR = _dcm("113828")
NUMBER_OF_XRAY_SOURCES = _dcm("113823")
CT_XRAY_SOURCE_PARAMETERS = _dcm("113831")
IDENTIFICATION_OF_XRAY_SOURCE = _dcm("113832")
KVP = _dcm("113733")
MAXIMUM_XRAY_TUBE_CURRENT = _dcm("113833")
XRAY_TUBE_CURRENT = _dcm("113734")
EXPOSURE_TIME_PER_ROTATION = _dcm("113834")
CT_DOSE = _dcm("113829")
MEAN_CTDIVOL = _dcm("113830")
CTDIW_PHANTOM_TYPE = _dcm("113835")
DLP = _dcm("113838")
EFFECTIVE_DOSE = _dcm("113839")

# TID 10001 Projection X-Ray Radiation Dose, TID 10002 Accumulated X-Ray Dose,
# TID 10004 (fluoro + acquisition), TID 10005 (mammography), TID 10007 (total)
ACCUMULATED_XRAY_DOSE_DATA = _dcm("113702")
ACQUISITION_PLANE = _dcm("113764")
DOSE_AREA_PRODUCT_TOTAL = _dcm("113722")
DOSE_RP_TOTAL = _dcm("113725")
FLUORO_DOSE_AREA_PRODUCT_TOTAL = _dcm("113726")
ACQUISITION_DOSE_AREA_PRODUCT_TOTAL = _dcm("113727")
FLUORO_DOSE_RP_TOTAL = _dcm("113728")
ACQUISITION_DOSE_RP_TOTAL = _dcm("113729")
TOTAL_FLUORO_TIME = _dcm("113730")
TOTAL_NUMBER_OF_RADIOGRAPHIC_FRAMES = _dcm("113731")
TOTAL_ACQUISITION_TIME = _dcm("113855")
ACCUMULATED_AVERAGE_GLANDULAR_DOSE = _dcm("111637")
LATERALITY = _sct("272741003")

# TID 10003 Irradiation Event X-Ray Data (10003A detector, 10003B source)
IRRADIATION_EVENT_XRAY_DATA = _dcm("113706")
IRRADIATION_EVENT_TYPE = _dcm("113721")
DOSE_AREA_PRODUCT = _dcm("122130")
DOSE_RP = _dcm("113738")
ENTRANCE_EXPOSURE_AT_RP = _dcm("111636")
AVERAGE_GLANDULAR_DOSE = _dcm("111631")
FLUORO_MODE = _dcm("113732")
PULSE_RATE = _dcm("113791")
NUMBER_OF_PULSES = _dcm("113768")
PULSE_WIDTH = _dcm("113793")
#: Exposure Time: 113735 is retired (still written by older equipment); 113824 is the current code,
#: which several vendors also use in projection X-ray events (PS3.16 TID 10003B).
EXPOSURE_TIME_XRAY = _dcm("113735")
EXPOSURE = _dcm("113736")
IRRADIATION_DURATION = _dcm("113742")
AVERAGE_XRAY_TUBE_CURRENT = _dcm("113767")

# TID 10021 Radiopharmaceutical Radiation Dose / TID 10022 Administration Event
RADIOPHARMACEUTICAL_ADMINISTRATION = _dcm("113502")
RADIOPHARMACEUTICAL_ADMINISTRATION_EVENT_UID = _dcm("113503")
RADIOPHARMACEUTICAL_AGENT = _sct("349358000")
RADIONUCLIDE = _sct("89457008")
ADMINISTERED_ACTIVITY = _dcm("113507")
RADIOPHARMACEUTICAL_START = _dcm("123003")
RADIOPHARMACEUTICAL_STOP = _dcm("123004")
ROUTE_OF_ADMINISTRATION = _sct("410675002")
# TID 10023 Organ Dose
ORGAN_DOSE_INFORMATION = _dcm("113517")
ORGAN_DOSE = _dcm("113518")
FINDING_SITE = _sct("363698007")
REFERENCE_AUTHORITY = _dcm("121406")
MASS = _sct("118538004")

#: Acquisition plane values (CID 10003).
PLANE_NAMES: dict[Concept, str] = {
    _dcm("113620"): "A",
    _dcm("113621"): "B",
    _dcm("113622"): "single",
}

#: Laterality values for mammography (CID 6022 breasts, CID 244 sides).
LATERALITY_NAMES: dict[Concept, str] = {
    _sct("80248007"): "left",
    _sct("73056007"): "right",
    _sct("63762007"): "both",
    _sct("7771000"): "left",
    _sct("24028007"): "right",
    _sct("51440002"): "both",
}
