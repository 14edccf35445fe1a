"""Generate copydicom's pixel-masking rule table from CTP's DicomPixelAnonymizer rules.

Usage::

    python tools/gen_pixel_rules.py [deid-0.4.13-py3-none-any.whl | deid.dicom]

Without an argument it runs ``pip download deid==0.4.13 --no-deps`` into a
temporary directory.  The source is the ``%filter graylist`` section of
``deid/data/deid.dicom`` in the MIT-licensed ``deid`` package (pydicom/deid,
(c) Vanessa Sochat), which carries the rules of RSNA CTP's
DicomPixelAnonymizer script: labelled rules, each a set of conditions on
header attributes and the rectangles to blank.  Writes
``copydicom/stages/pixels/data/ctp_pixel_rules.json`` with the source, version,
licence and digest of the input recorded; the run-time code reads only that
file.

Conversion
----------
- Condition lines are ANDed; a ``+`` at the start of a line is AND, ``||``
  inside a line is OR between the filters of that line (deid's reading).
  A rule is stored as ``all`` (the lines) of ``any`` (the alternatives).
- ``contains`` is a case-insensitive regular-expression search (deid and CTP
  both treat the value as a pattern: ``CT|MR``), ``equals`` a case-insensitive
  comparison of the value's text; ``missing``/``empty``/``present``,
  ``notcontains``/``notequals`` as in deid.
- Rectangles become ``[x0, y0, x1, y1]`` (exclusive ends): ``ctpcoordinates
  x,y,w,h`` gives ``[x, y, x+w, y+h]``; ``coordinates x0,y0,x1,y1`` is kept.
- Misspelt keywords in the source (``Manfacturer``, ``Manufacture``) are
  corrected and listed in ``fixes``; without the fix the rule never matches.
- Rules without a rectangle ("flag only") are kept with ``rects: []``: they
  mask nothing and leave the image to the OCR gate.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

VERSION = "0.4.13"
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "copydicom" / "stages" / "pixels" / "data" / "ctp_pixel_rules.json"
OPS = ("contains", "notcontains", "equals", "notequals", "missing", "empty", "present")
KEYWORD_FIXES = {"Manfacturer": "Manufacturer", "Manufacture": "Manufacturer"}
LICENCE = (
    "MIT License, Copyright (c) 2016-2022 Vanessa Sochat (pydicom/deid); rules originally from RSNA CTP's "
    "DicomPixelAnonymizer script"
)


def _source(argv: list[str]) -> tuple[str, str]:
    """(text of deid.dicom, name of the file it came from)."""
    if len(argv) > 1 and argv[1].endswith(".dicom"):
        return Path(argv[1]).read_text(encoding="utf-8"), Path(argv[1]).name
    if len(argv) > 1:
        wheel = Path(argv[1])
    else:
        tmp = tempfile.mkdtemp(prefix="deid-")
        subprocess.run([sys.executable, "-m", "pip", "download", f"deid=={VERSION}", "--no-deps",
                        "--only-binary", ":all:", "-d", tmp, "-q"], check=True)
        wheel = next(Path(tmp).glob("deid-*.whl"))
    with zipfile.ZipFile(wheel) as zf:
        return zf.read("deid/data/deid.dicom").decode("utf-8"), wheel.name


def _filter(text: str, fixes: list[str], label: str) -> dict[str, str]:
    op, _, rest = text.strip().partition(" ")
    op = op.lower()
    if op not in OPS:
        raise ValueError(f"{label}: unknown filter {op!r}")
    if op in ("missing", "empty", "present"):
        field, value = rest.strip(), ""
    else:
        field, _, value = rest.strip().partition(" ")
        value = value.strip()
    if field in KEYWORD_FIXES:
        fixes.append(f"{label}: {field} -> {KEYWORD_FIXES[field]}")
        field = KEYWORD_FIXES[field]
    return {"op": op, "field": field, "value": value}


def _split_or(line: str) -> list[str]:
    """Split a line at ``||`` when the rest starts with a filter (``AS+`` in a value is no operator)."""
    parts = re.split(r"\s*\|\|\s*(?=(?:%s)\b)" % "|".join(OPS), line, flags=re.IGNORECASE)
    return [p for p in parts if p.strip()]


def _rect(kind: str, raw: str, label: str) -> list[int]:
    nums = [int(v) for v in raw.replace(" ", "").split(",") if v]
    if len(nums) != 4:
        raise ValueError(f"{label}: rectangle {raw!r} has {len(nums)} numbers")
    if kind == "ctpcoordinates":
        x, y, w, h = nums
        return [x, y, x + w, y + h]
    return nums


def convert(text: str) -> tuple[list[dict[str, Any]], list[str]]:
    """The graylist rules of a deid recipe as copydicom rules, and the fixes applied."""
    section = None
    rules: list[dict[str, Any]] = []
    fixes: list[str] = []
    current: dict[str, Any] | None = None
    for raw_line in text.splitlines():
        line = raw_line.split("#", 1)[0].strip()  # comments: "# (author)" after a label or a line
        if not line:
            continue
        if line.startswith("%"):
            section = line
            current = None
            continue
        if section != "%filter graylist":
            continue
        if line.startswith("LABEL"):
            label = line[len("LABEL"):].strip()
            current = {"label": label, "all": [], "rects": []}
            rules.append(current)
            continue
        if current is None:
            raise ValueError(f"line outside a LABEL: {line!r}")
        low = line.lower()
        if low.startswith(("ctpcoordinates", "coordinates")):
            kind, _, raw = line.partition(" ")
            current["rects"].append(_rect(kind.lower(), raw, current["label"]))
            continue
        if low.startswith(("keepcoordinates", "ctpkeepcoordinates")):
            raise ValueError(f"{current['label']}: keep rectangles are not supported")
        if line.startswith("||"):
            raise ValueError(f"{current['label']}: a line starting with || is ambiguous")
        if line.startswith("+"):
            line = line[1:].strip()
        current["all"].append([_filter(p, fixes, current["label"]) for p in _split_or(line)])
    return rules, fixes


def main(argv: list[str]) -> int:
    text, name = _source(argv)
    rules, fixes = convert(text)
    doc = {
        "source": f"deid {VERSION} (PyPI), deid/data/deid.dicom, section %filter graylist, from {name}",
        "source_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "licence": LICENCE,
        "generator": "tools/gen_pixel_rules.py",
        "rect_convention": "[x0, y0, x1, y1], pixels, exclusive ends",
        "fixes": fixes,
        "rules": rules,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    n_rects = sum(len(r["rects"]) for r in rules)
    print(f"{OUT.relative_to(ROOT)}: {len(rules)} rules, {sum(1 for r in rules if r['rects'])} with rectangles, "
          f"{n_rects} rectangles, {len(fixes)} keyword fixes")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
