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


@pytest.mark.parametrize(("photometric", "planar"), [("YBR_FULL", 0), ("RGB", 1)])
def test_native_colour_comes_back_as_interleaved_rgb(cleaner: PixelCleaner, photometric: str,
                                                     planar: int) -> None:
    from pydicom.pixels import convert_color_space

    frame, drawn = us_frame(rgb=True)
    ds = us_dataset([frame])
    stored = convert_color_space(frame, "RGB", "YBR_FULL") if photometric == "YBR_FULL" else frame
    ds.PixelData = (stored.transpose(2, 0, 1) if planar else stored).tobytes()
    ds.PhotometricInterpretation, ds.PlanarConfiguration = photometric, planar
    assert cleaner.clean(ds) is not None
    assert (ds.PhotometricInterpretation, ds.PlanarConfiguration) == ("RGB", 0)
    arr = ds.pixel_array
    assert np.abs(arr[100:400, 200:440].astype(int) - frame[100:400, 200:440]).max() <= 2  # colour kept
    for t in drawn:
        x0, y0, x1, y1 = t.box
        assert int(arr[y0:y1, x0:x1].max()) == 0, t.text


def test_bits_above_bits_stored_do_not_survive(cleaner: PixelCleaner) -> None:
    # An old-style overlay in the unused high bits of 16-bit words: pydicom's decoding drops them.
    frame, _ = us_frame()
    ds = us_dataset([frame])
    words = frame.astype(np.uint16) | np.uint16(0x8000)
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelData = words.tobytes()
    assert cleaner.clean(ds) is not None
    raw = np.frombuffer(ds.PixelData, np.uint16)
    assert int(raw.max()) < 1 << 12


def test_palette_colour_is_read_through_its_lookup_table(cleaner: PixelCleaner) -> None:
    from pydicom.pixels import apply_color_lut

    frame, _ = us_frame()
    ds = us_dataset([255 - frame])  # indices: the LUT below turns them around again
    ds.PhotometricInterpretation = "PALETTE COLOR"
    lut = (np.arange(255, -1, -1, dtype=np.uint16) * 257).tobytes()
    for colour in ("Red", "Green", "Blue"):
        setattr(ds, f"{colour}PaletteColorLookupTableDescriptor", [256, 0, 16])
        setattr(ds, f"{colour}PaletteColorLookupTableData", lut)

    def shown_words(d: object) -> list[str]:
        rgb = apply_color_lut(d.pixel_array, d)  # type: ignore[attr-defined]
        return [w.text for w in cleaner.findings(cleaner.ocr.read(rgb, "RGB"), [], None)]

    assert len(shown_words(ds)) >= 4  # the text is there as displayed (raw indices are dark on white)
    report = cleaner.clean(ds)
    assert report is not None and report.ocr_masked >= 4
    assert shown_words(ds) == []


@pytest.mark.parametrize(("source", "out"), [
    ("1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.1"),  # deflated -> explicit VR little endian
    ("1.2.840.10008.1.2.2", "1.2.840.10008.1.2.2"),  # big endian (retired) stays big endian
])
def test_deflated_and_big_endian_through_the_stage(source: str, out: str) -> None:
    import io

    from pydicom import dcmread

    from copydicom.model import Instance, InstanceRef
    from copydicom.stages.deid import DeidProfile, DeidStage

    frame, drawn = us_frame()
    ds = us_dataset([frame])
    ds.file_meta.TransferSyntaxUID = source
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    stage = DeidStage(DeidProfile.from_mapping("us", {"options": ["clean_pixel_data"]}, where="p"), b"k" * 32)
    result = dcmread(io.BytesIO(stage.process(Instance(InstanceRef("a"), buf.getvalue())).data))
    assert result.file_meta.TransferSyntaxUID == out
    arr = result.pixel_array
    assert np.array_equal(arr[100:400, 200:440], frame[100:400, 200:440])
    for t in drawn:
        x0, y0, x1, y1 = t.box
        assert int(arr[y0:y1, x0:x1].max()) == 0, t.text
