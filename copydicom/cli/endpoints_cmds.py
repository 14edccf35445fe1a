"""``copydicom endpoints``: the endpoint registry (types, URL schemes, roles, extras)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from copydicom import registry


def describe() -> list[dict[str, Any]]:
    """One row per registered endpoint type (what ``endpoints --json`` prints)."""
    rows = []
    for t in registry.all_types():
        rows.append(
            {
                "type": t.name,
                "schemes": list(t.schemes),
                "roles": list(t.roles),
                "change_feed": t.feeds,
                "by_identity": t.by_identity,
                "extra": t.extra,
                "installed": t.installed(),
                "missing": t.missing(),
                "description": t.description,
            }
        )
    return rows


def cmd_endpoints(args: argparse.Namespace) -> int:
    rows = describe()
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    header = ("TYPE", "SCHEMES", "ROLES", "EXTRA")
    table = [header] + [
        (
            r["type"],
            ", ".join(f"{s}://" for s in r["schemes"]),
            ", ".join(r["roles"]),
            "-" if r["extra"] is None else f"{r['extra']} ({'installed' if r['installed'] else 'missing: pip install copydicom[' + r['extra'] + ']'})",
        )
        for r in rows
    ]
    widths = [max(len(row[i]) for row in table) for i in range(len(header) - 1)]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)) + "  " + row[-1])
    return 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``endpoints``."""
    p = subparsers.add_parser(
        "endpoints", help="list the endpoint types: URL schemes, roles, and whether their extra is installed"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_endpoints)
