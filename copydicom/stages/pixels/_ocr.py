"""Tesseract OCR in-process (tesserocr), one engine per thread, the model loaded once.

Why tesserocr and not the command line: ``tesseract`` loads its model on every
call (about 120 ms of the 200 ms a 640x480 frame takes here); tesserocr keeps
one ``TessBaseAPI`` per thread and releases the GIL while it recognises, so
worker threads OCR in parallel.  The PyPI wheel bundles libtesseract 5.5; the
language model comes from the Debian package ``tesseract-ocr-eng`` (or
``tessdata``/``$TESSDATA_PREFIX``).

Frames are prepared the way burned-in annotation looks (:func:`prepare`): dark
text on white, what Tesseract reads best, whichever the polarity of the image;
Tesseract's own inverted-line retry is switched off (``tessedit_do_invert=0``),
which halves the time on speckle.
"""

from __future__ import annotations

import glob
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from copydicom.errors import ConfigError


@dataclass(frozen=True)
class Word:
    """A recognised word: text, confidence (0-100), box ``(x0, y0, x1, y1)`` and its line number."""

    text: str
    conf: float
    box: tuple[int, int, int, int]
    line: int


def find_tessdata(lang: str, configured: str | None = None) -> str:
    """The directory holding ``<lang>.traineddata``: configured, ``$TESSDATA_PREFIX``, or a Debian path."""
    candidates = [configured] if configured else []
    env = os.environ.get("TESSDATA_PREFIX")
    if env and not configured:
        candidates += [env, os.path.join(env, "tessdata")]
    if not configured:
        candidates += sorted(glob.glob("/usr/share/tesseract-ocr/*/tessdata"), reverse=True)
        candidates += ["/usr/share/tessdata", "/usr/local/share/tessdata"]
    for c in candidates:
        if c and Path(c, f"{lang}.traineddata").is_file():
            return c
    raise ConfigError(f"tessdata: no {lang}.traineddata in {', '.join(c for c in candidates if c)} "
                      "(install tesseract-ocr-eng, or set tessdata / TESSDATA_PREFIX)")


def prepare(frame: np.ndarray, photometric: str) -> np.ndarray:
    """A uint8 image with dark text on white from one decoded frame (any polarity).

    More than 8 bits are scaled to 0-255 and MONOCHROME1 is turned around, so values
    read as displayed.  The background's polarity comes from the median: on a dark
    image (ultrasound, CT) text is bright, colour is reduced to its brightest channel
    and the image inverted; on a bright one (a screenshot of a report) text is dark,
    colour is reduced to its darkest channel and the image kept.
    """
    arr = frame
    if arr.dtype != np.uint8:
        g = arr.astype(np.float32)
        lo, hi = float(g.min()), float(g.max())
        arr = ((g - lo) * (255.0 / (hi - lo))).astype(np.uint8) if hi > lo else np.zeros(g.shape, np.uint8)
    if photometric == "MONOCHROME1":
        arr = 255 - arr
    bright_background = float(np.median(arr[::4, ::4])) > 127
    if arr.ndim == 3:
        arr = arr.min(axis=2) if bright_background else arr.max(axis=2)
    return np.ascontiguousarray(arr if bright_background else 255 - arr)


def bright(prepared: np.ndarray) -> np.ndarray:
    """The text layer: the quarter of the value range at the text's end only (black on white), from a
    :func:`prepare`'d image (where text is dark: the brightest pixels of an ultrasound frame, the darkest
    of a screenshot).

    Burned-in text is drawn near full brightness; speckle and anatomy mostly are not.  Tesseract's page
    layout sometimes takes a label next to speckle for part of a picture and skips it: on this image
    the speckle is gone and the label is read (cheaply: about a third of the full pass).
    """
    darkest = int(prepared.min())
    cut = darkest + (255 - darkest) // 4
    return np.where(prepared <= cut, 0, 255).astype(np.uint8)


class Ocr:
    """Thread-safe OCR: each thread gets its own engine, created once."""

    def __init__(self, lang: str = "eng", tessdata: str | None = None, scale: int = 1) -> None:
        try:
            import tesserocr  # noqa: F401  (the ``pixels`` extra)
        except ImportError:
            raise ConfigError("clean_pixel_data needs tesserocr: pip install 'copydicom[pixels]'") from None
        self.lang = lang
        self.scale = scale
        self.tessdata = find_tessdata(lang, tessdata)
        self._local = threading.local()
        self._engine()  # fail at start-up, not on the first instance

    def _engine(self) -> object:
        api = getattr(self._local, "api", None)
        if api is None:
            import tesserocr

            try:
                api = tesserocr.PyTessBaseAPI(path=self.tessdata.rstrip("/") + "/", lang=self.lang,
                                              psm=tesserocr.PSM.AUTO, oem=tesserocr.OEM.LSTM_ONLY)
            except RuntimeError as exc:
                raise ConfigError(f"tessdata: Tesseract cannot load {self.lang!r}: {exc}") from None
            api.SetVariable("tessedit_do_invert", "0")
            api.SetVariable("debug_file", "/dev/null")
            self._local.api = api
        return api

    def read(self, frame: np.ndarray, photometric: str,
             regions: list[tuple[int, int, int, int]] | None = None) -> list[Word]:
        """Words of one decoded frame: the frame (or only ``regions`` of it, each read with its own
        layout) and the frame's :func:`bright` layer; boxes in frame coordinates."""
        image = prepare(frame, photometric)
        k = self.scale
        if k > 1:  # small fonts: Tesseract wants glyphs of 10+ pixels
            from PIL import Image

            image = np.asarray(Image.fromarray(image).resize((image.shape[1] * k, image.shape[0] * k),
                                                             Image.Resampling.BICUBIC))
        found: list[Word] = []
        for rect in regions if regions is not None else [None]:
            lines = max((w.line for w in found), default=-1) + 1
            scaled = None if rect is None else (rect[0] * k, rect[1] * k, rect[2] * k, rect[3] * k)
            found += [Word(w.text, w.conf, w.box, w.line + lines) for w in self.words(image, scaled)]
        lines = max((w.line for w in found), default=-1) + 1
        found += [Word(w.text, w.conf, w.box, w.line + lines) for w in self.words(bright(image))]
        if k == 1:
            return found
        return [Word(w.text, w.conf, (w.box[0] // k, w.box[1] // k, -(-w.box[2] // k), -(-w.box[3] // k)), w.line)
                for w in found]

    def words(self, image: np.ndarray, rect: tuple[int, int, int, int] | None = None) -> list[Word]:
        """The words Tesseract finds in a prepared (:func:`prepare`) uint8 image, or in ``rect``
        ``(x0, y0, x1, y1)`` of it (boxes are always in image coordinates)."""
        import tesserocr
        from PIL import Image

        api = self._engine()
        dx = dy = 0
        if rect is not None:  # a crop, not SetRectangle: with a rectangle set, tesserocr's words came out wrong
            dx, dy = rect[0], rect[1]
            image = np.ascontiguousarray(image[rect[1]:rect[3], rect[0]:rect[2]])
        api.SetImage(Image.fromarray(image))  # type: ignore[attr-defined]
        api.Recognize()  # type: ignore[attr-defined]
        it = api.GetIterator()  # type: ignore[attr-defined]
        out: list[Word] = []
        if it is None:
            return out
        level = tesserocr.RIL.WORD
        line = -1
        for w in tesserocr.iterate_level(it, level):
            if w.IsAtBeginningOf(tesserocr.RIL.TEXTLINE):
                line += 1
            try:
                text = w.GetUTF8Text(level)
            except RuntimeError:  # tesserocr's "No text returned" (an empty page)
                continue
            box = w.BoundingBox(level)
            if not text or not text.strip() or box is None:
                continue
            x0, y0, x1, y1 = (int(v) for v in box)
            out.append(Word(text.strip(), float(w.Confidence(level)), (x0 + dx, y0 + dy, x1 + dx, y1 + dy),
                            max(line, 0)))
        api.Clear()  # type: ignore[attr-defined]
        return out
