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
from pydicom.uid import UID

_LONG_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "SV", "UC", "UN", "UR", "UT", "UV"})
_UNDEFINED = 0xFFFFFFFF
_PACK_TAG = struct.Struct("<HH").pack
_PACK_EXPLICIT_SHORT = struct.Struct("<HH2sH").pack
_PACK_EXPLICIT_LONG = struct.Struct("<HH2s2xI").pack
_PACK_IMPLICIT = struct.Struct("<HHI").pack


def write_part10(ds: Dataset, meta: FileMetaDataset) -> bytes:
    """Return the Part 10 bytes of ``ds`` with file meta information ``meta``."""
    ts = UID(str(meta.TransferSyntaxUID))
    if not ts.is_little_endian or ts.is_deflated:
        ds.file_meta = meta
        buffer = io.BytesIO()
        ds.save_as(buffer, enforce_file_format=True)
        return buffer.getvalue()
    implicit = ts.is_implicit_VR
    head = DicomBytesIO()
    head.is_little_endian = True
    head.is_implicit_VR = False
    head.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(head, meta, enforce_standard=True)
    parts = [head.getvalue()]
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    encodings = ds._character_set
    store = ds._dict
    for tag in sorted(store):
        if tag & 0xFFFF == 0:  # group lengths are stale after de-identification
            continue
        elem = store[tag]
        if (
            isinstance(elem, RawDataElement)
            and elem.length != _UNDEFINED
            and elem.is_implicit_VR == implicit
            and elem.is_little_endian
            and not elem.is_buffered
        ):
            value = elem.value or b""
            group, element = tag >> 16, tag & 0xFFFF
            if implicit:
                fp.write(_PACK_IMPLICIT(group, element, len(value)))
            elif elem.VR is None:
                write_data_element(fp, ds[tag], encodings)
                continue
            elif elem.VR in _LONG_VRS:
                fp.write(_PACK_EXPLICIT_LONG(group, element, elem.VR.encode(), len(value)))
            else:
                fp.write(_PACK_EXPLICIT_SHORT(group, element, str(elem.VR).encode(), len(value)))
            fp.write(value)
        else:
            converted = ds[tag]
            if converted.VR and " or " in converted.VR:
                correct_ambiguous_vr_element(converted, ds, True)
            write_data_element(fp, converted, encodings)
    parts.append(fp.getvalue())
    ds.file_meta = meta
    return b"".join(parts)
