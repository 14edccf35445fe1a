"""A cheap structural check of DICOM bytes before anything parses or forwards them.

Why our own walker: pydicom parses nested sequences recursively (a file nested
1,000 deep raises ``RecursionError``, and Orthanc 1.10.1 crashes on it), reads a
value that runs past the end of the file as a short value without complaint,
and with ``force=True`` turns random bytes into garbage elements.  This walker
is iterative, reads only element headers (PS3.5 7.1, 7.5, A.4), and refuses:

- nesting deeper than :data:`MAX_DEPTH` sequences (a documented limit);
- a value, item or fragment that runs past the end of the bytes (truncation);
- an undefined-length sequence, item or encapsulated pixel data left open at the end;
- bytes that do not start like a dataset (no Part 10 header and no plausible first element).

It costs about a microsecond per top-level element; it does not look inside values.
"""

from __future__ import annotations

import io
import struct
import zlib
from typing import Any

from pydicom import Dataset, dcmread
from pydicom.datadict import dictionary_VR

from copydicom.errors import InvalidInstance

#: Deepest sequence nesting accepted (PS3.5 sets no limit; real files stay below 10).
MAX_DEPTH = 64

_LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT", b"UV"})
_ALL_VRS = _LONG_VRS | frozenset(
    {b"AE", b"AS", b"AT", b"CS", b"DA", b"DS", b"DT", b"FL", b"FD", b"IS", b"LO", b"LT", b"PN", b"SH", b"SL",
     b"SS", b"ST", b"TM", b"UI", b"UL", b"US"}
)
_UNDEFINED = 0xFFFFFFFF
_PIXEL_DATA = 0x7FE00010
_SQ_CACHE: dict[int, bool] = {}
_IMPLICIT = "1.2.840.10008.1.2"
_BIG = "1.2.840.10008.1.2.2"
_DEFLATED = ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.8.1")


def _is_sq(tag: int) -> bool:
    known = _SQ_CACHE.get(tag)
    if known is None:
        try:
            known = str(dictionary_VR(tag)) == "SQ"
        except KeyError:
            known = False
        _SQ_CACHE[tag] = known
    return known


def _fmt(tag: int) -> str:
    return f"({tag >> 16:04X},{tag & 0xFFFF:04X})"


def _split_part10(data: bytes) -> tuple[int, str] | None:
    """``(offset of the dataset, transfer syntax)`` for Part 10 bytes, ``None`` without a header."""
    if len(data) < 132 or data[128:132] != b"DICM":
        return None
    pos, ts, n = 132, "", len(data)
    while pos + 8 <= n:
        group, elem = struct.unpack_from("<HH", data, pos)
        if group != 0x0002:
            break
        vr = data[pos + 4:pos + 6]
        if vr in _LONG_VRS:
            if pos + 12 > n:
                raise InvalidInstance("truncated in the file meta information")
            (length,) = struct.unpack_from("<I", data, pos + 8)
            head = 12
        else:
            (length,) = struct.unpack_from("<H", data, pos + 6)
            head = 8
        if length == _UNDEFINED or pos + head + length > n:
            raise InvalidInstance("truncated or malformed file meta information")
        if elem == 0x0010:
            ts = data[pos + head:pos + head + length].decode("ascii", "replace").strip("\x00 ")
        pos += head + length
    if not ts:
        raise InvalidInstance("file meta information has no Transfer Syntax UID")
    return pos, ts


def _looks_explicit(data: bytes, pos: int) -> bool:
    return data[pos + 4:pos + 6] in _ALL_VRS


def check_structure(data: bytes, *, max_depth: int = MAX_DEPTH) -> bool:
    """Check the element structure of DICOM bytes (with or without a Part 10 header).

    Returns whether the bytes carry a Part 10 header.

    Raises
    ------
    InvalidInstance
        With the reason: not DICOM, truncated, malformed, or nested deeper than ``max_depth``.
    """
    head = _split_part10(data)
    if head is None:
        if len(data) < 8:
            raise InvalidInstance("not DICOM: too short")
        group = struct.unpack_from("<H", data, 0)[0]
        if group & 1 or group < 0x0002 or group > 0x0010:
            # A bare dataset (C-STORE payload) starts with a low even group: 0008 in practice.
            raise InvalidInstance("not DICOM: no Part 10 header and no plausible first element")
        pos, implicit, little = 0, not _looks_explicit(data, 0), True
        if group == 0x0002:  # file meta without preamble: pydicom reads it; walk it as explicit
            implicit = False
    else:
        pos, ts = head
        if ts in _DEFLATED:
            try:
                data = zlib.decompress(data[pos:], -zlib.MAX_WBITS)
            except zlib.error:
                raise InvalidInstance("deflated dataset does not inflate") from None
            pos = 0
        implicit, little = ts == _IMPLICIT, ts != _BIG
    _walk(data, pos, implicit, little, max_depth)
    return head is not None


def _walk(data: bytes, pos: int, implicit: bool, little: bool, max_depth: int) -> None:
    n = len(data)
    e = "<" if little else ">"
    u16, u32 = struct.Struct(e + "H").unpack_from, struct.Struct(e + "I").unpack_from
    tag_s = struct.Struct(e + "HH").unpack_from
    # Stack of open containers: [is_sequence, end offset or None (undefined length)].
    stack: list[tuple[bool, int | None]] = []
    depth = 0
    while True:
        while stack and stack[-1][1] is not None and pos >= stack[-1][1]:
            if pos > stack[-1][1]:
                raise InvalidInstance("malformed: an element runs past the end of its sequence or item")
            if stack.pop()[0]:
                depth -= 1
        if pos >= n:
            break
        if pos + 8 > n:
            if not stack and not data[pos:].strip(b"\x00"):
                break
            raise InvalidInstance("truncated: incomplete element header at the end")
        group, elem = tag_s(data, pos)
        tag = (group << 16) | elem
        if tag == 0 and not stack and not data[pos:].strip(b"\x00"):
            break  # zero padding after the last element (seen in the wild)
        if group == 0xFFFE:
            (length,) = u32(data, pos + 4)
            pos += 8
            in_seq = bool(stack) and stack[-1][0]
            if elem == 0xE000 and in_seq:
                end = None if length == _UNDEFINED else pos + length
                if end is not None and end > n:
                    raise InvalidInstance("truncated: a sequence item runs past the end")
                stack.append((False, end))
            elif elem == 0xE00D and stack and not stack[-1][0] and stack[-1][1] is None:
                stack.pop()
            elif elem == 0xE0DD and in_seq and stack[-1][1] is None:
                stack.pop()
                depth -= 1
            else:
                raise InvalidInstance("malformed: item or delimiter out of place")
            continue
        if stack and stack[-1][0]:
            raise InvalidInstance("malformed: data element directly inside a sequence")
        if implicit:
            (length,) = u32(data, pos + 4)
            hdr = 8
            is_sq = _is_sq(tag) or (length == _UNDEFINED and tag != _PIXEL_DATA)
        else:
            vr = data[pos + 4:pos + 6]
            if vr in _LONG_VRS:
                if pos + 12 > n:
                    raise InvalidInstance("truncated: incomplete element header at the end")
                (length,) = u32(data, pos + 8)
                hdr = 12
            elif vr in _ALL_VRS:
                (length,) = u16(data, pos + 6)
                hdr = 8
            else:
                raise InvalidInstance(f"malformed: element {_fmt(tag)} has no valid VR")
            is_sq = vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED)
        pos += hdr
        if is_sq:
            depth += 1
            if depth > max_depth:
                raise InvalidInstance(f"sequences nested deeper than {max_depth} levels")
            end = None if length == _UNDEFINED else pos + length
            if end is not None and end > n:
                raise InvalidInstance(f"truncated: sequence {_fmt(tag)} runs past the end")
            stack.append((True, end))
            continue
        if length == _UNDEFINED:
            if tag != _PIXEL_DATA:
                raise InvalidInstance(f"malformed: undefined length on {_fmt(tag)}")
            pos = _fragments(data, pos, u32, tag_s)
            continue
        if pos + length > n:
            raise InvalidInstance(f"truncated: element {_fmt(tag)} holds {n - pos} of {length} bytes")
        pos += length
    if stack:
        raise InvalidInstance("truncated: a sequence or item is not closed at the end")


def _fragments(data: bytes, pos: int, u32: Any, tag_s: Any) -> int:
    """Walk encapsulated pixel data (PS3.5 A.4): items, then the sequence delimiter."""
    n, items = len(data), 0
    while True:
        if pos + 8 > n:
            raise InvalidInstance("truncated: encapsulated pixel data has no sequence delimiter")
        group, elem = tag_s(data, pos)
        (length,) = u32(data, pos + 4)
        pos += 8
        if (group, elem) == (0xFFFE, 0xE0DD):
            if items < 2:
                raise InvalidInstance("malformed: encapsulated pixel data without a fragment")
            return pos
        if (group, elem) != (0xFFFE, 0xE000) or length == _UNDEFINED:
            raise InvalidInstance("malformed: encapsulated pixel data fragment structure")
        if pos + length > n:
            raise InvalidInstance(f"truncated: pixel data fragment holds {n - pos} of {length} bytes")
        pos += length
        items += 1


def check_pixel_length(ds: Dataset) -> None:
    """Refuse native Pixel Data shorter than its attributes say (PS3.5 8.1.1, 8.2).

    The expected length is pydicom's (bit packing, YBR_FULL_422 and padding handled).
    """
    elem = ds._dict.get(_PIXEL_DATA)  # type: ignore[call-overload]
    if elem is None:
        return
    meta = getattr(ds, "file_meta", None)
    ts = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    if ts and ts not in (_IMPLICIT, "1.2.840.10008.1.2.1", _BIG, *_DEFLATED):
        return  # encapsulated: its fragments were checked by check_structure
    length = getattr(elem, "length", None)
    if length is None:
        value = ds[_PIXEL_DATA].value
        length = len(value) if value is not None else 0
    if length == _UNDEFINED:
        return
    from pydicom.pixels.utils import get_expected_length

    try:
        expected = int(get_expected_length(ds, unit="bytes"))
    except (AttributeError, KeyError, TypeError, ValueError):
        raise InvalidInstance("pixel data present but Rows/Columns/Bits Allocated/Samples missing or invalid") from None
    if length < expected:
        raise InvalidInstance(f"truncated: native pixel data holds {length} of {expected} bytes")


def read_checked(data: bytes, *, stop_before_pixels: bool = False, max_depth: int = MAX_DEPTH) -> Dataset:
    """Parse DICOM bytes (Part 10, or a bare dataset as in a C-STORE) after :func:`check_structure`.

    Raises
    ------
    InvalidInstance
        Not DICOM, malformed, truncated, too deep, or with no data elements.
    """
    part10 = check_structure(data, max_depth=max_depth)
    try:
        ds = dcmread(io.BytesIO(data), force=not part10, stop_before_pixels=stop_before_pixels)
    except Exception as exc:  # noqa: BLE001 - pydicom raises many types on bad input
        raise InvalidInstance(f"not readable as DICOM: {type(exc).__name__}") from None
    if len(ds) == 0:
        raise InvalidInstance("not DICOM: no data elements")
    if not stop_before_pixels:
        check_pixel_length(ds)
    return ds
