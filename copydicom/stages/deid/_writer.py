"""A fast Part 10 writer for de-identified datasets (PS3.10 7.1, PS3.5 7.1).

Elements the stage did not touch are still raw (bytes as read): their value
bytes are copied behind a freshly packed header, without decoding, so pixel
data is never converted or copied more than once.  Elements the stage
changed, sequences and undefined-length values are written by pydicom.
Transfer syntaxes other than (implicit or explicit) little endian, and
deflate, go through pydicom's ``dcmwrite``.  The stage re-parses every output
(validation gate), so a writer fault can only quarantine, never leak.
"""

from __future__ import annotations

import io
import struct

from pydicom import Dataset
from pydicom.dataelem import RawDataElement
from pydicom.dataset import FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import correct_ambiguous_vr_element, write_data_element, write_file_meta_info
from pydicom.tag import BaseTag
from pydicom.uid import UID

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_UNDEFINED = 0xFFFFFFFF
_PACK_TAG = struct.Struct("<HH").pack
_PACK_EXPLICIT_SHORT = struct.Struct("<HH2sH").pack
_PACK_EXPLICIT_LONG = struct.Struct("<HH2s2xI").pack
_PACK_IMPLICIT = struct.Struct("<HHI").pack


_IMPLICIT_TS = "1.2.840.10008.1.2"
_EXPLICIT_LE_TS = "1.2.840.10008.1.2.1"


def _pad_uid(uid: str) -> bytes:
    data = uid.encode("ascii")
    return data + b"\x00" if len(data) % 2 else data


def file_meta(sop_class: str, sop_uid: str, ts: str, impl_uid: str, impl_name: str) -> FileMetaDataset:
    """File Meta Information (PS3.10 7.1) as raw explicit VR little endian elements.

    Built directly rather than through attribute assignment, which validates every value
    and cost a quarter of the writer's time per instance; :func:`pack_file_meta` writes it.
    """
    meta = FileMetaDataset()
    store = meta._dict
    for tag, vr, value in (
        (0x00020001, "OB", b"\x00\x01"),
        (0x00020002, "UI", _pad_uid(sop_class)),
        (0x00020003, "UI", _pad_uid(sop_uid)),
        (0x00020010, "UI", _pad_uid(ts)),
        (0x00020012, "UI", _pad_uid(impl_uid)),
        (0x00020013, "SH", impl_name.encode("ascii") + (b" " if len(impl_name) % 2 else b"")),
    ):
        store[BaseTag(tag)] = RawDataElement(BaseTag(tag), vr, len(value), value, 0, False, True, True, False)
    return meta


def pack_file_meta(meta: FileMetaDataset) -> bytes:
    """The preamble, prefix and group 0002 with its group length, packed by hand from raw elements
    (byte-identical to pydicom's ``write_file_meta_info`` for these elements)."""
    body = []
    for tag in sorted(meta._dict, key=int):
        elem = meta._dict[tag]
        if tag == 0x00020000:
            continue
        if not isinstance(elem, RawDataElement) or elem.VR is None:
            raise ValueError("file meta elements must be raw explicit VR")
        value = elem.value or b""
        if elem.VR in _LONG_VRS:
            body.append(_PACK_EXPLICIT_LONG(0x0002, tag & 0xFFFF, str(elem.VR).encode(), len(value)))
        else:
            body.append(_PACK_EXPLICIT_SHORT(0x0002, tag & 0xFFFF, str(elem.VR).encode(), len(value)))
        body.append(value)
    group = b"".join(body)
    return b"\x00" * 128 + b"DICM" + _PACK_EXPLICIT_SHORT(0x0002, 0x0000, b"UL", 4) + struct.pack("<I", len(group)) \
        + group


def _buffer(implicit: bool) -> DicomBytesIO:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    return fp


def write_part10(ds: Dataset, meta: FileMetaDataset) -> bytes:
    """Return the Part 10 bytes of ``ds`` with file meta information ``meta``."""
    ts_elem = meta._dict.get(BaseTag(0x00020010))
    ts_text = (bytes(ts_elem.value or b"").decode("ascii").strip("\x00 ") if isinstance(ts_elem, RawDataElement)
               else str(meta.TransferSyntaxUID))
    if ts_text not in (_IMPLICIT_TS, _EXPLICIT_LE_TS):
        ts = UID(ts_text)
        if not ts.is_little_endian or ts.is_deflated:
            ds.file_meta = meta
            buffer = io.BytesIO()
            ds.save_as(buffer, enforce_file_format=True)
            return buffer.getvalue()
    implicit = ts_text == _IMPLICIT_TS
    if all(isinstance(e, RawDataElement) for e in meta._dict.values()):
        parts = [pack_file_meta(meta)]
    else:
        head = DicomBytesIO()
        head.is_little_endian = True
        head.is_implicit_VR = False
        head.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(head, meta, enforce_standard=True)
        parts = [head.getvalue()]
    # Raw values go into ``parts`` by reference (pixel data is copied once, by the final join);
    # ``fp`` collects what pydicom writes and is flushed into ``parts`` before each raw value.
    fp = _buffer(implicit)
    encodings = ds._character_set
    store = ds._dict
    append = parts.append
    for tag in sorted(store, key=int):  # int keys: BaseTag's own __lt__ is slow
        if tag & 0xFFFF == 0:  # group lengths are stale after de-identification
            continue
        elem = store[tag]
        if (
            isinstance(elem, RawDataElement)
            and elem.length != _UNDEFINED
            and elem.is_implicit_VR == implicit
            and elem.is_little_endian
            and not elem.is_buffered
            and (implicit or elem.VR is not None)
        ):
            value = elem.value or b""
            group, element = tag >> 16, tag & 0xFFFF
            if fp.tell():
                append(fp.getvalue())
                fp = _buffer(implicit)
            if implicit:
                append(_PACK_IMPLICIT(group, element, len(value)))
            elif elem.VR in _LONG_VRS:
                append(_PACK_EXPLICIT_LONG(group, element, str(elem.VR).encode(), len(value)))
            else:
                append(_PACK_EXPLICIT_SHORT(group, element, str(elem.VR).encode(), len(value)))
            append(value)
        else:
            converted = ds[tag]
            if converted.VR and " or " in converted.VR:
                correct_ambiguous_vr_element(converted, ds, True)
            write_data_element(fp, converted, encodings)
    if fp.tell():
        append(fp.getvalue())
    ds.file_meta = meta
    return b"".join(parts)
