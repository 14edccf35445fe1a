"""Pixel-masking rules: CTP's DicomPixelAnonymizer table plus the profile's own.

The built-in table ``data/ctp_pixel_rules.json`` is generated once by
``tools/gen_pixel_rules.py`` from the ``deid`` package (MIT licence; the
rules of RSNA CTP's DicomPixelAnonymizer); it records its source, version,
digest and licence.  A rule matches when every clause holds; a clause holds
when one of its conditions does (see :func:`test`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from functools import lru_cache
from importlib import resources
from typing import Any

from pydicom import Dataset
from pydicom.multival import MultiValue
from pydicom.tag import Tag

from copydicom.stages.pixels._settings import Condition, Rect, Rule


@lru_cache(maxsize=1)
def table_info() -> dict[str, Any]:
    """Source, digest, licence and fixes of the built-in table (without the rules)."""
    doc = _load()
    return {k: v for k, v in doc.items() if k != "rules"}


def _load() -> dict[str, Any]:
    text = resources.files("copydicom.stages.pixels").joinpath("data").joinpath("ctp_pixel_rules.json").read_text("utf-8")
    data: dict[str, Any] = json.loads(text)
    return data


@lru_cache(maxsize=1)
def builtin_rules() -> tuple[Rule, ...]:
    """The CTP rules, as generated."""
    out = []
    for r in _load()["rules"]:
        clauses = tuple(tuple(Condition(c["op"], c["field"], c["value"]) for c in clause) for clause in r["all"])
        rects = tuple((int(x[0]), int(x[1]), int(x[2]), int(x[3])) for x in r["rects"])
        out.append(Rule(label=r["label"], all=clauses, rects=rects, builtin=True))
    return tuple(out)


@lru_cache(maxsize=512)
def _pattern(value: str) -> re.Pattern[str]:
    try:
        return re.compile(value, re.IGNORECASE)
    except re.error:
        return re.compile(re.escape(value), re.IGNORECASE)


def _value(ds: Dataset, field: str) -> tuple[bool, str]:
    """``(present, text)`` of an attribute (top level, else file meta); multiple values joined by ``\\``."""
    try:
        tag = Tag(int(field, 16)) if re.fullmatch(r"[0-9A-Fa-f]{8}", field) else Tag(field)
    except (ValueError, TypeError):
        return False, ""
    elem = ds.get(tag)
    if elem is None:
        meta = getattr(ds, "file_meta", None)
        elem = meta.get(tag) if meta is not None else None
    if elem is None:
        return False, ""
    value = elem.value
    if value is None:
        return True, ""
    if isinstance(value, (MultiValue, list, tuple)):
        return True, "\\".join(str(v) for v in value)
    if isinstance(value, bytes):
        return True, value.decode("latin-1", "replace").strip("\x00 ")
    return True, str(value).strip()


def test(ds: Dataset, cond: Condition) -> bool:
    """One condition, as deid evaluates CTP's filters: ``contains`` is a case-insensitive regular
    expression search, ``equals`` a case-insensitive comparison of the value's text, ``missing``
    means absent, ``empty`` present without a value."""
    present, text = _value(ds, cond.field)
    op = cond.op
    if op == "missing":
        return not present
    if op == "present":
        return present
    if op == "empty":
        return present and text == ""
    if op in ("contains", "notcontains"):
        hit = present and _pattern(cond.value.strip()).search(text) is not None
        return hit if op == "contains" else not hit
    if op in ("equals", "notequals"):
        hit = present and text.lower() == cond.value.strip().lower()
        return hit if op == "equals" else not hit
    return False


def matches(ds: Dataset, rule: Rule) -> bool:
    """Whether every clause of ``rule`` has a true condition for ``ds``."""
    return all(any(test(ds, c) for c in clause) for clause in rule.all)


def matching(ds: Dataset, rules: Iterable[Rule]) -> list[Rule]:
    """The rules that apply to ``ds``, in order."""
    return [r for r in rules if matches(ds, r)]


def clip(rect: Rect, rows: int, cols: int) -> Rect | None:
    """``rect`` cut to the image, or ``None`` if nothing is left."""
    x0, y0, x1, y1 = max(0, rect[0]), max(0, rect[1]), min(cols, rect[2]), min(rows, rect[3])
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None
