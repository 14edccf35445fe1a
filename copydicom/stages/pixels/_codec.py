"""Decode pixel data into frames and write the cleaned frames back (PS3.5 Section 8, Annex A).

Decoding is pydicom's (``Dataset.decompress`` / ``pixel_array``) with the
pylibjpeg plugins (libjpeg: JPEG baseline/extended/lossless and JPEG-LS;
openjpeg: JPEG 2000; rle) or Pillow, whichever pydicom finds.  Writing back:

- native (uncompressed) input keeps its transfer syntax;
- lossless compressed input whose encoder is available (RLE Lossless via
  pylibjpeg-rle, JPEG 2000 Lossless via pylibjpeg-openjpeg, JPEG-LS Lossless
  via pyjpegls) is re-encoded in its own syntax;
- everything else (deflated input, whose writer is not ours; lossy input; JPEG Lossless processes 14/SV1, which no
  Python encoder writes; an encoder that is missing or refuses the image) is
  written Explicit VR Little Endian.

Lossy input stays marked lossy (PS3.3 C.7.6.1.1.5: once lossy, Lossy Image
Compression stays ``01``); a missing method and ratio are added from the
input's transfer syntax and sizes.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import generate_frames
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
)

from copydicom.errors import PixelRiskError

#: Lossy transfer syntaxes and the Lossy Image Compression Method (0028,2114) defined terms (PS3.3 C.7.6.1.1.5.1).
LOSSY_METHODS: dict[str, str] = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
    "1.2.840.10008.1.2.4.100": "ISO_13818_2",
    "1.2.840.10008.1.2.4.101": "ISO_13818_2",
    "1.2.840.10008.1.2.4.102": "ISO_14496_10",
    "1.2.840.10008.1.2.4.103": "ISO_14496_10",
    "1.2.840.10008.1.2.4.104": "ISO_14496_10",
    "1.2.840.10008.1.2.4.105": "ISO_14496_10",
    "1.2.840.10008.1.2.4.106": "ISO_14496_10",
    "1.2.840.10008.1.2.4.107": "ISO_23008_2",
    "1.2.840.10008.1.2.4.108": "ISO_23008_2",
}
#: Lossless compressed syntaxes we can write again (pydicom encoders), with the preferred plugin.
REENCODE: dict[str, str] = {RLELossless: "pylibjpeg", JPEG2000Lossless: "", JPEGLSLossless: ""}
_NATIVE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)
#: Decoding is whole-instance, in memory: a bigger instance is quarantined rather than risk the worker.
MAX_DECODED_BYTES = 1 << 30


@dataclass
class Decoded:
    """Frames ``(n, rows, cols[, samples])`` and what the writer needs to know about the input."""

    frames: np.ndarray
    source_ts: str
    lossy: bool
    compressed_bytes: int


def transfer_syntax(ds: Dataset) -> str:
    """The dataset's transfer syntax; a bare dataset (no file meta) gets one from how it was read."""
    meta = getattr(ds, "file_meta", None)
    ts = meta.get("TransferSyntaxUID") if meta is not None else None
    if ts:
        return str(ts)
    implicit, little = getattr(ds, "original_encoding", (True, True))
    uid = ImplicitVRLittleEndian if implicit else ExplicitVRLittleEndian if little else ExplicitVRBigEndian
    if meta is None:
        ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid
    return str(uid)


def decode(ds: Dataset) -> Decoded:
    """All frames of ``ds`` (colour as RGB); ``ds`` becomes native if it was compressed."""
    if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
        raise PixelRiskError("float pixel data: Clean Pixel Data does not handle it")
    if int(ds.get("BitsAllocated", 0) or 0) == 1:
        raise PixelRiskError("1-bit pixel data: Clean Pixel Data does not handle it")
    ts = transfer_syntax(ds)
    lossy = ts in LOSSY_METHODS or str(ds.get("LossyImageCompression", "")).strip() == "01"
    compressed = 0
    try:
        if ts not in _NATIVE and ts != DeflatedExplicitVRLittleEndian:  # deflated: pydicom inflated it already
            n = int(ds.get("NumberOfFrames", 1) or 1)
            compressed = sum(len(f) for f in generate_frames(ds.PixelData, number_of_frames=n))
            ds.decompress(as_rgb=True, generate_instance_uid=False)
        arr = ds.pixel_array
    except PixelRiskError:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoder failure quarantines the instance
        raise PixelRiskError(f"pixel data could not be decoded ({UID(ts).name}): {type(exc).__name__}") from None
    n = int(ds.get("NumberOfFrames", 1) or 1)
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if n == 1 and arr.ndim == (3 if samples > 1 else 2):
        arr = arr[None]
    if arr.nbytes > MAX_DECODED_BYTES:
        raise PixelRiskError(f"decoded pixel data of {arr.nbytes >> 20} MiB is over the "
                             f"{MAX_DECODED_BYTES >> 20} MiB Clean Pixel Data handles in memory")
    if samples == 3:
        # pydicom hands colour out as interleaved RGB (YBR converted, planes joined): say so in the header.
        if str(ds.get("PhotometricInterpretation", "")).startswith("YBR"):
            ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
    if not arr.flags.writeable:
        arr = arr.copy()
    return Decoded(arr, ts, lossy, compressed)


def encode(ds: Dataset, dec: Decoded) -> str:
    """Write ``dec.frames`` (cleaned) into ``ds``; returns the output transfer syntax (see module doc)."""
    arr = dec.frames if int(ds.get("NumberOfFrames", 1) or 1) > 1 else dec.frames[0]
    src = dec.source_ts
    if src in _NATIVE:
        data = arr.astype(arr.dtype.newbyteorder(">")).tobytes() if src == ExplicitVRBigEndian else arr.tobytes()
        _set_pixels(ds, data)
        out = src
    elif src in REENCODE and not dec.lossy:
        _set_pixels(ds, arr.tobytes())
        try:
            ds.compress(src, arr, encoding_plugin=REENCODE[src], generate_instance_uid=False)
            out = src
        except Exception:  # noqa: BLE001 - no usable encoder for this image: stay native (lossless either way)
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            _set_pixels(ds, arr.tobytes())
            out = ExplicitVRLittleEndian
    else:
        _set_pixels(ds, arr.tobytes())
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        out = ExplicitVRLittleEndian
    if dec.lossy:
        _mark_lossy(ds, dec)
    return str(out)


def _set_pixels(ds: Dataset, data: bytes) -> None:
    if len(data) % 2:
        data += b"\x00"
    ds.PixelData = data
    ds["PixelData"].VR = "OB" if int(ds.get("BitsAllocated", 8) or 8) <= 8 else "OW"
    ds["PixelData"].is_undefined_length = False


def _mark_lossy(ds: Dataset, dec: Decoded) -> None:
    """PS3.3 C.7.6.1.1.5: lossy once, lossy always; method and ratio from the input if missing."""
    ds.LossyImageCompression = "01"
    if "LossyImageCompressionMethod" in ds or "LossyImageCompressionRatio" in ds:
        return  # the header already tells the history (values of both must pair up: not touched)
    method = LOSSY_METHODS.get(dec.source_ts)
    if method is None or not dec.compressed_bytes:
        return  # lossy history without a known method: keep what the header says
    raw = dec.frames.size * dec.frames.dtype.itemsize
    ds.LossyImageCompressionMethod = method
    ds.LossyImageCompressionRatio = f"{raw / dec.compressed_bytes:.2f}"
