"""A light reading of SR content items (PS3.3 C.17.3, Table C.17-5 and C.18).

:class:`ContentItem` wraps one item of a Content Sequence: its concept name,
value type, value and children.  Numbers are read from the raw Numeric Value
text so that a malformed value never stops the extraction, and text is decoded
with a fallback when it is not in the declared character set.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from copydicom.stages._values import element_text, iso_datetime, parse_number
from copydicom.stages.dose._codes import Concept, concept
from copydicom.stages.dose._units import convert

_TEXT_VALUE = 0x0040A160
_UID = 0x0040A124
_DATETIME = 0x0040A120
_NUMERIC_VALUE = 0x0040A30A
_FLOAT_VALUE = 0x0040A161


def _first(ds: Dataset, keyword: str) -> Dataset | None:
    seq = ds.get(keyword)
    if not seq:
        return None
    try:
        first: Dataset = seq[0]
        return first
    except (IndexError, TypeError):
        return None


def code_of(ds: Dataset | None) -> Concept | None:
    """The concept of a Code Sequence item (Code Value, Long Code Value or URN)."""
    if ds is None:
        return None
    value = ds.get("CodeValue") or ds.get("LongCodeValue") or ds.get("URNCodeValue")
    return concept(str(value) if value is not None else None, str(ds.get("CodingSchemeDesignator", "") or ""))


def coded_dict(ds: Dataset | None) -> dict[str, Any] | None:
    """``{"code", "scheme", "meaning", "concept"}`` of a code item.

    ``code``, ``scheme`` and ``meaning`` are as written in the report; ``concept``
    is the normalised ``"SCHEME:value"`` (SRT mapped to SCT) to group on.
    """
    if ds is None:
        return None
    value = ds.get("CodeValue") or ds.get("LongCodeValue") or ds.get("URNCodeValue")
    code = (str(value).strip() or None) if value is not None else None
    scheme = str(ds.get("CodingSchemeDesignator", "") or "").strip() or None
    normalised = concept(code, scheme)
    return {
        "code": code,
        "scheme": scheme,
        "meaning": str(ds.get("CodeMeaning", "") or "").strip() or None,
        "concept": f"{normalised.scheme}:{normalised.value}" if normalised else None,
    }


@dataclass
class Context:
    """What the readers of one report share: the character set and the warnings."""

    encodings: list[str] = field(default_factory=lambda: ["iso8859"])
    charset_name: str = ""
    warnings: list[str] = field(default_factory=list)

    @classmethod
    def from_dataset(cls, ds: Dataset) -> Context:
        raw = ds.get("SpecificCharacterSet") or ""
        names = [str(v) for v in raw] if isinstance(raw, (list, tuple)) or type(raw).__name__ == "MultiValue" \
            else [str(raw)]
        try:
            encodings = convert_encodings(names)
        except Exception:  # noqa: BLE001 - unknown charset: fall back to latin-1
            encodings = ["iso8859"]
        return cls(encodings=encodings, charset_name="\\".join(names))

    def decode(self, item: Dataset, tag: int, field_name: str) -> str | None:
        """Decode a text element, falling back when it is not in the declared charset."""
        try:
            elem = item.get_item(tag)
        except (KeyError, ValueError):
            return None
        if elem is None or elem.value is None:
            return None
        value = elem.value
        if isinstance(elem, DataElement) and not isinstance(value, (bytes, bytearray)):
            return str(value).strip(" \x00") or None
        assert isinstance(elem, (RawDataElement, DataElement))
        data = bytes(value)
        declared = self.encodings[0] if len(self.encodings) == 1 else None
        text: str | None = None
        if declared is not None:
            try:
                text = data.decode(declared)
            except (UnicodeDecodeError, LookupError):
                text = None
            if text is not None and declared not in ("UTF8", "utf_8") and not data.isascii():
                # Declared single-byte charset, but the bytes are valid UTF-8: mis-declared.
                try:
                    utf8 = data.decode("utf-8")
                    self.warnings.append(
                        f"{field_name}: text is UTF-8 but the declared character set is "
                        f"{self.charset_name or 'ISO_IR 6'}; decoded as UTF-8"
                    )
                    text = utf8
                except UnicodeDecodeError:
                    pass
        else:
            try:
                text = item[tag].value
            except Exception:  # noqa: BLE001
                text = None
        if text is None:
            for fallback in ("utf-8", "latin-1"):
                try:
                    text = data.decode(fallback)
                except UnicodeDecodeError:
                    continue
                self.warnings.append(
                    f"{field_name}: text not in the declared character set "
                    f"{self.charset_name or 'ISO_IR 6'}; decoded as {fallback}"
                )
                break
        return (text or "").strip(" \x00") or None


class ContentItem:
    """One SR content item (PS3.3 Table C.17-5) and its children."""

    __slots__ = ("_children", "ds", "name", "value_type")

    def __init__(self, ds: Dataset) -> None:
        self.ds = ds
        self.name = code_of(_first(ds, "ConceptNameCodeSequence"))
        self.value_type = str(ds.get("ValueType", "") or "").strip().upper()
        self._children: list[ContentItem] | None = None

    @classmethod
    def from_dataset(cls, ds: Dataset) -> ContentItem:
        """The root content item of an SR document."""
        return cls(ds)

    @property
    def children(self) -> list[ContentItem]:
        if self._children is None:
            self._children = [ContentItem(child) for child in (self.ds.get("ContentSequence") or [])]
        return self._children

    def find(self, name: Concept) -> ContentItem | None:
        """The first direct child with this concept name."""
        for child in self.children:
            if child.name == name:
                return child
        return None

    def find_all(self, name: Concept) -> list[ContentItem]:
        """All direct children with this concept name, in order."""
        return [child for child in self.children if child.name == name]

    def walk(self) -> Iterator[ContentItem]:
        """This item and its descendants, depth first, in document order."""
        yield self
        for child in self.children:
            yield from child.walk()

    def search_all(self, name: Concept) -> list[ContentItem]:
        """Every descendant with this concept name, depth first, in document order."""
        return [item for item in self.walk() if item is not self and item.name == name]

    def search(self, name: Concept) -> ContentItem | None:
        """The first descendant (depth first) with this concept name."""
        for item in self.walk():
            if item is not self and item.name == name:
                return item
        return None

    # -- values ---------------------------------------------------------
    def code_value(self) -> Concept | None:
        return code_of(_first(self.ds, "ConceptCodeSequence"))

    def code_dict(self) -> dict[str, Any] | None:
        return coded_dict(_first(self.ds, "ConceptCodeSequence"))

    def text(self, ctx: Context, field_name: str) -> str | None:
        if self.value_type == "UIDREF":
            return element_text(self.ds, _UID)
        if self.value_type == "DATETIME":
            raw = element_text(self.ds, _DATETIME)
            return iso_datetime(raw) if raw else None
        return ctx.decode(self.ds, _TEXT_VALUE, field_name)

    def numeric(self) -> tuple[str | None, str | None]:
        """(raw Numeric Value text, UCUM unit code) of a NUM item; ``(None, None)`` if empty."""
        measured = _first(self.ds, "MeasuredValueSequence")
        if measured is None:
            return None, None
        raw = element_text(measured, _NUMERIC_VALUE)
        if raw is None:
            float_text = element_text(measured, _FLOAT_VALUE)
            raw = float_text
        unit_item = _first(measured, "MeasurementUnitsCodeSequence")
        unit = None
        if unit_item is not None:
            unit = str(unit_item.get("CodeValue", "") or "").strip() or None
        return raw, unit


def put_number(
    target: dict[str, Any],
    field_name: str,
    item: ContentItem | None,
    unit_key: str,
    ctx: Context,
    path: str,
) -> None:
    """Set ``target[field_name]`` to the value of a NUM item converted to ``unit_key``.

    The raw text and unit code go to ``target["raw"][field_name]`` as
    ``{"value": "12.3", "unit": "mGy"}``.  A missing item leaves the field
    ``None`` and adds no raw entry; a value that does not parse, or an unknown
    unit, leaves the field ``None``, keeps the raw entry and adds a warning.
    """
    target.setdefault(field_name, None)
    if item is None:
        return
    raw, unit = item.numeric()
    if raw is None:
        return
    target.setdefault("raw", {})[field_name] = {"value": raw, "unit": unit}
    first = raw.split("\\")[0]
    number = parse_number(first)
    if number is None:
        ctx.warnings.append(f"{path}.{field_name}: unreadable number {raw!r}")
        return
    converted = convert(float(number), unit, unit_key)
    if converted is None:
        ctx.warnings.append(f"{path}.{field_name}: unknown unit {unit!r}")
        return
    target[field_name] = converted


def put_numbers(
    target: dict[str, Any],
    field_name: str,
    items: list[ContentItem],
    unit_key: str,
    ctx: Context,
    path: str,
) -> None:
    """Set ``target[field_name + "_values"]`` to every value of every item (a row repeated per
    pulse, or a multi-valued Numeric Value), converted to ``unit_key``, in document order.

    Set only when there is more than one value (the single value is the scalar field);
    raw texts and units go to ``raw[field_name + "_values"]``.
    """
    values: list[float | None] = []
    raws: list[dict[str, Any]] = []
    for item in items:
        raw, unit = item.numeric()
        if raw is None:
            continue
        for part in raw.split("\\"):
            raws.append({"value": part, "unit": unit})
            number = parse_number(part)
            values.append(None if number is None else convert(float(number), unit, unit_key))
    if len(values) > 1:
        target[field_name + "_values"] = values
        target.setdefault("raw", {})[field_name + "_values"] = raws
