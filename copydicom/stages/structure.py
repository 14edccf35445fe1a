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
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.tag import BaseTag

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


def _split_part10(data: bytes, meta: dict[int, bytes | memoryview] | None = None) -> tuple[int, str] | None:
    """``(offset of the dataset, transfer syntax)`` for Part 10 bytes, ``None`` without a header;
    the values of the file meta elements go to ``meta`` if given."""
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
        if meta is not None:
            meta[0x00020000 | elem] = data[pos + head:pos + head + length]
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
    return _check(data, max_depth, None, None)


def checked_keeping_bytes(data: bytes) -> bytes:
    """:func:`check_structure`, returning ``data``; on failure the bytes ride on the error
    (``instance_data``) so the pipeline quarantines them with the instance (used where those
    bytes are the only copy: spool entries, quarantined files).

    Raises
    ------
    InvalidInstance
        As :func:`check_structure`, with ``instance_data`` set to ``data``.
    """
    try:
        check_structure(data)
    except InvalidInstance as exc:
        exc.instance_data = data  # type: ignore[attr-defined]
        raise
    return data


def top_level_values(data: bytes, tags: frozenset[int], *, max_depth: int = MAX_DEPTH) -> tuple[str, dict[int, bytes | memoryview]]:
    """:func:`check_structure`, and the value bytes of the wanted top-level elements (file meta
    elements of group 0002 included), without parsing anything else.

    Returns ``(transfer syntax UID or "" without a Part 10 header, {tag: value bytes})``;
    values of a big endian dataset are as stored.
    """
    found: dict[int, bytes | memoryview] = {}
    _check(data, max_depth, tags, found)
    ts = bytes(found.get(0x00020010, b"")).decode("ascii", "replace").strip("\x00 ")
    return ts, found


def _check(data: bytes, max_depth: int, want: frozenset[int] | None, found: dict[int, bytes | memoryview] | None) -> bool:
    head = _split_part10(data, found)
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
        if little and pos + 6 <= len(data) and implicit == _looks_explicit(data, pos):
            # The dataset's encoding contradicts its transfer syntax: read it as written, as
            # pydicom does (it checks the first element's VR the same way).
            implicit = not implicit
    _walk(data, pos, implicit, little, max_depth, want, found)
    return head is not None


def _walk(data: bytes, pos: int, implicit: bool, little: bool, max_depth: int,
          want: frozenset[int] | None = None, found: dict[int, bytes | memoryview] | None = None,
          elems: list[list[Any]] | None = None) -> None:
    """Walk every element header; collect wanted top-level values in ``found`` and, in ``elems``,
    ``[tag, VR or None, length, value start, value end, undefined length]`` of each top-level element."""
    n = len(data)
    e = "<" if little else ">"
    u16, u32 = struct.Struct(e + "H").unpack_from, struct.Struct(e + "I").unpack_from
    tag_s = struct.Struct(e + "HH").unpack_from
    # Open containers: (is_sequence, end offset or None for undefined length, implicit VR inside).
    # Inside an explicit VR "UN" of undefined length the encoding is implicit VR (PS3.5 6.2.2).
    stack: list[tuple[bool, int | None, bool]] = []
    depth = 0
    top: list[Any] | None = None  # the open top-level sequence's entry in ``elems``
    while True:
        while stack and stack[-1][1] is not None and pos >= stack[-1][1]:
            if pos > stack[-1][1]:
                raise InvalidInstance("malformed: an element runs past the end of its sequence or item")
            if stack.pop()[0]:
                depth -= 1
                if not stack and top is not None:
                    top[4] = pos
                    top = None
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
                stack.append((False, end, stack[-1][2]))
            elif elem == 0xE00D and stack and not stack[-1][0] and stack[-1][1] is None:
                stack.pop()
            elif elem == 0xE0DD and in_seq and stack[-1][1] is None:
                stack.pop()
                depth -= 1
                if not stack and top is not None:
                    top[4] = pos - 8
                    top = None
            else:
                raise InvalidInstance("malformed: item or delimiter out of place")
            continue
        if stack and stack[-1][0]:
            raise InvalidInstance("malformed: data element directly inside a sequence")
        imp = stack[-1][2] if stack else implicit
        vr_text: str | None = None
        inner_implicit = imp
        if imp:
            (length,) = u32(data, pos + 4)
            hdr = 8
            is_sq = _is_sq(tag) or (length == _UNDEFINED and tag != _PIXEL_DATA)
            if is_sq:
                vr_text = "SQ"
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
            vr_text = vr.decode("ascii")
            is_sq = vr == b"SQ" or (vr == b"UN" and length == _UNDEFINED)
            if vr == b"UN" and is_sq:
                inner_implicit = True
        pos += hdr
        if is_sq:
            depth += 1
            if depth > max_depth:
                raise InvalidInstance(f"sequences nested deeper than {max_depth} levels")
            end = None if length == _UNDEFINED else pos + length
            if end is not None and end > n:
                raise InvalidInstance(f"truncated: sequence {_fmt(tag)} runs past the end")
            if elems is not None and not stack:
                top = [tag, vr_text, length, pos, end, end is None]
                elems.append(top)
                if end is not None:
                    top = None
            stack.append((True, end, inner_implicit))
            continue
        if length == _UNDEFINED:
            if tag != _PIXEL_DATA:
                raise InvalidInstance(f"malformed: undefined length on {_fmt(tag)}")
            start = pos
            pos = _fragments(data, pos, u32, tag_s)
            if not stack:
                if want is not None and tag in want:
                    found[tag] = b""  # type: ignore[index]
                if elems is not None:
                    elems.append([tag, vr_text, length, start, pos - 8, True])
            continue
        if pos + length > n:
            raise InvalidInstance(f"truncated: element {_fmt(tag)} holds {n - pos} of {length} bytes")
        if not stack:
            if want is not None and tag in want:
                # Large values (pixel data) are not copied: a view says they are there.
                found[tag] = data[pos:pos + length] if length <= 256 else memoryview(data)[pos:pos + length]  # type: ignore[index]
            if elems is not None:
                elems.append([tag, vr_text, length, pos, pos + length, False])
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


def _meta_transfer_syntax(ds: Dataset) -> str:
    """The file meta's Transfer Syntax UID, read raw when it is (``Dataset.get`` converts and
    validates it: a tenth of the stage's time in flight)."""
    meta = ds.__dict__.get("file_meta")
    if meta is None:
        return ""
    elem = meta._dict.get(0x00020010)
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement):
        return bytes(elem.value or b"").decode("ascii", "replace").strip("\x00 ")
    return str(elem.value or "").strip("\x00 ")


def check_pixel_length(ds: Dataset) -> None:
    """Refuse native Pixel Data shorter than its attributes say (PS3.5 8.1.1, 8.2).

    The expected length is pydicom's (bit packing, YBR_FULL_422 and padding handled).
    """
    elem = ds._dict.get(_PIXEL_DATA)  # type: ignore[call-overload]
    if elem is None:
        return
    ts = _meta_transfer_syntax(ds)
    if ts and ts not in (_IMPLICIT, "1.2.840.10008.1.2.1", _BIG, *_DEFLATED):
        return  # encapsulated: its fragments were checked by check_structure
    length = getattr(elem, "length", None)
    if length is None:
        value = ds[_PIXEL_DATA].value
        length = len(value) if value is not None else 0
    if length == _UNDEFINED:
        return
    expected = expected_native_length(ds)
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


def _raw_us(ds: Dataset, tag: int) -> int | None:
    elem = ds._dict.get(tag)  # type: ignore[call-overload]
    if isinstance(elem, RawDataElement) and elem.is_little_endian and elem.value is not None and len(elem.value) >= 2:
        return int.from_bytes(elem.value[:2], "little")
    return None


def _raw_text(ds: Dataset, tag: int) -> str | None:
    elem = ds._dict.get(tag)  # type: ignore[call-overload]
    if elem is None:
        return ""
    if isinstance(elem, RawDataElement) and elem.value is not None and elem.value.isascii():
        return bytes(elem.value).decode("ascii").strip("\x00 ")
    return None


def expected_native_length(ds: Dataset) -> int:
    """Bytes of native Pixel Data the Image Pixel module asks for, without the odd-length pad.

    The same arithmetic as pydicom's ``get_expected_length`` (bit packing for Bits Allocated 1,
    YBR_FULL_422 at two thirds, frames), read from the raw little endian values: pydicom's
    converts six attributes and cost 80 us an instance.  Anything not raw goes to pydicom's.

    Raises
    ------
    InvalidInstance
        When the attributes are missing or invalid.
    """
    rows, cols, spp, bits = (_raw_us(ds, t) for t in (0x00280010, 0x00280011, 0x00280002, 0x00280100))
    frames_text, photometric = _raw_text(ds, 0x00280008), _raw_text(ds, 0x00280004)
    if None in (rows, cols, spp, bits) or frames_text is None or photometric is None:
        from pydicom.pixels.utils import get_expected_length

        try:
            return int(get_expected_length(ds, unit="bytes"))
        except (AttributeError, KeyError, TypeError, ValueError):
            raise InvalidInstance("pixel data present but Rows/Columns/Bits Allocated/Samples missing or "
                                  "invalid") from None
    try:
        frames = int(frames_text.split("\\")[0]) if frames_text else 1
    except ValueError:
        raise InvalidInstance("Number of Frames is not a number") from None
    length = rows * cols * spp * max(frames, 1)  # type: ignore[operator]
    if bits == 1:
        length = length // 8 + (length % 8 > 0)
    else:
        length *= bits // 8  # type: ignore[operator]
    if photometric == "YBR_FULL_422":
        length = length // 3 * 2
    return length


def read_fast(data: bytes, *, max_depth: int = MAX_DEPTH) -> Dataset | None:
    """Part 10 little endian bytes as a dataset of raw elements, from the one structure walk.

    Why not ``dcmread``: its element generator was the largest CPU cost of de-identifying an
    instance; this walk (:func:`check_structure`'s checks included) already finds every
    top-level element, so each becomes a ``RawDataElement`` like those pydicom's reader yields
    (sequences stay raw and pydicom parses them on first access; encapsulated pixel data is the
    bytes up to its sequence delimiter, as pydicom reads it).

    Returns ``None`` where the fast path does not apply (no Part 10 header, big endian, deflated,
    a top-level UN of undefined length): use :func:`check_structure` and ``dcmread`` then.

    Raises
    ------
    InvalidInstance
        As :func:`check_structure`.
    """
    head = _split_part10(data)
    if head is None:
        return None
    pos, ts = head
    if ts in _DEFLATED or ts == _BIG:
        return None
    implicit = ts == _IMPLICIT
    if pos + 6 <= len(data) and implicit == _looks_explicit(data, pos):
        return None  # encoding contradicts the transfer syntax: leave it to dcmread's own handling
    elems: list[list[Any]] = []
    _walk(data, pos, implicit, True, max_depth, None, None, elems)
    meta = FileMetaDataset()
    p = 132
    while p < pos:
        group, elem = struct.unpack_from("<HH", data, p)
        vr = data[p + 4:p + 6]
        if vr in _LONG_VRS:
            (length,) = struct.unpack_from("<I", data, p + 8)
            hdr = 12
        else:
            (length,) = struct.unpack_from("<H", data, p + 6)
            hdr = 8
        tag = BaseTag((group << 16) | elem)
        meta._dict[tag] = RawDataElement(tag, vr.decode("ascii", "replace"), length,
                                         data[p + hdr:p + hdr + length], p + hdr, False, True, True, False)
        p += hdr + length
    raw: dict[BaseTag, DataElement | RawDataElement] = {}
    for tag_int, vr_text, length, start, end, undefined in elems:
        if vr_text == "UN" and undefined:
            return None
        tag = BaseTag(tag_int)
        raw[tag] = RawDataElement(tag, vr_text, _UNDEFINED if undefined else length, data[start:end], start,
                                  implicit, True, True, False)
    return FileDataset("", raw, preamble=data[:128], file_meta=meta, is_implicit_VR=implicit, is_little_endian=True)
