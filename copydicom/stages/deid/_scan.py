"""Risk scan: what in a dataset could still identify a person.

Reports (by tag path, never the value): person names (PN), free text in
private or descriptor attributes, dates that were not shifted (no
Longitudinal Temporal Information Modified = MODIFIED), identifiers that are
not keyed pseudonyms, private attributes, burned-in annotation, original
(non-keyed) UIDs in a de-identified file that does not declare Retain UIDs.
copydicom's own placeholders (``ANONYMOUS``, ``ANONYMIZED``, ``CLEANED``) are
not findings: a de-identified output of copydicom scans clean.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset

from copydicom.stages.deid._keyed import is_well_known
from copydicom.stages.structure import read_checked

_ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator", "IssuerOfPatientID")
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_DESCRIPTOR_WORDS = ("Description", "Comment", "Comments", "Text", "Label", "Name")
_NOT_RISKY_TEXT = frozenset({"DeidentificationMethod", "CodeMeaning", "Manufacturer", "ManufacturerModelName",
                             "SpecificCharacterSet", "ImplementationVersionName"})


#: Values copydicom writes in place of removed content (dummies, cleaned text).
PLACEHOLDERS = frozenset({"ANONYMOUS", "ANONYMIZED", "CLEANED"})
#: UI attributes that name classes, syntaxes or coding schemes (never instance identifiers).
_CLASS_UID_TAGS = frozenset({0x00020002, 0x00020010, 0x00020012, 0x00080016, 0x0008001A, 0x0008001B, 0x00080062,
                             0x0008010C, 0x00080117, 0x00080118, 0x00081150, 0x0008114A, 0x00041510, 0x00041512})
_RETAIN_UIDS_CODE = "113110"


@dataclass(frozen=True)
class Finding:
    """One possible identifier: where (tag path) and what kind, never the value."""

    path: str
    kind: str

    def __str__(self) -> str:
        return f"{self.path}: {self.kind}"


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def scan_dataset(ds: Dataset) -> list[Finding]:
    """Return the findings for one dataset (empty list: nothing found)."""
    findings: list[Finding] = []
    shifted = str(ds.get("LongitudinalTemporalInformationModified", "") or "") == "MODIFIED"
    deidentified = str(ds.get("PatientIdentityRemoved", "") or "") == "YES"
    codes = {str(getattr(i, "CodeValue", "")) for i in ds.get("DeidentificationMethodCodeSequence", None) or ()}
    check_uids = not (deidentified and _RETAIN_UIDS_CODE in codes)
    pid = str(ds.get("PatientID", "") or "")
    if pid and not deidentified:
        findings.append(Finding("(0010,0020)", "PatientID is not a pseudonym"))
    if str(ds.get("BurnedInAnnotation", "") or "").upper() == "YES":
        findings.append(Finding("(0028,0301)", "burned-in annotation in the pixels"))

    def walk(d: Dataset, prefix: str) -> None:
        for elem in d:
            path = prefix + _fmt(elem.tag)
            kw = elem.keyword
            if elem.VR == "SQ":
                for item in elem.value:
                    walk(item, path + ">")
                continue
            if elem.value in (None, "", b""):
                continue
            if elem.VR in ("PN", "LO", "SH", "ST", "LT", "UT", "UC", "CS") and str(elem.value).strip() in PLACEHOLDERS:
                continue
            if elem.tag.is_private:
                if elem.tag.element >= 0x1000:
                    findings.append(Finding(path, "private attribute" + (" with text" if elem.VR in _TEXT_VRS else "")))
                continue
            if elem.tag.group & 0xFF00 in (0x5000, 0x6000) and elem.tag.element in (0x3000, 0x4000):
                findings.append(Finding(path, "overlay or curve data"))
            elif elem.VR == "PN" and not (deidentified and kw == "PatientName"):
                findings.append(Finding(path, "person name"))
            elif elem.VR == "UI":
                if check_uids and int(elem.tag) not in _CLASS_UID_TAGS:
                    values = elem.value if isinstance(elem.value, (list, tuple)) else [elem.value]
                    if any(not str(v).startswith("2.25.") and not is_well_known(str(v)) for v in values):
                        findings.append(Finding(path, "original UID (not a keyed replacement)"))
            elif elem.VR in ("DA", "DT") and not shifted and not str(elem.value).startswith("1900"):
                findings.append(Finding(path, "date not shifted"))
            elif kw in _ID_KEYWORDS and kw != "PatientID":
                findings.append(Finding(path, "identifier"))
            elif elem.VR in _TEXT_VRS and kw not in _NOT_RISKY_TEXT and (
                any(kw.endswith(w) for w in _DESCRIPTOR_WORDS) or kw == "TextValue"
            ):
                findings.append(Finding(path, "free text"))

    walk(ds, "")
    return findings


def scan_bytes(data: bytes) -> list[Finding]:
    """Scan DICOM bytes, with or without a Part 10 header (a C-STORE payload).

    Raises
    ------
    InvalidInstance
        Bytes that are not DICOM, truncated or too deeply nested: such a file is not clean.
    """
    return scan_dataset(read_checked(data, stop_before_pixels=True))


def scan_file(path: str | Path) -> list[Finding]:
    """Scan one DICOM file (pixel data is not read); raises InvalidInstance if unreadable."""
    with open(path, "rb") as fh:
        return scan_bytes(fh.read())
