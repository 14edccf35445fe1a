"""Reading DICOM values without trusting pydicom's conversion of numeric strings.

pydicom raises on a Decimal String such as ``10.50/ 15.00`` when the element is
first accessed; real dose reports carry such values.  These helpers read the raw
bytes of IS/DS elements themselves and convert text values (DA, TM, DT) to ISO
forms, never raising (PS3.5 Section 6.2, Table 6.2-1).
"""

from __future__ import annotations

import math
from typing import Any

from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.tag import BaseTag, Tag


def element_text(ds: Dataset, tag: int | BaseTag) -> str | None:
    """Return the raw text of a string-valued element, or ``None`` if absent or empty.

    Unlike ``ds[tag].value`` this never converts IS/DS values, so an invalid number
    such as ``10.50/ 15.00`` comes back as text.  Multiple values keep their
    backslash separators.
    """
    try:
        item = ds.get_item(Tag(tag))
    except (KeyError, ValueError, TypeError):
        return None
    if item is None:
        return None
    return _item_text(ds, item)


def _item_text(ds: Dataset, item: RawDataElement | DataElement) -> str | None:
    value = item.value
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        text = bytes(value).decode("latin-1", errors="replace")
    elif isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        text = "\\".join(_scalar_text(v) for v in value)
    else:
        text = _scalar_text(value)
    text = text.strip(" \x00")
    return text or None


def _scalar_text(value: Any) -> str:
    original = getattr(value, "original_string", None)
    if isinstance(original, str):
        return original
    return str(value)


def parse_number(text: str, integer: bool = False) -> int | float | None:
    """Parse one IS/DS value; ``None`` when it is not a finite number.

    ``1.6e-005`` parses (PS3.5 allows exponents in DS); ``10.50/ 15.00`` does not.
    """
    text = text.strip(" \x00")
    if not text:
        return None
    try:
        if integer:
            try:
                return int(text)
            except ValueError:
                as_float = float(text)
                return int(as_float) if as_float.is_integer() else None
        number = float(text)
    except ValueError:
        return None
    if not math.isfinite(number):
        return None
    return number


def iso_date(text: str) -> str:
    """DA ``YYYYMMDD`` (or legacy ``YYYY.MM.DD``) to ``YYYY-MM-DD``; other text unchanged."""
    t = text.strip().replace(".", "") if len(text.strip()) == 10 else text.strip()
    if len(t) == 8 and t.isdigit():
        return f"{t[0:4]}-{t[4:6]}-{t[6:8]}"
    return text


def iso_time(text: str) -> str:
    """TM ``HHMMSS.ffffff`` (or partial ``HH``, ``HHMM``, legacy ``HH:MM:SS``) to ``HH:MM[:SS[.ffffff]]``."""
    t = text.strip().replace(":", "")
    main, _, frac = t.partition(".")
    if not main.isdigit() or len(main) not in (2, 4, 6) or (frac and not frac.isdigit()):
        return text
    parts = [main[i : i + 2] for i in range(0, len(main), 2)]
    out = ":".join(parts)
    if frac and len(main) == 6:
        out += "." + frac
    return out


def iso_datetime(text: str) -> str:
    """DT ``YYYYMMDDHHMMSS.ffffff&ZZXX`` (any precision) to ISO 8601; other text unchanged."""
    t = text.strip()
    offset = ""
    for sign in ("+", "-"):
        pos = t.find(sign, 4)
        if pos != -1:
            t, tz = t[:pos], t[pos + 1 :]
            if len(tz) != 4 or not tz.isdigit():
                return text
            offset = f"{sign}{tz[:2]}:{tz[2:]}"
            break
    main, _, frac = t.partition(".")
    if not main.isdigit() or len(main) not in (4, 6, 8, 10, 12, 14) or (frac and not frac.isdigit()):
        return text
    out = main[:4]
    if len(main) >= 6:
        out += "-" + main[4:6]
    if len(main) >= 8:
        out += "-" + main[6:8]
    if len(main) >= 10:
        out += "T" + iso_time(main[8:] + ("." + frac if frac and len(main) == 14 else ""))
    return out + offset
