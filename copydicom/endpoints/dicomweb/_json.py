"""Reading DICOM JSON (PS3.18 F.2): the attributes QIDO-RS returns."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

STUDY_UID = "0020000D"
SERIES_UID = "0020000E"
SOP_UID = "00080018"
SOP_CLASS = "00080016"
PATIENT_ID = "00100020"
RETRIEVE_URL = "00081190"
# STOW-RS response (PS3.18 10.5.3, Table 10.5.3-1)
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"
REFERENCED_SOP_INSTANCE = "00081155"


def first(obj: Mapping[str, Any], tag: str, default: str = "") -> str:
    """The first value of ``tag`` in a DICOM JSON object, as a string."""
    element = obj.get(tag)
    if not isinstance(element, Mapping):
        return default
    values = element.get("Value")
    if not values:
        return default
    value = values[0]
    if isinstance(value, Mapping):  # person name
        return str(value.get("Alphabetic", default))
    return str(value)


def items(obj: Mapping[str, Any], tag: str) -> list[Mapping[str, Any]]:
    """The items of a sequence element (``[]`` when absent or empty)."""
    element = obj.get(tag)
    if not isinstance(element, Mapping):
        return []
    return [v for v in element.get("Value") or [] if isinstance(v, Mapping)]


def strip_bulk(obj: Any) -> Any:
    """A copy of a DICOM JSON object without bulk-data elements (``BulkDataURI``, ``InlineBinary``
    of pixel data): what is left is the header, for the index."""
    if isinstance(obj, Mapping):
        out: dict[str, Any] = {}
        for tag, element in obj.items():
            if isinstance(element, Mapping) and ("BulkDataURI" in element or tag in ("7FE00010", "7FE00008", "7FE00009")):
                continue
            if isinstance(element, Mapping) and element.get("vr") == "SQ":
                element = {**element, "Value": [strip_bulk(i) for i in element.get("Value") or []]}
            out[tag] = element
        return out
    return obj
