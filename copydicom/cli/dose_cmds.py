"""``copydicom tags`` and ``copydicom dose``: flattened tags and dose extraction of files."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from copydicom.errors import ConfigError

if TYPE_CHECKING:
    import pydicom


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``tags`` and ``dose`` commands."""
    tags = subparsers.add_parser("tags", help="print the flattened tags of a DICOM file as one JSON document")
    tags.add_argument("file", help="DICOM file")
    tags.add_argument("--scheme", choices=("keyword", "tag", "spaceless", "human"), default="keyword",
                      help="key names: keyword (default), gggg,eeee tags, names without spaces, or the "
                           "standard's names (\"Patient's Name\")")
    tags.add_argument("--meta", action="store_true", help="include the File Meta Information")
    tags.set_defaults(func=tags_command)

    dose = subparsers.add_parser("dose", help="extract radiation dose from dose SRs (and list dose screens)")
    dose.add_argument("files", nargs="+", help="DICOM files")
    dose.add_argument("--json", action="store_true", help="JSON Lines, one document per line")
    dose.set_defaults(func=dose_command)


def _read(path: str) -> pydicom.Dataset:
    if not Path(path).is_file():
        raise ConfigError(f"{path}: no such file")
    from copydicom.errors import InvalidInstance
    from copydicom.stages.structure import read_checked

    try:
        with open(path, "rb") as fh:
            data = fh.read()
        return read_checked(data, stop_before_pixels=True)  # refuses non-DICOM bytes, truncation, deep nesting
    except InvalidInstance as exc:
        raise _Unreadable(f"{path}: {exc}") from None
    except OSError as exc:
        raise _Unreadable(f"{path}: cannot read: {exc.strerror}") from None


class _Unreadable(Exception):
    pass


def tags_command(args: argparse.Namespace) -> int:
    from copydicom.stages.flatten import flatten

    try:
        ds = _read(args.file)
    except _Unreadable as exc:
        print(f"copydicom: {exc}", file=sys.stderr)
        return 1
    json.dump(flatten(ds, args.scheme, include_meta=args.meta), sys.stdout, ensure_ascii=False)
    sys.stdout.write("\n")
    return 0


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return str(value)


def _row(path: str, doc: dict[str, Any]) -> list[str]:
    kind = doc["doc_type"]
    name = Path(path).name
    warnings = len(doc.get("quality", {}).get("warnings", []))
    if kind == "irradiation_event":
        ev = doc["event"]
        if "ct" in doc:
            ct = doc["ct"]
            values = f"CTDIvol {_fmt(ct['ctdivol_mgy'])} mGy  DLP {_fmt(ct['dlp_mgy_cm'])} mGy.cm"
        elif "radiopharmaceutical" in doc:
            rp = doc["radiopharmaceutical"]
            values = (f"activity {_fmt(rp.get('administered_activity_mbq'))} MBq  "
                      f"E {_fmt(rp.get('effective_dose_msv'))} mSv  organ doses {len(rp.get('organ_doses') or [])}")
        else:
            p = doc.get("projection", {})
            values = f"DAP {_fmt(p.get('dap_gy_m2'))} Gy.m2  RP {_fmt(p.get('dose_rp_mgy'))} mGy"
            if p.get("plane") in ("A", "B"):
                values = f"plane {p['plane']}: " + values
            if doc.get("mammo"):
                values += f"  AGD {_fmt(doc['mammo'].get('agd_mgy'))} mGy"
        what = f"event {ev['index']}: {ev.get('protocol') or '(no protocol)'}"
    elif kind == "dose_summary":
        t = doc.get("totals", {})
        parts = []
        for key, label in (("ct_dlp_mgy_cm", "DLP total mGy.cm"), ("dap_gy_m2", "DAP total Gy.m2"),
                           ("dose_rp_mgy", "RP total mGy"), ("fluoro_time_s", "fluoro s"),
                           ("event_count", "events")):
            if t.get(key) is not None:
                parts.append(f"{label} {_fmt(t[key])}")
        for plane, pt in (t.get("by_plane") or {}).items():
            parts.append(f"plane {plane}: DAP {_fmt(pt.get('dap_gy_m2'))} Gy.m2 RP {_fmt(pt.get('dose_rp_mgy'))} mGy")
        rp = doc.get("radiopharmaceutical")
        if rp:
            parts.append(f"activity {_fmt(rp.get('administered_activity_mbq'))} MBq")
        values = "  ".join(parts) or "-"
        what = f"summary ({doc['report']['template']})"
    else:
        values, what = "(no values: dose screen)", "dose screen"
    flag = " [not patient]" if doc.get("not_patient") else ""
    return [name, what + flag, values, f"{warnings} warning(s)" if warnings else ""]


def dose_command(args: argparse.Namespace) -> int:
    from copydicom.stages.dose import extract_dose

    status = 0
    rows: list[list[str]] = []
    for path in args.files:
        try:
            ds = _read(path)
        except _Unreadable as exc:
            print(f"copydicom: {exc}", file=sys.stderr)
            status = 1
            continue
        docs = extract_dose(ds)
        if not docs:
            print(f"copydicom: {path}: not a dose report or dose screen", file=sys.stderr)
            status = 1
            continue
        for doc in docs:
            if args.json:
                sys.stdout.write(json.dumps(doc, ensure_ascii=False) + "\n")
            else:
                rows.append(_row(path, doc))
    if rows:
        widths = [max(len(r[i]) for r in rows) for i in range(4)]
        for r in rows:
            print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    return status
