"""Settings of the Clean Pixel Data option, read from a de-identification profile.

Profile keys (all optional; used when ``options`` holds ``clean_pixel_data``)::

    profiles:
      ultrasound:
        options: [retain_long_modified_dates, clean_structured_content, clean_pixel_data]
        builtin_pixel_rules: true       # CTP DicomPixelAnonymizer rules (data/ctp_pixel_rules.json)
        pixel_rules:                    # more rules, checked with the built-in ones
          - label: ACME SONO 1 640x480
            when: {Manufacturer: ACME, ManufacturerModelName: SONO 1, Rows: 480, Columns: 640}
            rects: [[0, 0, 640, 40]]           # x0, y0, x1, y1 (exclusive ends)
            ctp_rects: [[0, 440, 160, 40]]     # x, y, width, height (CTP convention)
            allow_text: [[560, 220, 640, 260]] # text allowed here (ocr_text: any)
        ocr_redact: true                # mask text the OCR finds (else: quarantine)
        ocr_text: any                   # or "identifiers": names, IDs, dates of the instance
        ocr_min_confidence: 50          # Tesseract word confidence (0-100)
        ocr_scale: 1                    # 2 or 3: frames enlarged before OCR (fonts under ~12 px; ~3x the time)
        ocr_lang: eng
        tessdata: /usr/share/tesseract-ocr/5/tessdata   # default: $TESSDATA_PREFIX or the Debian path

This module imports nothing heavy: the profile parser uses it at start-up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from copydicom.errors import ConfigError

#: The profile keys this option reads.
PIXEL_KEYS: frozenset[str] = frozenset(
    {"builtin_pixel_rules", "pixel_rules", "ocr_redact", "ocr_text", "ocr_min_confidence", "ocr_lang", "tessdata",
     "ocr_scale"}
)
#: Condition operators (those of CTP's scripts, as deid reads them).
OPS: tuple[str, ...] = ("contains", "notcontains", "equals", "notequals", "missing", "empty", "present")
Rect = tuple[int, int, int, int]


@dataclass(frozen=True)
class Condition:
    """One test on a header attribute (keyword, or ``GGGGEEEE`` hex)."""

    op: str
    field: str
    value: str = ""


@dataclass(frozen=True)
class Rule:
    """When every clause of ``all`` has one true condition, blank ``rects`` and allow text in ``allow``."""

    label: str
    all: tuple[tuple[Condition, ...], ...]
    rects: tuple[Rect, ...] = ()
    allow: tuple[Rect, ...] = ()
    builtin: bool = False


@dataclass(frozen=True)
class PixelSettings:
    """Parsed pixel-cleaning settings of one profile (see the module docstring)."""

    builtin_rules: bool = True
    rules: tuple[Rule, ...] = ()
    ocr_redact: bool = True
    ocr_text: str = "any"
    ocr_min_confidence: int = 50
    ocr_lang: str = "eng"
    tessdata: str | None = None
    ocr_scale: int = 1

    @classmethod
    def from_profile(cls, data: Mapping[str, Any], *, where: str) -> PixelSettings:
        """Read the :data:`PIXEL_KEYS` of a profile mapping; ConfigError names the key."""
        base = cls()
        builtin = data.get("builtin_pixel_rules", base.builtin_rules)
        redact = data.get("ocr_redact", base.ocr_redact)
        for key, value in (("builtin_pixel_rules", builtin), ("ocr_redact", redact)):
            if not isinstance(value, bool):
                raise ConfigError(f"{where}.{key}: expected true or false")
        text = str(data.get("ocr_text", base.ocr_text))
        if text not in ("any", "identifiers"):
            raise ConfigError(f"{where}.ocr_text: must be 'any' or 'identifiers', not {text!r}")
        conf = data.get("ocr_min_confidence", base.ocr_min_confidence)
        if isinstance(conf, bool) or not isinstance(conf, int) or not 0 <= conf <= 100:
            raise ConfigError(f"{where}.ocr_min_confidence: expected an integer from 0 to 100")
        scale = data.get("ocr_scale", base.ocr_scale)
        if isinstance(scale, bool) or scale not in (1, 2, 3):
            raise ConfigError(f"{where}.ocr_scale: 1, 2 or 3")
        raw_rules = data.get("pixel_rules", [])
        if not isinstance(raw_rules, (list, tuple)):
            raise ConfigError(f"{where}.pixel_rules: expected a list of rules")
        rules = tuple(rule_from_config(r, where=f"{where}.pixel_rules[{i}]") for i, r in enumerate(raw_rules))
        tessdata = data.get("tessdata")
        return cls(builtin_rules=builtin, rules=rules, ocr_redact=redact, ocr_text=text, ocr_min_confidence=conf,
                   ocr_lang=str(data.get("ocr_lang", base.ocr_lang)), tessdata=str(tessdata) if tessdata else None,
                   ocr_scale=int(scale))


def _rects(raw: Any, *, where: str, ctp: bool) -> tuple[Rect, ...]:
    if not isinstance(raw, (list, tuple)):
        raise ConfigError(f"{where}: expected a list of [4 integers]")
    out = []
    for i, r in enumerate(raw):
        if (not isinstance(r, (list, tuple)) or len(r) != 4
                or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in r)):
            raise ConfigError(f"{where}[{i}]: expected 4 non-negative integers")
        x0, y0, a, b = (int(v) for v in r)
        x1, y1 = (x0 + a, y0 + b) if ctp else (a, b)
        if x1 <= x0 or y1 <= y0:
            raise ConfigError(f"{where}[{i}]: empty rectangle")
        out.append((x0, y0, x1, y1))
    return tuple(out)


def rule_from_config(raw: Any, *, where: str) -> Rule:
    """A rule from the config: ``when`` maps a keyword to a value (equals, case-insensitive), a list of
    values (any of them) or ``{op: value}`` with an operator of :data:`OPS`."""
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: expected a mapping with label, when and rects")
    unknown = set(raw) - {"label", "when", "rects", "ctp_rects", "allow_text"}
    if unknown:
        raise ConfigError(f"{where}.{min(unknown)}: unknown key")
    when = raw.get("when", {})
    if not isinstance(when, Mapping):
        raise ConfigError(f"{where}.when: expected a mapping of attribute keywords")
    clauses = []
    for kw, spec in when.items():
        if isinstance(spec, Mapping):
            alts = []
            for op, value in spec.items():
                if op not in OPS:
                    raise ConfigError(f"{where}.when.{kw}: unknown operator {op!r} (known: {', '.join(OPS)})")
                alts.append(Condition(str(op), str(kw), "" if value is None else str(value)))
            clauses.append(tuple(alts))
        elif isinstance(spec, (list, tuple)):
            clauses.append(tuple(Condition("equals", str(kw), str(v)) for v in spec))
        else:
            clauses.append((Condition("equals", str(kw), str(spec)),))
    rects = _rects(raw.get("rects", []), where=f"{where}.rects", ctp=False)
    rects += _rects(raw.get("ctp_rects", []), where=f"{where}.ctp_rects", ctp=True)
    allow = _rects(raw.get("allow_text", []), where=f"{where}.allow_text", ctp=False)
    if not rects and not allow:
        raise ConfigError(f"{where}: a rule needs rects, ctp_rects or allow_text")
    return Rule(label=str(raw.get("label", f"rule {where}")), all=tuple(clauses), rects=rects, allow=allow)
