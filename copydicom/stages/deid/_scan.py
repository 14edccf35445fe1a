"""Risk scan: what in a dataset could still identify a person.

Reports (by tag path, never the value): person names (PN), free text in
private or descriptor attributes, dates that were not shifted (no
Longitudinal Temporal Information Modified = MODIFIED), identifiers that are
not keyed pseudonyms, private attributes, burned-in annotation.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from pydicom import Dataset, dcmread

_ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "MedicalRecordLocator", "IssuerOfPatientID")
_TEXT_VRS = frozenset({"LO", "SH", "ST", "LT", "UT", "UC"})
_DESCRIPTOR_WORDS = ("Description", "Comment", "Comments", "Text", "Label", "Name")
_NOT_RISKY_TEXT = frozenset({"DeidentificationMethod", "CodeMeaning", "Manufacturer", "ManufacturerModelName",
                             "SpecificCharacterSet", "ImplementationVersionName"})


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
            if elem.tag.is_private:
                if elem.tag.element >= 0x1000:
                    findings.append(Finding(path, "private attribute" + (" with text" if elem.VR in _TEXT_VRS else "")))
                continue
            if elem.tag.group & 0xFF00 in (0x5000, 0x6000) and elem.tag.element in (0x3000, 0x4000):
                findings.append(Finding(path, "overlay or curve data"))
            elif elem.VR == "PN" and not (deidentified and kw == "PatientName"):
                findings.append(Finding(path, "person name"))
            elif elem.VR in ("DA", "DT") and not shifted and not str(elem.value).startswith("1900"):
                findings.append(Finding(path, "date not shifted"))
            elif kw in _ID_KEYWORDS and kw != "PatientID":
                findings.append(Finding(path, "identifier"))
            elif elem.VR in _TEXT_VRS and kw not in _NOT_RISKY_TEXT and (
                any(kw.endswith(w) for w in _DESCRIPTOR_WORDS) or kw == "TextValue"
            ) and str(elem.value) != "CLEANED":
                findings.append(Finding(path, "free text"))

    walk(ds, "")
    return findings


def scan_file(path: str | Path) -> list[Finding]:
    """Scan one DICOM file (pixel data is not read)."""
    ds = dcmread(str(path), stop_before_pixels=True)
    return scan_dataset(ds)
