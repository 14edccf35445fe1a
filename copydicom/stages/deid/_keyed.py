"""Keyed, deterministic replacements: UIDs, patient pseudonyms, date offsets.

All derive from HMAC-SHA256 under the project key with a domain label, so the
same input gives the same output in every process and on every machine,
without shared state (PS3.15 E.1.1 action U: "internally consistent").
"""

from __future__ import annotations

import base64
import hmac
import re

from pydicom.uid import UID_dictionary

_UID_RE = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: Root of every UID defined by the DICOM standard (PS3.5 Annex B, PS3.6 Annex A).
DICOM_ROOT = "1.2.840.10008."
_WELL_KNOWN = frozenset(UID_dictionary)


def is_valid_uid(uid: str) -> bool:
    """PS3.5 9.1: digits and dots, no leading zeros in components, <= 64 characters."""
    return 0 < len(uid) <= 64 and _UID_RE.match(uid) is not None


def is_well_known(uid: str) -> bool:
    """SOP classes, transfer syntaxes, coding schemes, well-known instances: never replaced."""
    return uid.startswith(DICOM_ROOT) or uid in _WELL_KNOWN


def _mac(key: bytes, label: str, value: str) -> bytes:
    # hmac.digest: the one-shot C implementation, same bytes as hmac.new(...).digest(), a third of the cost.
    return hmac.digest(key, f"{label}\x00{value}".encode(), "sha256")


def keyed_uid(key: bytes, uid: str) -> str:
    """``2.25.<integer>`` from the first 128 bits of HMAC-SHA256(key, uid) (PS3.5 B.2).

    Well-known UIDs are returned unchanged.  At most 44 characters.
    """
    if is_well_known(uid):
        return uid
    return "2.25." + str(int.from_bytes(_mac(key, "uid", uid)[:16], "big"))


def keyed_pseudonym(key: bytes, patient_id: str, prefix: str = "ANON") -> str:
    """A keyed pseudonym for a PatientID: ``<prefix>`` + 16 base32 characters (80 bits)."""
    digest = _mac(key, "patient", patient_id)[:10]
    return prefix + base64.b32encode(digest).decode("ascii")


def date_offset_days(key: bytes, patient_id: str, low: int, high: int) -> int:
    """Per-patient date offset in ``[low, high]`` days, never 0 if the range allows."""
    span = high - low + 1
    n = int.from_bytes(_mac(key, "date-offset", patient_id)[:8], "big")
    value = low + n % span
    if value == 0 and span > 1:
        value = low if low != 0 else high
    return value
