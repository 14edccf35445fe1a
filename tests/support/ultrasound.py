"""Synthetic ultrasound-like images with text burned into the pixels, at known places.

Everything here is made up: names, IDs and dates are fake.  The fan of speckle
imitates a B-mode sector (grey values up to 255 in bright reflectors), the text
is drawn with Pillow in DejaVu Sans (Debian ``fonts-dejavu-core``) so that
Tesseract can read it, and every drawn string's bounding box is returned so a
test knows where the text is.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFont
from pydicom import Dataset
from pydicom.dataset import FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.uid import (
    PYDICOM_IMPLEMENTATION_UID,
    ExplicitVRLittleEndian,
    JPEGBaseline8Bit,
    RLELossless,
    UltrasoundImageStorage,
    UltrasoundMultiFrameImageStorage,
)

from tests.support.synthetic import make_uid

FONT = "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf"


@dataclass(frozen=True)
class Text:
    """One string drawn into the image and its box ``(x0, y0, x1, y1)`` (exclusive ends)."""

    text: str
    box: tuple[int, int, int, int]


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(FONT, size)


def speckle(rows: int = 480, cols: int = 640, seed: int = 0) -> np.ndarray:
    """A B-mode-like sector of speckle (uint8, ``rows`` x ``cols``), black outside the fan."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cx, apex = cols / 2, -rows * 0.1
    r = np.hypot(xx - cx, yy - apex)
    fan = (r < rows * 1.0) & (np.abs(xx - cx) < (yy - apex) * 0.75) & (yy > rows * 0.12) & (yy < rows * 0.9)
    img = np.zeros((rows, cols), np.float32)
    img[fan] = rng.rayleigh(45.0, int(fan.sum()))
    # a few bright reflectors (as a real scan has)
    for _ in range(6):
        y, x = int(rng.integers(rows * 0.3, rows * 0.8)), int(rng.integers(cols * 0.35, cols * 0.65))
        img[y:y + 3, x:x + 25] = 255
    return np.clip(img, 0, 255).astype(np.uint8)


def draw(img: np.ndarray, texts: list[tuple[str, tuple[int, int]]], *, size: int = 16,
         value: int = 255, colour: tuple[int, int, int] | None = None) -> list[Text]:
    """Draw ``texts`` (string, (x, y) of the top-left corner) into a uint8 image (2-D or RGB), in place,
    in grey ``value`` (or ``colour`` on an RGB image)."""
    pil = Image.fromarray(img)
    d = ImageDraw.Draw(pil)
    fill: int | tuple[int, int, int] = value if img.ndim == 2 else colour or (value, value, value)
    out = []
    for text, (x, y) in texts:
        d.text((x, y), text, fill=fill, font=_font(size))
        x0, y0, x1, y1 = d.textbbox((x, y), text, font=_font(size))
        out.append(Text(text, (int(x0), int(y0), int(x1), int(y1))))
    img[...] = np.asarray(pil)
    return out


#: The made-up patient whose identifiers are burned into the images.
PATIENT = {"PatientName": "DOE^JANE", "PatientID": "PID4711", "AccessionNumber": "ACC0815",
           "StudyDate": "20240315", "PatientBirthDate": "19700101"}

#: Default overlay: identifiers in the top banner, a harmless label on the right.
BANNER = [("DOE JANE", (12, 8)), ("PID4711", (200, 8)), ("2024-03-15", (470, 8))]
SIDE = [("GAIN 50", (560, 230))]


def us_frame(rows: int = 480, cols: int = 640, *, seed: int = 0, rgb: bool = False,
             texts: list[tuple[str, tuple[int, int]]] | None = None) -> tuple[np.ndarray, list[Text]]:
    """One frame: speckle plus ``texts`` (default :data:`BANNER` + :data:`SIDE`)."""
    img = speckle(rows, cols, seed)
    if rgb:
        img = np.repeat(img[:, :, None], 3, axis=2)
    drawn = draw(img, BANNER + SIDE if texts is None else texts)
    return img, drawn


def us_dataset(frames: list[np.ndarray], *, encoding: str = "native", manufacturer: str = "ACME",
               model: str = "SONO 1", seed: str = "pixels", index: int = 0) -> Dataset:
    """An ultrasound instance (single- or multi-frame) holding ``frames``.

    ``encoding``: ``native`` (explicit VR little endian), ``rle`` (RLE Lossless,
    pydicom's encoder) or ``jpeg`` (JPEG baseline, Pillow's encoder, quality 95).
    """
    first = frames[0]
    rgb = first.ndim == 3
    ds = Dataset()
    multi = len(frames) > 1
    ds.SOPClassUID = UltrasoundMultiFrameImageStorage if multi else UltrasoundImageStorage
    ds.SOPInstanceUID = make_uid(seed, "sop", index)
    ds.StudyInstanceUID = make_uid(seed, "study")
    ds.SeriesInstanceUID = make_uid(seed, "series", encoding)
    ds.Modality = "US"
    ds.Manufacturer = manufacturer
    ds.ManufacturerModelName = model
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    for k, v in PATIENT.items():
        setattr(ds, k, v)
    ds.InstanceNumber = index + 1
    ds.Rows, ds.Columns = int(first.shape[0]), int(first.shape[1])
    ds.SamplesPerPixel = 3 if rgb else 1
    ds.PhotometricInterpretation = "RGB" if rgb else "MONOCHROME2"
    if rgb:
        ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.BurnedInAnnotation = "YES"
    if multi:
        ds.NumberOfFrames = len(frames)
        ds.FrameTime = 33.3
        ds.FrameIncrementPointer = 0x00181063
    arr = np.stack(frames) if multi else first
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    if encoding == "native":
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = arr.tobytes()
    elif encoding == "rle":
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.PixelData = arr.tobytes()
        ds.compress(RLELossless, arr)
    elif encoding == "jpeg":
        import io

        parts = []
        for f in frames:
            buf = io.BytesIO()
            Image.fromarray(f).save(buf, format="JPEG", quality=95)
            parts.append(buf.getvalue())
        ds.file_meta.TransferSyntaxUID = JPEGBaseline8Bit
        ds.PixelData = encapsulate(parts)
        ds["PixelData"].VR = "OB"
        if rgb:
            ds.PhotometricInterpretation = "YBR_FULL_422"
        ds.LossyImageCompression = "01"
    else:
        raise ValueError(f"unknown encoding {encoding!r}")
    return ds
