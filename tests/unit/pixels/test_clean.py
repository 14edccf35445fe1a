"""Clean Pixel Data with real Tesseract (no mock): text drawn with Pillow at known places is found, masked
and verified gone, in native, RLE and JPEG encodings, single- and multi-frame; what stays is quarantined."""

from __future__ import annotations

import io
from typing import Any

import numpy as np
import pytest
from pydicom import Dataset, dcmread
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from copydicom.errors import InvalidInstance, PixelRiskError
from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from copydicom.stages.pixels import PixelSettings
from copydicom.stages.pixels._clean import PixelCleaner
from copydicom.stages.pixels._ocr import Ocr
from tests.support.ultrasound import BANNER, PATIENT, SIDE, Text, us_dataset, us_frame

KEY = b"pixel-clean-key-0123456789abcdef"
OPTIONS = ["retain_long_modified_dates", "clean_structured_content", "clean_pixel_data"]


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stage(**extra: Any) -> DeidStage:
    return DeidStage(DeidProfile.from_mapping("us", {"options": OPTIONS, **extra}, where="profiles.us"), KEY)


@pytest.fixture(scope="module")
def stage() -> DeidStage:
    return _stage()


@pytest.fixture(scope="module")
def ocr() -> Ocr:
    return Ocr()


def _frames(ds: Dataset) -> np.ndarray:
    arr = ds.pixel_array
    return arr if int(ds.get("NumberOfFrames", 1) or 1) > 1 else arr[None]


def _assert_gone(frames: np.ndarray, drawn: list[Text], ocr: Ocr, ringing: int = 0) -> None:
    for f in frames:
        for t in drawn:
            x0, y0, x1, y1 = t.box
            # Every drawn string blanked (JPEG input: its ringing spreads a few faint pixels beyond the glyphs).
            assert int(f[y0:y1, x0:x1].max()) <= ringing, t.text
        words = [w for w in ocr.read(f, "MONOCHROME2") if sum(c.isalnum() for c in w.text) >= 2 and w.conf >= 50]
        assert words == []  # an independent OCR pass over the output finds nothing


@pytest.mark.parametrize("encoding", ["native", "rle", "jpeg"])
@pytest.mark.parametrize("nframes", [1, 3])
def test_text_outside_rules_is_found_masked_and_verified(stage: DeidStage, ocr: Ocr, encoding: str,
                                                         nframes: int) -> None:
    frames, drawn = [], []
    for i in range(nframes):
        f, d = us_frame(seed=i)
        frames.append(f)
        drawn = d
    ds = us_dataset(frames, encoding=encoding)
    out = stage.process(Instance(InstanceRef("a"), _bytes(ds)))
    result = dcmread(io.BytesIO(out.data))
    got = _frames(result)
    assert got.shape == (nframes, 480, 640)
    _assert_gone(got, drawn, ocr, ringing=16 if encoding == "jpeg" else 0)
    # The anatomy is untouched (exactly, for lossless input).
    if encoding != "jpeg":
        assert np.array_equal(got[:, 100:400, 200:440], np.stack(frames)[:, 100:400, 200:440])
    ts = result.file_meta.TransferSyntaxUID
    assert ts == {"native": ExplicitVRLittleEndian, "rle": RLELossless, "jpeg": ExplicitVRLittleEndian}[encoding]
    if encoding == "jpeg":  # lossy once, lossy always; method and ratio from the input
        assert result.LossyImageCompression == "01"
        assert result.LossyImageCompressionMethod == "ISO_10918_1"
        assert float(result.LossyImageCompressionRatio) > 1
    else:
        assert "LossyImageCompression" not in result
    assert result.BurnedInAnnotation == "NO"
    codes = [(i.CodeValue, i.CodeMeaning) for i in result.DeidentificationMethodCodeSequence]
    assert ("113101", "Clean Pixel Data Option") in codes
    assert result.PatientIdentityRemoved == "YES"


def test_a_cine_repeating_its_frames_is_read_once_per_distinct_frame(stage: DeidStage) -> None:
    a, drawn = us_frame(seed=0)
    b, _ = us_frame(seed=1)
    ds = us_dataset([a, a, b, a, b], encoding="rle")
    out = stage.process(Instance(InstanceRef("a"), _bytes(ds)))
    pixel_audit = [action for path, action in out.audit["deid"] if path == "(7FE0,0010)"]
    assert len(pixel_audit) == 1 and "frames=5 ocr_frames=2 " in pixel_audit[0]
    got = _frames(dcmread(io.BytesIO(out.data)))
    for t in drawn:
        x0, y0, x1, y1 = t.box
        assert int(got[:, y0:y1, x0:x1].max()) == 0


def test_colour_frames(stage: DeidStage, ocr: Ocr) -> None:
    f, drawn = us_frame(rgb=True)
    out = stage.process(Instance(InstanceRef("a"), _bytes(us_dataset([f]))))
    result = dcmread(io.BytesIO(out.data))
    assert result.PhotometricInterpretation == "RGB"
    _assert_gone(_frames(result).max(axis=3), drawn, ocr)


def test_text_that_stays_quarantines_when_ocr_redact_is_off() -> None:
    f, _ = us_frame()
    with pytest.raises(PixelRiskError) as err:
        _stage(ocr_redact=False).process(Instance(InstanceRef("a"), _bytes(us_dataset([f]))))
    reason = str(err.value)
    assert "ocr_redact is off" in reason and "frame 1" in reason
    for value in ("DOE", "JANE", "PID4711", "2024"):
        assert value not in reason  # the reason never carries what was read


class _HalfMask(PixelCleaner):
    """A redaction that misses the right half of every word (as a too-small box would)."""

    def mask_box(self, box: tuple[int, int, int, int], rows: int, cols: int) -> tuple[int, int, int, int]:
        x0, y0, x1, y1 = box
        return x0, y0, x0 + (x1 - x0) // 3, y1


def test_text_found_again_by_the_second_pass_quarantines() -> None:
    f, _ = us_frame(texts=[("WILLIAMSON", (40, 8)), ("HENDERSON", (300, 8))])
    with pytest.raises(PixelRiskError, match=r"OCR still finds text after masking \(frame 1"):
        _HalfMask(PixelSettings()).clean(us_dataset([f]))
    # The full-size mask passes the same image.
    assert PixelCleaner(PixelSettings()).clean(us_dataset([f])) is not None


def test_identifiers_mode_masks_names_ids_and_dates_and_keeps_other_labels(ocr: Ocr) -> None:
    f, drawn = us_frame()
    ds = us_dataset([f])
    report = PixelCleaner(PixelSettings(ocr_text="identifiers")).clean(ds)
    assert report is not None and report.ocr_masked == 4  # DOE, JANE, PID4711, 2024-03-15
    got = ds.pixel_array
    for t in drawn:
        x0, y0, x1, y1 = t.box
        if t.text == SIDE[0][0]:
            assert int(got[y0:y1, x0:x1].max()) == 255  # GAIN 50 is no identifier: it stays
        else:
            assert int(got[y0:y1, x0:x1].max()) == 0, t.text
    assert PATIENT["PatientID"] == "PID4711" and BANNER[1][0] == "PID4711"


def test_allowed_regions_keep_their_text() -> None:
    f, drawn = us_frame()
    rule = {"label": "labels", "when": {"Manufacturer": "ACME"}, "allow_text": [[540, 220, 640, 260]]}
    ds = us_dataset([f])
    report = PixelCleaner(PixelSettings.from_profile({"pixel_rules": [rule]}, where="p")).clean(ds)
    assert report is not None and report.rules == ["labels"] and report.ocr_masked == 4
    side = next(t for t in drawn if t.text == SIDE[0][0])
    x0, y0, x1, y1 = side.box
    assert int(ds.pixel_array[y0:y1, x0:x1].max()) == 255


def test_without_the_option_the_pixel_risk_gate_stays() -> None:
    f, _ = us_frame()
    plain = DeidStage(DeidProfile.from_mapping("r", {"options": OPTIONS[:2]}, where="p"), KEY)
    assert plain._pixels is None
    with pytest.raises(PixelRiskError, match="Burned In Annotation is YES"):
        plain.process(Instance(InstanceRef("a"), _bytes(us_dataset([f]))))


def test_undecodable_pixels_quarantine(stage: DeidStage) -> None:
    f, _ = us_frame()
    ds = us_dataset([f], encoding="jpeg")
    from pydicom.encaps import encapsulate, generate_frames

    (frame,) = generate_frames(ds.PixelData, number_of_frames=1)
    # A JPEG stream broken inside a well-formed fragment (a cut stream is caught earlier, by the structure check).
    ds.PixelData = encapsulate([frame[:2] + b"\x00" * (len(frame) - 2)])  # SOI, then no header
    with pytest.raises(PixelRiskError, match="pixel data could not be decoded"):
        stage.process(Instance(InstanceRef("a"), _bytes(ds)))


def test_truncated_encapsulated_pixels_quarantine(stage: DeidStage) -> None:
    f, _ = us_frame()
    ds = us_dataset([f], encoding="jpeg")
    ds.PixelData = ds.PixelData[:200] + b"\x00" * 64  # a cut JPEG stream: the fragment is shorter than it says
    with pytest.raises(InvalidInstance, match="truncated"):
        stage.process(Instance(InstanceRef("a"), _bytes(ds)))


def test_ocr_scale_reads_small_fonts() -> None:
    from tests.support.ultrasound import draw, speckle

    img = speckle(seed=0)
    drawn = draw(img, [("SMITH", (20, 10)), ("JOHN 4711", (300, 10)), ("12/03/2024", (480, 440))], size=9)
    ds = us_dataset([img])
    report = PixelCleaner(PixelSettings(ocr_scale=2)).clean(ds)
    assert report is not None and report.ocr_masked >= 3
    for t in drawn:
        x0, y0, x1, y1 = t.box
        assert int(ds.pixel_array[y0:y1, x0:x1].max()) == 0, t.text


def test_output_is_byte_identical_across_stages(stage: DeidStage) -> None:
    frame, _ = us_frame(seed=3)
    data = _bytes(us_dataset([frame], encoding="rle"))
    first = stage.process(Instance(InstanceRef("a"), data)).data
    assert _stage().process(Instance(InstanceRef("a"), data)).data == first  # a new engine, the same bytes


def test_one_stage_serves_worker_threads(stage: DeidStage) -> None:
    from concurrent.futures import ThreadPoolExecutor

    files = [_bytes(us_dataset([us_frame(seed=s)[0]], index=s)) for s in range(4)]
    serial = [stage.process(Instance(InstanceRef(str(i)), f)).data for i, f in enumerate(files)]
    with ThreadPoolExecutor(2) as pool:  # each thread gets its own Tesseract engine
        threaded = list(pool.map(lambda i: stage.process(Instance(InstanceRef(str(i)), files[i])).data, range(4)))
    assert threaded == serial


@pytest.mark.parametrize("rgb", [False, True])
def test_a_screenshot_with_dark_text_on_white(stage: DeidStage, ocr: Ocr, rgb: bool) -> None:
    from pydicom.uid import SecondaryCaptureImageStorage

    from tests.support.ultrasound import draw

    page = np.full((480, 640, 3) if rgb else (480, 640), 255, np.uint8)
    drawn = draw(page, [("Patient: DOE JANE", (20, 20)), ("DLP 1234 mGy cm", (20, 200))], value=60)
    if rgb:  # red text: dark in its darkest channel only
        drawn += draw(page, [("Referrer SMITH", (20, 400))], colour=(200, 0, 0))
    ds = us_dataset([page])
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    ds.Modality = "OT"
    out = dcmread(io.BytesIO(stage.process(Instance(InstanceRef("a"), _bytes(ds))).data))
    got = out.pixel_array
    ink = (page.min(axis=2) if rgb else page) < 250
    shown = got.max(axis=2) if rgb else got
    for t in drawn:
        x0, y0, x1, y1 = t.box
        box_ink = ink[y0:y1, x0:x1]
        assert box_ink.any() and int(shown[y0:y1, x0:x1][box_ink].max()) == 0, t.text  # every ink pixel masked
    assert ocr.read(got, "RGB" if rgb else "MONOCHROME2") == []
