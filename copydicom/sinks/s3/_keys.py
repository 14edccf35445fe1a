"""Object keys for DICOM instances in S3, from a documented template.

The template is a Python format string over these fields:

==================== ==========================================================
``{prefix}``         the configured prefix (``""`` or ending with ``/``); required first
``{StudyInstanceUID}``  (0020,000D)
``{SeriesInstanceUID}`` (0020,000E)
``{SOPInstanceUID}``    (0008,0018)
``{PatientID}``         (0010,0020)
``{OrthancID}``         Orthanc's instance ID (SHA-1 of the four identifiers)
``{OrthancSeriesID}``   Orthanc's series ID
``{OrthancStudyID}``    Orthanc's study ID
==================== ==========================================================

The default, ``{prefix}{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm``,
keeps a study together under one key prefix (one listing restores a study)
and spreads load over many prefixes (S3 scales request rates per prefix).
A template must name ``{SOPInstanceUID}`` or ``{OrthancID}`` so that each instance
gets its own key.

Values come from the identity of what is sent: after de-identification, the
de-identified UIDs (PS3.15 Annex E replaces them), so no original UID reaches
the bucket.  UIDs are digits and dots (PS3.5 §9.1) and are used as they are;
any other character (``PatientID`` may hold ``/``) is percent-encoded, and a
value of ``.`` or ``..`` is encoded too, so a value can never add or climb a
path segment.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from functools import lru_cache

from copydicom.errors import ConfigError, InvalidInstance
from copydicom.model import Identity, orthanc_id

DEFAULT_KEY_TEMPLATE = "{prefix}{StudyInstanceUID}/{SeriesInstanceUID}/{SOPInstanceUID}.dcm"

KEY_FIELDS = (
    "prefix",
    "StudyInstanceUID",
    "SeriesInstanceUID",
    "SOPInstanceUID",
    "PatientID",
    "OrthancID",
    "OrthancSeriesID",
    "OrthancStudyID",
)

_SAFE = re.compile(r"[A-Za-z0-9._-]")
_ALL_SAFE = re.compile(r"[A-Za-z0-9._-]*")


def check_key_template(template: str, *, where: str) -> None:
    """Raise :class:`ConfigError` unless ``template`` is a usable key template."""
    try:
        fields = [f for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
        specs = [(spec, conv) for _, f, spec, conv in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ConfigError(f"{where}: not a valid template: {exc}") from None
    for name in fields:
        if name not in KEY_FIELDS:
            raise ConfigError(f"{where}: unknown field {{{name}}}; known: {', '.join(KEY_FIELDS)}")
    if any(spec or conv for spec, conv in specs):
        raise ConfigError(f"{where}: format specs and conversions are not allowed")
    if not template.startswith("{prefix}"):
        raise ConfigError(f"{where}: must start with {{prefix}}")
    if "SOPInstanceUID" not in fields and "OrthancID" not in fields:
        raise ConfigError(f"{where}: must contain {{SOPInstanceUID}} or {{OrthancID}} (one key per instance)")
    if template.endswith("/"):
        raise ConfigError(f"{where}: must not end with '/'")


def escape_value(value: str) -> str:
    """Make one identifier safe as (part of) a key segment (percent-encoding)."""
    if value in (".", ".."):
        return value.replace(".", "%2E")
    if _ALL_SAFE.fullmatch(value):
        return value  # UIDs (digits and dots): the common case, without a look at each character
    return "".join(c if _SAFE.match(c) else "".join(f"%{b:02X}" for b in c.encode("utf-8")) for c in value)


def key_fields(identity: Identity, prefix: str) -> Mapping[str, str]:
    """The template fields for one identity (escaped)."""
    return {
        "prefix": prefix,
        "StudyInstanceUID": escape_value(identity.study_uid),
        "SeriesInstanceUID": escape_value(identity.series_uid),
        "SOPInstanceUID": escape_value(identity.sop_uid),
        "PatientID": escape_value(identity.patient_id),
        "OrthancID": identity.orthanc_id,
        "OrthancSeriesID": identity.series_orthanc_id,
        "OrthancStudyID": orthanc_id(identity.patient_id, identity.study_uid),
    }


#: How each template field is computed (only the template's own fields are: two stores and a look-up
#: per instance compute a key; Orthanc IDs are SHA-1 digests).
_FIELD_VALUES: dict[str, Callable[[Identity, str], str]] = {
    "prefix": lambda identity, prefix: prefix,
    "StudyInstanceUID": lambda identity, prefix: escape_value(identity.study_uid),
    "SeriesInstanceUID": lambda identity, prefix: escape_value(identity.series_uid),
    "SOPInstanceUID": lambda identity, prefix: escape_value(identity.sop_uid),
    "PatientID": lambda identity, prefix: escape_value(identity.patient_id),
    "OrthancID": lambda identity, prefix: identity.orthanc_id,
    "OrthancSeriesID": lambda identity, prefix: identity.series_orthanc_id,
    "OrthancStudyID": lambda identity, prefix: orthanc_id(identity.patient_id, identity.study_uid),
}


@lru_cache(maxsize=64)
def _template_fields(template: str) -> tuple[str, ...]:
    return tuple(dict.fromkeys(f for _, f, _, _ in string.Formatter().parse(template) if f is not None))


def object_key(template: str, prefix: str, identity: Identity) -> str:
    """Return the object key of ``identity`` (the same as ``template.format_map(key_fields(...))``).

    Raises
    ------
    InvalidInstance
        If a UID the template needs is empty (the instance cannot be placed).
    """
    fields = {name: _FIELD_VALUES[name](identity, prefix) for name in _template_fields(template)}
    for name, value in (
        ("StudyInstanceUID", identity.study_uid),
        ("SeriesInstanceUID", identity.series_uid),
        ("SOPInstanceUID", identity.sop_uid),
    ):
        if not value and "{" + name + "}" in template:
            raise InvalidInstance(f"no {name}: cannot name the S3 object")
    return template.format_map(fields)


def study_prefix(template: str, prefix: str, study_uid: str) -> str | None:
    """The key prefix that holds every object of one study, if the template has one.

    ``None`` when the template does not start with ``{prefix}{StudyInstanceUID}/``
    (then a study can only be found by reading objects).
    """
    head = "{prefix}{StudyInstanceUID}/"
    if not template.startswith(head):
        return None
    return f"{prefix}{escape_value(study_uid)}/"
