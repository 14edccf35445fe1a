"""Generate the de-identification rule tables (package data) from the standard's CSVs.

Usage (from the repository root; one command, no network)::

    python tools/gen_deid_tables.py [REFERENCE_DIR]

Reads ``ps315_table_e1_1.csv`` (PS3.15 Table E.1-1) and
``ps315_table_e3_10_1_safe_private.csv`` (PS3.15 Table E.3.10-1) from
REFERENCE_DIR (default ``tools/reference``: the copy committed with the
repository, see its README for the edition and how it was parsed) and writes
``copydicom/stages/deid/data/ps315_e1_1.json`` and
``copydicom/stages/deid/data/ps315_e3_10_1.json``, recording the edition.
The run-time code reads only these JSON files; ``tests/unit/deid/test_tables_generated.py``
checks that the committed JSON is exactly what this script produces.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

EDITION = "DICOM PS3.15 2026c"
OPTION_COLUMNS = (
    "retain_safe_private",
    "retain_uids",
    "retain_device_identity",
    "retain_institution_identity",
    "retain_patient_characteristics",
    "retain_long_full_dates",
    "retain_long_modified_dates",
    "clean_descriptors",
    "clean_structured_content",
    "clean_graphics",
)
ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "copydicom" / "stages" / "deid" / "data"
REFERENCE = ROOT / "tools" / "reference"


def generate(ref: Path = REFERENCE) -> dict[str, str]:
    """The text of each JSON file (by file name) generated from the CSVs in ``ref``."""
    rows = []
    with open(ref / "ps315_table_e1_1.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            tag = r["tag"].strip()
            if tag.startswith("(gggg"):
                tag = "private"
            else:
                tag = tag.strip("()").replace(",", "").upper()
            rows.append(
                {
                    "tag": tag,
                    "keyword": r["keyword"],
                    "name": r["name"],
                    "basic": r["basic_action"],
                    "options": {c: r[c] for c in OPTION_COLUMNS if r[c]},
                    "retired": r["retired"] == "Y",
                }
            )
    safe = []
    with open(ref / "ps315_table_e3_10_1_safe_private.csv", newline="", encoding="utf-8") as fh:
        for r in csv.DictReader(fh):
            group, elem = r["tag"].strip("()").split(",")
            safe.append(
                {
                    "group": group.upper(),
                    "element": elem.upper()[-2:],
                    "creator": r["private_creator"].strip(),
                    "vr": r["vr"],
                }
            )
    meta = {"edition": EDITION, "source": "PS3.15 Table E.1-1", "generator": "tools/gen_deid_tables.py"}
    e1 = json.dumps({**meta, "rows": rows}, indent=0) + "\n"
    meta["source"] = "PS3.15 Table E.3.10-1"
    e3 = json.dumps({**meta, "rows": safe}, indent=0) + "\n"
    return {"ps315_e1_1.json": e1, "ps315_e3_10_1.json": e3}


def main(argv: list[str]) -> int:
    ref = Path(argv[1]) if len(argv) > 1 else REFERENCE
    if not (ref / "ps315_table_e1_1.csv").exists():
        print(f"{ref}: no ps315_table_e1_1.csv here", file=sys.stderr)
        return 2
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in generate(ref).items():
        (OUT / name).write_text(text, encoding="utf-8")
    print(f"{ref} -> {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
