"""The Clean Pixel Data option (PS3.15 E.3.1, DCM 113101): mask by rule, then prove by OCR.

Per instance with pixel data:

1. decode every frame (:mod:`._codec`);
2. blank the rectangles of every matching rule (:mod:`._rules`: CTP's
   DicomPixelAnonymizer table and the profile's ``pixel_rules``);
3. OCR each distinct frame once (frames are hashed: a cine that repeats a
   frame is read once) and look for *findings*: with ``ocr_text: any`` every
   word of at least two letters or digits read with ``ocr_min_confidence``
   outside the rules' ``allow_text`` regions; with ``ocr_text: identifiers``
   only words that match the instance's names, IDs and dates (whole words,
   or inside one text line, after folding the usual OCR confusions O/0, I/1,
   S/5, B/8, Z/2);
4. findings are blanked when ``ocr_redact`` is on, and the frame is read a
   second time: anything still found (or any finding with ``ocr_redact``
   off) quarantines the instance with :class:`PixelRiskError`.  The second
   pass reads the whole frame's text layer and, at full grey scale, every
   full-width band around a blanked box (the box's height above and below):
   the rest of the frame is unchanged since the first pass read it with the
   same engine, which is deterministic, so reading it again would find the
   same nothing (and cost twice the time: page layout on speckle is most of
   Tesseract's work);
5. write the frames back (:func:`._codec.encode`), Burned In Annotation NO.

Reasons never carry the text read: it may be a name.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np
from pydicom import Dataset

from copydicom.errors import PixelRiskError
from copydicom.stages.pixels import _codec, _rules
from copydicom.stages.pixels._ocr import Ocr, Word
from copydicom.stages.pixels._settings import PixelSettings, Rect, Rule

_CONFUSIONS = str.maketrans("OILSBZ", "011582")
_NOT_ALNUM = re.compile(r"[^0-9A-Z]")
_PN_KEYWORDS = ("PatientName", "OtherPatientNames", "PatientBirthName", "PatientMotherBirthName",
                "ReferringPhysicianName", "PerformingPhysicianName", "OperatorsName",
                "NameOfPhysiciansReadingStudy", "RequestingPhysician")
_ID_KEYWORDS = ("PatientID", "OtherPatientIDs", "AccessionNumber", "StudyID", "MedicalRecordLocator")
_DATE_KEYWORDS = ("PatientBirthDate", "StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate",
                  "InstanceCreationDate")
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")
PIXEL_DATA = 0x7FE00010


def canon(text: str) -> str:
    """Upper-case letters and digits only, with the usual OCR confusions folded."""
    return _NOT_ALNUM.sub("", text.upper()).translate(_CONFUSIONS)


@dataclass
class PixelReport:
    """What cleaning did to one instance (no values: safe to log and audit)."""

    rules: list[str] = field(default_factory=list)
    rects: int = 0
    frames: int = 0
    ocr_frames: int = 0
    ocr_masked: int = 0
    transfer_syntax: str = ""

    def summary(self) -> str:
        return (f"rules={len(self.rules)} rects={self.rects} frames={self.frames} ocr_frames={self.ocr_frames} "
                f"ocr_masked={self.ocr_masked} ts={self.transfer_syntax}")


def identifiers(ds: Dataset) -> tuple[frozenset[str], tuple[str, ...]]:
    """``(words, strings)`` to look for: name parts and IDs as canonical words, and the canonical
    strings (IDs, whole names, dates in the usual written forms) to look for inside a line."""
    words: set[str] = set()
    strings: set[str] = set()
    for kw in _PN_KEYWORDS:
        for v in _values(ds, kw):
            parts = [canon(p) for p in re.split(r"[\^=\s,]+", v)]
            words.update(p for p in parts if len(p) >= 2)
            whole = "".join(p for p in parts if p)
            if len(whole) >= 4:
                strings.add(whole)
            if len(parts) >= 2 and len(parts[1] + parts[0]) >= 4:
                strings.add(parts[1] + parts[0])  # "JANE DOE" for DOE^JANE
    for kw in _ID_KEYWORDS:
        for v in _values(ds, kw):
            c = canon(v)
            if len(c) >= 2:
                words.add(c)
            if len(c) >= 4:
                strings.add(c)
    for kw in _DATE_KEYWORDS:
        for v in _values(ds, kw):
            strings.update(canon(f) for f in _date_forms(v))
    return frozenset(words), tuple(sorted(strings, key=len, reverse=True))


def _values(ds: Dataset, kw: str) -> list[str]:
    value = ds.get(kw)
    if value is None or value == "":
        return []
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return [str(v) for v in value if str(v).strip()]
    return [str(value)]


def _date_forms(da: str) -> list[str]:
    d = da.strip()[:8]
    if len(d) != 8 or not d.isdigit():
        return []
    y, m, dd = d[:4], d[4:6], d[6:]
    mon = _MONTHS[int(m) - 1] if 1 <= int(m) <= 12 else m
    return [d, dd + m + y, m + dd + y, dd + mon + y, mon + dd + y, y + mon + dd, dd + m + y[2:], m + dd + y[2:]]


def _inside(box: tuple[int, int, int, int], rect: Rect) -> bool:
    return rect[0] <= box[0] and rect[1] <= box[1] and box[2] <= rect[2] and box[3] <= rect[3]


def _bands(boxes: list[tuple[int, int, int, int]], rows: int, cols: int) -> list[tuple[int, int, int, int]]:
    """Full-width bands around masked boxes (a box's height above and below, at least 16 pixels),
    overlapping bands merged: what the second pass reads again at full grey scale."""
    spans = sorted((max(0, y0 - max(16, y1 - y0)), min(rows, y1 + max(16, y1 - y0))) for _, y0, _, y1 in boxes)
    merged: list[list[int]] = []
    for a, b in spans:
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    return [(0, a, cols, b) for a, b in merged]


def _distinct(words: list[Word]) -> list[Word]:
    """One word per place: both readings (full and text layer) usually find the same word."""
    kept: list[Word] = []
    for w in words:
        x0, y0, x1, y1 = w.box
        area = max(1, (x1 - x0) * (y1 - y0))
        for i, k in enumerate(kept):
            ix = max(0, min(x1, k.box[2]) - max(x0, k.box[0]))
            iy = max(0, min(y1, k.box[3]) - max(y0, k.box[1]))
            k_area = max(1, (k.box[2] - k.box[0]) * (k.box[3] - k.box[1]))
            if ix * iy >= 0.5 * min(area, k_area):  # the same word: mask the union of both boxes
                union = (min(x0, k.box[0]), min(y0, k.box[1]), max(x1, k.box[2]), max(y1, k.box[3]))
                kept[i] = Word(k.text, k.conf, union, k.line)
                break
        else:
            kept.append(w)
    return kept


class PixelCleaner:
    """Clean the pixels of instances under one profile's :class:`PixelSettings` (thread-safe)."""

    def __init__(self, settings: PixelSettings) -> None:
        self.settings = settings
        self.rules: tuple[Rule, ...] = (_rules.builtin_rules() if settings.builtin_rules else ()) + settings.rules
        self.ocr = Ocr(settings.ocr_lang, settings.tessdata, settings.ocr_scale)

    def findings(self, words: Iterable[Word], allow: list[Rect],
                 idents: tuple[frozenset[str], tuple[str, ...]] | None) -> list[Word]:
        """The words that must not stay (see the module docstring, step 3)."""
        words = list(words)
        if idents is None:
            return _distinct([w for w in words if w.conf >= self.settings.ocr_min_confidence
                              and sum(ch.isalnum() for ch in w.text) >= 2
                              and not any(_inside(w.box, r) for r in allow)])
        names, strings = idents
        found = [w for w in words if canon(w.text) in names]
        lines: dict[int, list[Word]] = {}
        for w in words:
            lines.setdefault(w.line, []).append(w)
        for line_words in lines.values():
            text = "".join(canon(w.text) for w in line_words)
            for s in strings:
                if s in text:
                    found += [w for w in line_words if canon(w.text) and (canon(w.text) in s or s in canon(w.text))]
        return _distinct(found)

    def clean(self, ds: Dataset) -> PixelReport | None:
        """Clean ``ds`` in place; ``None`` if it has no pixel data (the pixel-risk gate then decides).

        Raises
        ------
        PixelRiskError
            Undecodable pixels, or text that stays after masking (the reason says where, never what).
        """
        if PIXEL_DATA not in ds._dict:
            if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
                raise PixelRiskError("float pixel data: Clean Pixel Data does not handle it")
            return None
        rules = _rules.matching(ds, self.rules)
        idents = identifiers(ds) if self.settings.ocr_text == "identifiers" else None
        dec = _codec.decode(ds)
        frames = dec.frames
        rows, cols = frames.shape[1], frames.shape[2]
        report = PixelReport(rules=[r.label for r in rules], frames=len(frames))
        allow: list[Rect] = []
        for rule in rules:
            for rect in rule.rects:
                c = _rules.clip(rect, rows, cols)
                if c is not None:
                    frames[:, c[1]:c[3], c[0]:c[2]] = 0
                    report.rects += 1
            allow += list(rule.allow)
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
        view: Callable[[np.ndarray], np.ndarray] = lambda f: f  # noqa: E731
        if photometric == "PALETTE COLOR":  # OCR reads the colours shown, the mask writes index 0
            from pydicom.pixels import apply_color_lut

            view, photometric = (lambda f: apply_color_lut(f, ds)), "RGB"  # noqa: E731
        done: dict[bytes, list[tuple[int, int, int, int]]] = {}
        for i in range(len(frames)):
            frame = frames[i]
            digest = hashlib.blake2b(frame.tobytes(), digest_size=16).digest()
            boxes = done.get(digest)
            if boxes is None:
                boxes = self._frame(frame, view, photometric, allow, idents, i + 1, report)
                done[digest] = boxes
            for x0, y0, x1, y1 in boxes:
                frame[y0:y1, x0:x1] = 0
        report.transfer_syntax = _codec.encode(ds, dec)
        ds.BurnedInAnnotation = "NO"
        return report

    def mask_box(self, box: tuple[int, int, int, int], rows: int, cols: int) -> tuple[int, int, int, int]:
        """The rectangle blanked for a word's box: padded by a quarter of its height (at least 2 pixels),
        since Tesseract's boxes hug the glyphs and anti-aliased edges stay outside them."""
        x0, y0, x1, y1 = box
        pad = max(2, (y1 - y0) // 4)
        return max(0, x0 - pad), max(0, y0 - pad), min(cols, x1 + pad), min(rows, y1 + pad)

    def _frame(self, frame: np.ndarray, view: Callable[[np.ndarray], np.ndarray], photometric: str,
               allow: list[Rect],
               idents: tuple[frozenset[str], tuple[str, ...]] | None, number: int,
               report: PixelReport) -> list[tuple[int, int, int, int]]:
        """OCR one frame, mask its findings (in place), verify; returns the masked boxes."""
        report.ocr_frames += 1
        found = self.findings(self.ocr.read(view(frame), photometric), allow, idents)
        if not found:
            return []
        what = "text" if idents is None else "identifying text"
        if not self.settings.ocr_redact:
            raise PixelRiskError(f"OCR finds {what} outside the masked regions (frame {number}, {len(found)} "
                                 "word(s)) and ocr_redact is off")
        rows, cols = frame.shape[0], frame.shape[1]
        boxes = []
        for w in found:
            box = self.mask_box(w.box, rows, cols)
            frame[box[1]:box[3], box[0]:box[2]] = 0
            boxes.append(box)
        report.ocr_masked += len(boxes)
        again = self.findings(self.ocr.read(view(frame), photometric, _bands(boxes, rows, cols)), allow, idents)
        if again:
            raise PixelRiskError(f"OCR still finds {what} after masking (frame {number}, {len(again)} word(s), "
                                 f"first at x={again[0].box[0]} y={again[0].box[1]})")
        return boxes
