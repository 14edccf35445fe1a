"""De-identification profiles: PS3.15 options plus copydicom settings.

Configuration (YAML, top-level ``profiles:``)::

    profiles:
      research:
        options: [retain_long_modified_dates, clean_structured_content]
        key_file: /etc/copydicom/deid.key     # owner-only (chmod 600)
        patient_map:                          # optional
          csv: /etc/copydicom/patients.csv    # owner-only; columns below
          id_column: patient_id               # default "patient_id"
          research_id_column: research_id     # default "research_id"
          name_column: research_name          # optional; default: the research ID
          missing: quarantine                 # or "pseudonym"
        accept_pixel_risk: false
        pixel_risk_modalities: [US]           # default
        free_text: replace                    # or "scrub"
        date_shift_days: [-3650, -1]          # per-patient offset range (modified dates)
        pseudonym_prefix: ANON
      export:
        preset: hipaa_safe_harbor             # or private_only; options below are added to the preset's
        options: [retain_safe_private]

Presets (:data:`PRESETS`; also usable by name, e.g. ``--profile hipaa_safe_harbor``):

``private_only``
    Removes private attributes (Retain Safe Private keeps Table E.3.10-1 ones if
    added) and nothing else: names, IDs, dates and UIDs stay; Patient Identity
    Removed is not set.
``hipaa_safe_harbor``
    45 CFR 164.514(b)(2): the Basic Profile + Retain Patient Characteristics +
    Clean Descriptors + Clean Structured Content, except that every date (DA, DT,
    at any depth) is reduced to its year (``YYYY0101``, ``YYYY``) instead of being
    removed or shifted; an age over 89 becomes ``090Y`` and the birth date
    ``<study year - 90>0101``; Patient's Address keeps only the first three ZIP
    digits (``000`` for the restricted three-digit areas); free text is cleaned.
"""

from __future__ import annotations

import csv
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from copydicom.errors import ConfigError
from copydicom.secrets import check_private_file, expand_env
from copydicom.stages.deid._tables import OPTIONS
from copydicom.stages.pixels import OPTION as CLEAN_PIXEL_DATA
from copydicom.stages.pixels import PIXEL_KEYS, PixelSettings

#: Secondary Capture SOP classes (PS3.4 B.5): pixels often are screenshots.
SECONDARY_CAPTURE_CLASSES: frozenset[str] = frozenset(
    {
        "1.2.840.10008.5.1.4.1.1.7",
        "1.2.840.10008.5.1.4.1.1.7.1",
        "1.2.840.10008.5.1.4.1.1.7.2",
        "1.2.840.10008.5.1.4.1.1.7.3",
        "1.2.840.10008.5.1.4.1.1.7.4",
        "1.2.840.10008.5.1.4.1.1.104.1",  # Encapsulated PDF
    }
)

#: Named presets: the base a profile starts from (``preset:``), and their default options.
PRESETS: dict[str, tuple[str, ...]] = {
    "ps315": ("retain_long_modified_dates", "clean_structured_content"),
    "private_only": (),
    "hipaa_safe_harbor": ("retain_patient_characteristics", "clean_descriptors", "clean_structured_content"),
}

_KNOWN_KEYS = {
    "preset", "options", "key_file", "patient_map", "accept_pixel_risk", "pixel_risk_modalities",
    "pixel_risk_sop_classes", "free_text", "date_shift_days", "pseudonym_prefix", "description",
} | PIXEL_KEYS


@dataclass(frozen=True)
class PatientMap:
    """Original PatientID -> research ID (and optional research name), from a CSV file."""

    path: str
    missing: str = "quarantine"
    ids: Mapping[str, str] = field(default_factory=dict)
    names: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_mapping(cls, data: Any, *, where: str) -> PatientMap:
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping with 'csv' and 'missing'")
        unknown = set(data) - {"csv", "id_column", "research_id_column", "name_column", "missing"}
        if unknown:
            raise ConfigError(f"{where}.{min(unknown)}: unknown key")
        if "csv" not in data:
            raise ConfigError(f"{where}.csv: required")
        missing = str(data.get("missing", "quarantine"))
        if missing not in ("quarantine", "pseudonym"):
            raise ConfigError(f"{where}.missing: must be 'quarantine' or 'pseudonym', not {missing!r}")
        path = expand_env(str(data["csv"]), where=f"{where}.csv")
        p = check_private_file(path, where=f"{where}.csv")
        id_col = str(data.get("id_column", "patient_id"))
        rid_col = str(data.get("research_id_column", "research_id"))
        name_col = data.get("name_column")
        ids: dict[str, str] = {}
        names: dict[str, str] = {}
        with open(p, newline="", encoding="utf-8") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            for col in (id_col, rid_col) + ((str(name_col),) if name_col else ()):
                if col not in cols:
                    raise ConfigError(f"{where}.csv: column {col!r} not in {p.name} (has {cols})")
            for n, rec in enumerate(reader, start=2):
                old, new = (rec[id_col] or "").strip(), (rec[rid_col] or "").strip()
                if not new:
                    raise ConfigError(f"{where}.csv: {p.name} line {n}: empty {rid_col}")
                ids[old] = new
                if name_col:
                    names[old] = (rec[str(name_col)] or "").strip() or new
        return cls(path=str(p), missing=missing, ids=ids, names=names)


@dataclass(frozen=True)
class DeidProfile:
    """A named de-identification profile.

    Attributes
    ----------
    name
        The profile's name in ``profiles:``.
    options
        PS3.15 Table E.1-1 option columns applied on top of the Basic Profile.
    key_file
        Path of the owner-only project key (see :func:`load_key`), if configured.
    patient_map
        CSV mapping of PatientIDs; ``None`` means keyed pseudonyms for all.
    accept_pixel_risk
        Send instances whose pixels may show identity (else quarantine them).
    pixel_risk_modalities, pixel_risk_sop_classes
        What counts as risky besides Burned In Annotation = YES.
    free_text
        How action C cleans free text (descriptors, SR TEXT): ``replace`` puts a
        fixed marker; ``scrub`` keeps the text minus the instance's own
        identifiers (names, IDs, dates) and long digit runs.
    date_shift_days
        Range ``(low, high)`` of the per-patient date offset in days.
    pseudonym_prefix
        Prefix of keyed patient pseudonyms.
    preset
        ``ps315`` (the Basic Profile and ``options``), ``private_only`` or
        ``hipaa_safe_harbor`` (see the module docstring).
    """

    name: str = "default"
    options: tuple[str, ...] = ("retain_long_modified_dates", "clean_structured_content")
    key_file: str | None = None
    patient_map: PatientMap | None = None
    accept_pixel_risk: bool = False
    pixel_risk_modalities: frozenset[str] = frozenset({"US", "IVUS", "XC", "OT", "DOC"})
    pixel_risk_sop_classes: frozenset[str] = SECONDARY_CAPTURE_CLASSES
    free_text: str = "replace"
    date_shift_days: tuple[int, int] = (-3650, -1)
    pseudonym_prefix: str = "ANON"
    pixels: PixelSettings = PixelSettings()  # Clean Pixel Data settings (copydicom.stages.pixels)
    preset: str = "ps315"

    @classmethod
    def named(cls, name: str) -> DeidProfile | None:
        """A built-in profile by name: ``default``, or a preset (``private_only``, ``hipaa_safe_harbor``)."""
        if name == "default":
            return cls.default()
        if name in PRESETS and name != "ps315":
            return cls(name=name, options=PRESETS[name], preset=name)
        return None

    @classmethod
    def default(cls) -> DeidProfile:
        """The documented default: Basic Profile + Retain Longitudinal Temporal
        Information with Modified Dates + Clean Structured Content; keyed
        pseudonyms; free text replaced; risky pixels quarantined."""
        return cls()

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any] | None, *, where: str) -> DeidProfile:
        """Build a profile from its config mapping; raises ConfigError naming the key."""
        if data is None:
            data = {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{where}: expected a mapping")
        unknown = set(data) - _KNOWN_KEYS
        if unknown:
            raise ConfigError(f"{where}.{min(unknown)}: unknown key (known: {sorted(_KNOWN_KEYS)})")
        preset = str(data.get("preset", name if name in PRESETS else "ps315"))
        if preset not in PRESETS:
            raise ConfigError(f"{where}.preset: unknown preset {preset!r} (known: {', '.join(PRESETS)})")
        base = cls.default()
        if preset == "ps315":
            opts_raw = data.get("options", list(base.options))
        else:  # a preset's options are extended, not replaced
            opts_raw = list(PRESETS[preset]) + list(data.get("options") or [])
        if not isinstance(opts_raw, (list, tuple)):
            raise ConfigError(f"{where}.options: expected a list of option names")
        opts: list[str] = []
        for i, o in enumerate(opts_raw):
            o = str(o).strip().replace("-", "_")
            if o not in OPTIONS and o != CLEAN_PIXEL_DATA:
                raise ConfigError(f"{where}.options[{i}]: unknown option {o!r} "
                                  f"(known: {', '.join(OPTIONS + (CLEAN_PIXEL_DATA,))})")
            if o not in opts:
                opts.append(o)
        if "retain_long_full_dates" in opts and "retain_long_modified_dates" in opts:
            raise ConfigError(f"{where}.options: retain_long_full_dates and retain_long_modified_dates exclude each other")
        key_file = data.get("key_file")
        pmap = None
        if data.get("patient_map") is not None:
            pmap = PatientMap.from_mapping(data["patient_map"], where=f"{where}.patient_map")
        accept = data.get("accept_pixel_risk", False)
        if not isinstance(accept, bool):
            raise ConfigError(f"{where}.accept_pixel_risk: expected true or false")
        free_text = str(data.get("free_text", base.free_text))
        if free_text not in ("replace", "scrub"):
            raise ConfigError(f"{where}.free_text: must be 'replace' or 'scrub'")
        shift = data.get("date_shift_days", list(base.date_shift_days))
        try:
            lo, hi = (int(v) for v in shift)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}.date_shift_days: expected [low, high] integers") from None
        if lo > hi or (lo <= 0 <= hi and lo == hi == 0):
            raise ConfigError(f"{where}.date_shift_days: low must be <= high and the range not only 0")
        mods = data.get("pixel_risk_modalities", sorted(base.pixel_risk_modalities))
        classes = data.get("pixel_risk_sop_classes", sorted(base.pixel_risk_sop_classes))
        if not isinstance(mods, (list, tuple)) or not isinstance(classes, (list, tuple)):
            raise ConfigError(f"{where}.pixel_risk_modalities/pixel_risk_sop_classes: expected lists")
        prefix = str(data.get("pseudonym_prefix", base.pseudonym_prefix))
        if not prefix or len(prefix) > 16 or "\\" in prefix:
            raise ConfigError(f"{where}.pseudonym_prefix: 1 to 16 characters, no backslash")
        return cls(
            name=name,
            options=tuple(opts),
            key_file=expand_env(str(key_file), where=f"{where}.key_file") if key_file else None,
            patient_map=pmap,
            accept_pixel_risk=accept,
            pixel_risk_modalities=frozenset(str(m).upper() for m in mods),
            pixel_risk_sop_classes=frozenset(str(c) for c in classes),
            free_text=free_text,
            date_shift_days=(lo, hi),
            pseudonym_prefix=prefix,
            pixels=PixelSettings.from_profile(data, where=where),
            preset=preset,
        )


def profiles_from_config(data: Mapping[str, Any], *, where: str = "profiles") -> dict[str, DeidProfile]:
    """Parse the ``profiles:`` section of a config file."""
    section = data.get("profiles", {}) if isinstance(data, Mapping) else None
    if not isinstance(section, Mapping):
        raise ConfigError(f"{where}: expected a mapping of profile names")
    return {str(k): DeidProfile.from_mapping(str(k), v, where=f"{where}.{k}") for k, v in section.items()}


def load_key(path: str | Path, *, where: str = "key_file") -> bytes:
    """Read the project key from an owner-only file.

    The key is the file's bytes without trailing whitespace; at least 16 bytes
    (make one with ``head -c 32 /dev/urandom | base64 > deid.key; chmod 600 deid.key``).

    Raises
    ------
    ConfigError
        If the file is missing, group/world-accessible, or too short.
    """
    p = check_private_file(path, where=where)
    key = p.read_bytes().rstrip()
    if len(key) < 16:
        raise ConfigError(f"{where}: {p} holds {len(key)} bytes; a key needs at least 16")
    return key
