"""The route-level validity check: is an instance readable as DICOM, before any destination sees it.

A route with several destinations must keep them consistent (hardening item 4):
an Orthanc destination accepts bytes that an S3 destination, which parses the
header to build its object key, refuses as "not readable as DICOM".  So the
pipeline decides once, before the first store, with the same header parse
(PS3.10 file meta and the identifying attributes, no pixel data), and
quarantines what fails at every destination alike.  Single-destination routes
skip it: their one destination decides, and the fast path stays parse-free.
"""

from __future__ import annotations

import io

from copydicom.errors import InvalidInstance

#: What must parse: the identifiers every destination keys on (PS3.3 C.12.1, C.7.2.1, C.7.3.1).
_TAGS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID")


def check_readable(data: bytes) -> None:
    """Raise :class:`~copydicom.errors.InvalidInstance` unless ``data`` parses as a DICOM Part 10 header.

    Only the file meta and the identifying attributes are read (``stop_before_pixels``);
    the reason names the exception type, never a value (it may be PHI).
    """
    from pydicom import dcmread

    try:
        ds = dcmread(io.BytesIO(data), stop_before_pixels=True, specific_tags=list(_TAGS))
    except Exception as exc:  # pydicom raises many types on malformed input; all mean "not DICOM"
        raise InvalidInstance(f"not readable as DICOM: {type(exc).__name__}") from None
    if not str(ds.get("SOPInstanceUID", "") or ""):
        raise InvalidInstance("not readable as DICOM: no SOP Instance UID")
