"""Transfer syntaxes in and out: lossless input keeps its syntax when an encoder exists, lossy input is
written Explicit VR Little Endian and stays marked lossy (PS3.3 C.7.6.1.1.5)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from pydicom.uid import (
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000,
    JPEG2000Lossless,
    JPEGLSLossless,
    JPEGLSNearLossless,
)

from copydicom.stages.pixels import PixelSettings
from copydicom.stages.pixels._clean import PixelCleaner
from tests.support.ultrasound import us_dataset, us_frame


@pytest.fixture(scope="module")
def cleaner() -> PixelCleaner:
    return PixelCleaner(PixelSettings())


@pytest.mark.parametrize(("source", "kwargs", "out", "method"), [
    (ImplicitVRLittleEndian, {}, ImplicitVRLittleEndian, None),
    (JPEGLSLossless, {}, JPEGLSLossless, None),
    (JPEG2000Lossless, {}, JPEG2000Lossless, None),
    (JPEGLSNearLossless, {"jls_error": 3}, ExplicitVRLittleEndian, "ISO_14495_1"),
    (JPEG2000, {"j2k_cr": [20]}, ExplicitVRLittleEndian, "ISO_15444_1"),
])
def test_output_syntax_and_lossy_marking(cleaner: PixelCleaner, source: str, kwargs: dict[str, Any], out: str,
                                         method: str | None) -> None:
    frame, drawn = us_frame()
    ds = us_dataset([frame])
    if source == ImplicitVRLittleEndian:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    else:
        ds.compress(source, frame, generate_instance_uid=False, **kwargs)
    report = cleaner.clean(ds)
    assert report is not None and report.transfer_syntax == out and report.ocr_masked >= 4
    assert ds.file_meta.TransferSyntaxUID == out
    arr = ds.pixel_array
    for t in drawn:
        x0, y0, x1, y1 = t.box
        assert int(arr[y0:y1, x0:x1].max()) <= (0 if method is None else 40), t.text
    if method is None:
        assert "LossyImageCompression" not in ds
        assert np.array_equal(arr[100:400, 200:440], frame[100:400, 200:440])  # lossless: anatomy bit-exact
    else:
        assert ds.LossyImageCompression == "01"  # never claims lossless for lossy input
        assert ds.LossyImageCompressionMethod == method and float(ds.LossyImageCompressionRatio) > 1


def test_existing_lossy_history_is_kept(cleaner: PixelCleaner) -> None:
    frame, _ = us_frame()
    ds = us_dataset([frame], encoding="jpeg")
    ds.LossyImageCompressionRatio = "12.5"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    cleaner.clean(ds)
    assert (ds.LossyImageCompression, ds.LossyImageCompressionRatio, ds.LossyImageCompressionMethod) == (
        "01", 12.5, "ISO_10918_1")


def test_no_pixel_data_leaves_the_decision_to_the_gate(cleaner: PixelCleaner) -> None:
    frame, _ = us_frame()
    ds = us_dataset([frame])
    del ds.PixelData
    assert cleaner.clean(ds) is None
