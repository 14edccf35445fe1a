"""Flatten a DICOM dataset into nested, typed JSON (every tag, nothing truncated).

Output form
-----------
* Keys: the keyword (``scheme="keyword"``), ``"GGGG,EEEE"`` in upper-case hex
  (``scheme="tag"``), or the element name without spaces and punctuation
  (``scheme="spaceless"``: ``"Patient's Name"`` -> ``"PatientsName"``), or the
  element name as the standard writes it (``scheme="human"``: ``"Patient's Name"``,
  PS3.6 Table 6-1; the cortx seed's fourth key scheme).  Tags
  with no dictionary entry and all private tags are keyed ``"GGGG,EEEE"`` in
  every scheme, so two private tags never collapse into one name.
* Private data elements (odd group, element >= 0x1000, PS3.5 Section 7.8.1)
  become ``{"creator": "GEMS_ACQU_01", "vr": "DS", "value": ...}``; private
  creator elements (``GGGG,00XX``) are plain strings.
* Values are typed by VR (PS3.5 Table 6.2-1): IS/SS/US/UL/SL/SV/UV -> int,
  DS/FL/FD -> float, DA -> ``YYYY-MM-DD``, TM -> ``HH:MM:SS[.ffffff]``,
  DT -> ISO 8601, PN and other strings -> str, AT -> ``"GGGG,EEEE"``.
  Several values (VM > 1) -> a list; an empty element -> ``None``.  A value
  that does not parse (``10.50/ 15.00`` in a DS, a NaN in an FD) is kept as its
  raw string, never dropped.
* Sequences (SQ) -> lists of objects, each flattened by the same rules.
* Binary values (OB, OD, OF, OL, OV, OW, UN, and Pixel Data whatever its VR)
  are left out and marked: ``{"BinaryData": {"vr": "OB", "length": 1234}}``.
* The File Meta Information (group 0002) is not included unless
  ``include_meta=True`` (then under ``"FileMetaInformation"``).
"""

from __future__ import annotations

import math
import re
import struct
from functools import lru_cache
from typing import Any

from pydicom import datadict
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset

from copydicom.errors import InvalidInstance
from copydicom.model import Instance
from copydicom.stages._values import _item_text, iso_date, iso_datetime, iso_time, parse_number

SCHEMES = ("keyword", "tag", "spaceless", "human")

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN", "OB or OW", "US or OW"})
_INT_BINARY_VRS = frozenset({"SS", "US", "UL", "SL", "SV", "UV", "US or SS"})
_FLOAT_BINARY_VRS = frozenset({"FL", "FD"})
_PIXEL_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
_NON_ALNUM = re.compile(r"[^0-9A-Za-z]")


@lru_cache(maxsize=8192)
def _public_names(tag: int) -> tuple[str, str, str]:
    """(keyword, spaceless name, VR) of a public tag; keyword "" when unknown."""
    keyword, name, vr = _entry(tag)
    return keyword, _NON_ALNUM.sub("", name), vr


@lru_cache(maxsize=8192)
def _entry(tag: int) -> tuple[str, str, str]:
    """(keyword, name as in PS3.6, VR) of a public tag; ``("", "", "")`` when unknown."""
    try:
        vr, _vm, name, _retired, keyword = datadict.get_entry(tag)
    except KeyError:
        return "", "", ""
    return keyword, name, vr


def tag_key(tag: int) -> str:
    """``0x00190010`` -> ``"0019,0010"``."""
    return f"{tag >> 16:04X},{tag & 0xFFFF:04X}"


def _binary_marker(vr: str, value: Any, length: int | None) -> dict[str, Any]:
    if length is None or length == 0xFFFFFFFF:
        length = len(value) if isinstance(value, (bytes, bytearray)) else 0
    return {"BinaryData": {"vr": vr.split(" or ")[0], "length": int(length)}}


def _float(v: Any) -> float | str:
    f = float(v)
    return f if math.isfinite(f) else str(v)


def _typed_strings(text: str | None, vr: str) -> Any:
    """Convert the backslash-separated text of a string VR."""
    if text is None:
        return None
    parts = text.split("\\") if vr not in ("LT", "ST", "UT", "UR") else [text]
    out: list[Any] = []
    for part in parts:
        p = part.strip(" \x00")
        if vr == "IS" or vr == "DS":
            number = parse_number(p, integer=(vr == "IS"))
            out.append(number if number is not None else (p or None))
        elif vr == "DA":
            out.append(iso_date(p) if p else None)
        elif vr == "TM":
            out.append(iso_time(p) if p else None)
        elif vr == "DT":
            out.append(iso_datetime(p) if p else None)
        else:
            out.append(part.rstrip(" \x00") if vr in ("LT", "ST", "UT") else p)
    return out[0] if len(out) == 1 else out


def _scalar(v: Any, vr: str) -> Any:
    if vr in _INT_BINARY_VRS:
        return int(v)
    if vr in _FLOAT_BINARY_VRS:
        return _float(v)
    if vr == "AT":
        return tag_key(int(v))
    if isinstance(v, (bytes, bytearray)):
        return bytes(v).decode("latin-1", errors="replace").strip(" \x00")
    return str(v).rstrip(" \x00")


def _resolved_vr(ds: Dataset, tag: int, item: RawDataElement | DataElement) -> str:
    """The VR, looked up (public or private dictionary) for implicit-VR raw elements."""
    if item.VR:
        return str(item.VR)
    try:
        return str(ds[tag].VR)
    except Exception:  # noqa: BLE001 - any decoding failure falls back
        return _public_names(tag)[2] or "UN"


_ASCII_VRS = frozenset({"IS", "DS", "DA", "TM", "DT", "AE", "AS", "CS", "UI"})
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "PN", "UC"})
_STRUCT = {"US": "H", "SS": "h", "UL": "L", "SL": "l", "FL": "f", "FD": "d"}
#: Character sets whose text decodes with one Python codec (PS3.3 C.12.1.1.2).
_SIMPLE_CHARSETS = {"": "latin-1", "ISO_IR 6": "latin-1", "ISO_IR 100": "latin-1", "ISO_IR 192": "utf-8"}


def _fast_raw(item: RawDataElement, vr: str, codec: str | None) -> tuple[bool, Any]:
    """Convert a raw element without pydicom's per-element machinery, when it is simple.

    Returns ``(False, None)`` when the slow path must be taken.
    """
    value = item.value
    if value is None or len(value) == 0:
        return True, None
    if vr in _ASCII_VRS:
        text = value.decode("latin-1")
        if vr == "UI":
            text = text.rstrip("\x00 ")
        return True, _typed_strings(text.strip(" \x00") or None, vr)
    if vr in _TEXT_VRS and codec is not None:
        try:
            text = value.decode(codec)
        except UnicodeDecodeError:
            return False, None
        text = text.rstrip(" \x00") if vr in ("ST", "LT", "UT") else text.strip(" \x00")
        return True, _typed_strings(text or None, vr)
    fmt = _STRUCT.get(vr)
    if fmt is not None:
        size = struct.calcsize(fmt)
        if len(value) % size:
            return False, None
        values = struct.unpack(("<" if item.is_little_endian else ">") + fmt * (len(value) // size), value)
        converted = [_scalar(v, vr) for v in values]
        return True, converted[0] if len(converted) == 1 else converted
    return False, None


def _element_value(
    ds: Dataset, tag: int, scheme: str, item: RawDataElement | DataElement, codec: str | None = None
) -> Any:
    """The JSON value of one element (never raises on bad content)."""
    vr = _resolved_vr(ds, tag, item)
    if tag in _PIXEL_TAGS or vr in BINARY_VRS:
        return _binary_marker(vr, item.value, getattr(item, "length", None))
    if isinstance(item, RawDataElement):
        done, fast = _fast_raw(item, vr, codec)
        if done:
            return fast
    if vr in ("IS", "DS", "DA", "TM", "DT"):
        # Read the raw text: pydicom raises on invalid IS/DS when converting.
        return _typed_strings(_item_text(ds, item), vr)
    try:
        elem = ds[tag]
    except Exception:  # noqa: BLE001 - undecodable: keep the raw bytes as text
        return _typed_strings(_item_text(ds, item), vr)
    value = elem.value
    if vr == "SQ":
        return [_flatten(child, scheme, codec) for child in (value or [])]
    if value is None or value == "" or value == b"":
        return None
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        if len(value) == 0:
            return None
        converted = [_scalar(v, vr) for v in value]
        return converted[0] if len(converted) == 1 else converted
    if isinstance(value, (bytes, bytearray)) and vr in _INT_BINARY_VRS | _FLOAT_BINARY_VRS:
        return _binary_marker(vr, value, len(value))
    try:
        return _scalar(value, vr)
    except (TypeError, ValueError):
        return str(value)


def flatten(ds: Dataset, scheme: str = "keyword", *, include_meta: bool = False) -> dict[str, Any]:
    """Flatten ``ds`` into nested JSON-able dicts (see the module docstring for the form).

    Parameters
    ----------
    ds
        The dataset (read with or without pixel data).
    scheme
        ``"keyword"``, ``"tag"`` or ``"spaceless"``.
    include_meta
        Add the File Meta Information group under ``"FileMetaInformation"``.

    Raises
    ------
    ValueError
        For an unknown ``scheme``.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown flatten scheme {scheme!r} (use one of {', '.join(SCHEMES)})")
    out: dict[str, Any] = {}
    if include_meta:
        meta = getattr(ds, "file_meta", None)
        if meta is not None and len(meta):
            out["FileMetaInformation"] = _flatten(meta, scheme, "latin-1")
    out.update(_flatten(ds, scheme, None))
    return out


def _codec(ds: Dataset, inherited: str | None) -> str | None:
    """The single Python codec of the dataset's Specific Character Set, if it has one."""
    item = ds.get_item(0x00080005)
    if item is None:
        return inherited if inherited is not None else "latin-1"
    value = item.value
    if isinstance(value, (bytes, bytearray)):
        name = bytes(value).decode("latin-1").strip(" \x00")
    elif value is None:
        name = ""
    elif isinstance(value, str):
        name = value.strip()
    else:
        return None  # several character sets (ISO 2022 code extensions): pydicom decodes
    return _SIMPLE_CHARSETS.get(name)


def _flatten(ds: Dataset, scheme: str, inherited: str | None) -> dict[str, Any]:
    codec = _codec(ds, inherited)
    out: dict[str, Any] = {}
    for base_tag in sorted(ds.keys()):
        tag = int(base_tag)
        item = ds.get_item(tag)
        if item is None:
            continue
        group, element = tag >> 16, tag & 0xFFFF
        if group & 1:
            key = tag_key(tag)
            if 0x0010 <= element <= 0x00FF:  # private creator
                out[key] = _element_value(ds, tag, scheme, item, codec)
                continue
            creator = None
            if element >= 0x1000:
                creator_item = ds.get_item((group << 16) | (element >> 8))
                creator = _item_text(ds, creator_item) if creator_item is not None else None
            out[key] = {
                "creator": creator,
                "vr": _resolved_vr(ds, tag, item),
                "value": _element_value(ds, tag, scheme, item, codec),
            }
            continue
        if scheme == "tag":
            key = tag_key(tag)
        else:
            keyword, spaceless, _vr = _public_names(tag)
            name = {"keyword": keyword, "spaceless": spaceless}.get(scheme) or (_entry(tag)[1] if keyword else "")
            key = name or tag_key(tag)
        out[key] = _element_value(ds, tag, scheme, item, codec)
    return out


def read_dataset(instance: Instance) -> Dataset:
    """The instance's parsed dataset, parsing ``instance.data`` (without pixels) if needed.

    Raises
    ------
    InvalidInstance
        When the bytes are not readable DICOM.
    """
    if instance.dataset is not None:
        return instance.dataset
    from copydicom.stages.structure import read_checked

    try:  # structure first: non-DICOM bytes, truncation and nesting beyond MAX_DEPTH are refused
        return read_checked(instance.data, stop_before_pixels=True)
    except InvalidInstance as exc:
        raise InvalidInstance(f"{instance.ref.source_id}: {exc}") from None


class FlattenStage:
    """Stage that checks the instance parses as DICOM; it appends no document.

    The index builds instance documents with :func:`flatten`.  The stage does
    not store a pixel-less dataset in ``instance.dataset`` (a later stage could
    re-serialise it and lose the pixels); it raises :class:`InvalidInstance`
    for unreadable bytes so they are quarantined early.
    """

    name = "flatten"

    def process(self, instance: Instance) -> Instance:
        read_dataset(instance)
        return instance
