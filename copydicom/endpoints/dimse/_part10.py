"""Part 10 framing of a received C-STORE dataset, without decoding it: file meta and identity.

The C-STORE data set arrives encoded in the presentation context's transfer
syntax (PS3.7 9.3.1); stored as a DICOM file it needs the 128-byte preamble,
``DICM`` and the File Meta Information group (PS3.10 7.1).  pynetdicom's
``Event.encoded_dataset(include_meta=True)`` builds that group through a pydicom
``FileMetaDataset`` (each UID validated by a regular expression, each element
written by pydicom's generic writer) and joins it with the dataset into one new
string.  Measured on the receive path (py-spy, 200 x 0.5 MB, one storescu
association) that was about 14% of the listener's CPU; here the same seven
elements are packed with :mod:`struct` (written by hand because the layout is
fixed and tiny: explicit VR little endian, PS3.5 7.1.2), and the spool writes
the two parts without joining them.  A unit test checks the bytes against
pynetdicom's for several transfer syntaxes.

The instance's identity (the four UIDs of its Orthanc ID) is read with pydicom
from the start of the dataset only: :func:`pydicom.filereader.read_dataset`
stops at the first element past group 0020, so the pixel data is never read.
"""

from __future__ import annotations

import os
import struct
import zlib
from io import BytesIO

from pydicom.filereader import read_dataset
from pydicom.tag import BaseTag
from pydicom.uid import UID
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION

from copydicom.model import Identity

#: PS3.10 7.1: 128-byte preamble (zeros when unused) and the "DICM" prefix.
PREAMBLE = b"\x00" * 128 + b"DICM"

_IDENTITY_TAGS: list[BaseTag | int] = [
    0x00080005,  # Specific Character Set: how PatientID is decoded
    0x00100020,  # PatientID
    0x0020000D,  # StudyInstanceUID
    0x0020000E,  # SeriesInstanceUID
    0x00080018,  # SOPInstanceUID
]
#: The last group holding an identity element; reading stops at the first element after it.
_LAST_GROUP = 0x0020
#: How much of a deflated dataset is inflated to find the identity (the header, never the pixels).
_DEFLATED_HEAD = 4 << 20


def _short(group: int, element: int, vr: bytes, value: bytes) -> bytes:
    """One explicit VR little endian element with a 2-byte length (PS3.5 Table 7.1-2)."""
    return struct.pack("<HH2sH", group, element, vr, len(value)) + value


def _uid(value: str) -> bytes:
    """A UI value, padded with a NUL to an even length (PS3.5 6.2, VR UI)."""
    raw = str(value).encode("ascii")
    return raw + b"\x00" if len(raw) % 2 else raw


def _text(value: str) -> bytes:
    """An SH value, padded with a space to an even length (PS3.5 6.2)."""
    raw = value.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def file_meta(sop_class_uid: str, sop_instance_uid: str, transfer_syntax: str) -> bytes:
    """Preamble, prefix and File Meta Information of a received instance (PS3.10 7.1).

    The same elements, values and order as pynetdicom's
    ``Event.encoded_dataset(include_meta=True)``: group length, version
    ``00 01``, Media Storage SOP Class and Instance UIDs (the C-STORE request's
    Affected SOP Class and Instance UIDs), the context's transfer syntax and
    pynetdicom's implementation class UID and version name.

    Raises
    ------
    UnicodeEncodeError
        A UID that is not ASCII (it cannot be a UID, PS3.5 9.1).
    """
    elements = b"".join((
        struct.pack("<HH2sHIH", 0x0002, 0x0001, b"OB", 0, 2, 0x0100),  # version: bytes 00 01
        _short(0x0002, 0x0002, b"UI", _uid(sop_class_uid)),
        _short(0x0002, 0x0003, b"UI", _uid(sop_instance_uid)),
        _short(0x0002, 0x0010, b"UI", _uid(transfer_syntax)),
        _short(0x0002, 0x0012, b"UI", _uid(PYNETDICOM_IMPLEMENTATION_UID)),
        _short(0x0002, 0x0013, b"SH", _text(PYNETDICOM_IMPLEMENTATION_VERSION)),
    ))
    length = struct.pack("<HH2sHI", 0x0002, 0x0000, b"UL", 4, len(elements))
    return PREAMBLE + length + elements


def _past_identity(tag: BaseTag, vr: str | None, length: int) -> bool:
    """pydicom calls this with each element's tag before reading its value."""
    return tag.group > _LAST_GROUP


def dataset_identity(dataset: bytes, transfer_syntax: str) -> Identity:
    """The identity of an encoded dataset (no file meta), reading its header only.

    Parameters
    ----------
    dataset
        The data set as received (PS3.7 9.3.1), in ``transfer_syntax``.
    transfer_syntax
        The presentation context's transfer syntax UID.

    Raises
    ------
    Exception
        Whatever pydicom raises on a dataset it cannot read, or ``ValueError``
        for an unknown transfer syntax.
    """
    ts = UID(transfer_syntax)
    if ts.is_deflated:  # PS3.5 A.5: the whole dataset is one raw deflate stream
        data = zlib.decompressobj(-zlib.MAX_WBITS).decompress(dataset, _DEFLATED_HEAD)
    else:
        data = dataset
    # BytesIO over bytes shares them (no copy); reading stops before the first element past group 0020.
    ds = read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian, stop_when=_past_identity,
                      specific_tags=list(_IDENTITY_TAGS))
    return Identity.from_dataset(ds)


#: How much of a spool entry :func:`spooled_identity` reads: the file meta and the dataset's header.
SPOOL_HEAD = 64 << 10


def _meta_transfer_syntax(head: bytes) -> tuple[int, str] | None:
    """(offset of the dataset, transfer syntax UID) of a Part 10 file's start, or ``None``.

    Walks the File Meta Information group (PS3.10 7.1: after the preamble and
    ``DICM``, explicit VR little endian, its length in (0002,0000)).
    """
    if len(head) < 144 or head[128:132] != b"DICM":
        return None
    group, element, vr, size, length = struct.unpack_from("<HH2sHI", head, 132)
    if (group, element, vr, size) != (0x0002, 0x0000, b"UL", 4):
        return None
    end = 144 + length
    pos, syntax = 144, None
    while pos + 8 <= min(end, len(head)):
        group, element, vr = struct.unpack_from("<HH2s", head, pos)
        if vr in (b"OB", b"OW", b"OF", b"SQ", b"UT", b"UN", b"UC", b"UR", b"OD", b"OL", b"OV"):
            (size,) = struct.unpack_from("<I", head, pos + 8)
            value_at = pos + 12
        else:
            (size,) = struct.unpack_from("<H", head, pos + 6)
            value_at = pos + 8
        if (group, element) == (0x0002, 0x0010):
            syntax = head[value_at:value_at + size].rstrip(b"\x00 ").decode("ascii")
        pos = value_at + size
    if syntax is None or end > len(head):
        return None
    return end, syntax


def spooled_identity(path: str | os.PathLike[str], key: str) -> Identity | None:
    """The identity of a spool entry named ``key``, from its first :data:`SPOOL_HEAD` bytes only.

    The receiver named the entry by the Orthanc ID of the identity it read
    (:func:`dataset_identity`); the identity read here is returned only if
    it hashes to that same name (Orthanc IDs are SHA-1 of the UIDs), so a
    header longer than the bytes read, or an entry replaced by something
    else, gives ``None`` and the caller reads the whole file instead.  This
    spares the drain a ``dcmread`` of each entry (measured: the largest part
    of its CPU per instance besides the upload).

    Raises
    ------
    OSError
        The entry cannot be opened (``FileNotFoundError``: it was removed).
    """
    with open(path, "rb") as handle:
        head = handle.read(SPOOL_HEAD)
    try:
        found = _meta_transfer_syntax(head)
        if found is None:
            return None
        identity = dataset_identity(head[found[0]:], found[1])
    except Exception:  # noqa: BLE001 - a cut-off or unusual header: the caller reads the whole file
        return None
    return identity if identity.sop_uid and identity.orthanc_id == key else None
