"""``copydicom reconcile``: compare a source with its destinations, repair, verify, follow deletions.

Exit status: 0 in sync after the run; 1 while a difference remains (a dry run, ``--deletions
report``, anything not repaired); 2 usage or configuration error.
"""

from __future__ import annotations

import argparse
import re
import sys
from datetime import date
from pathlib import Path

from copydicom.config import AppConfig, Route, load_config
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.routes import build_route, oneshot_route


def _day(text: str) -> str:
    """``YYYY-MM-DD`` -> ``YYYYMMDD`` (StudyDate form); an ``argparse`` type (exit 2 otherwise)."""
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise argparse.ArgumentTypeError(f"{text!r}: a date written YYYY-MM-DD")
    try:
        return date.fromisoformat(text).strftime("%Y%m%d")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}: {exc}") from None


def _route(args: argparse.Namespace) -> tuple[Route, AppConfig]:
    config = load_config(args.config) if args.config else None
    if args.src or args.dest:
        if not (args.src and args.dest):
            raise ConfigError("give both --src and --dest (or --config with --route)")
        return oneshot_route(config, src=args.src, dests=args.dest, indexes=args.index, profile=args.profile,
                             workers=args.workers,
                             state=args.state, route_name=args.route)
    if config is None or not args.route:
        raise ConfigError("give --src and --dest, or --config and --route NAME")
    for route in config.routes:
        if route.name == args.route:
            if args.state:
                from dataclasses import replace

                from copydicom.state import PostgresTarget, is_postgres

                config = (replace(config, state_url=PostgresTarget(args.state)) if is_postgres(args.state)
                          else replace(config, state=Path(args.state), state_url=None))
            return route, config
    raise ConfigError(f"--route {args.route}: no such route in {args.config}")


def cmd_reconcile(args: argparse.Namespace) -> int:
    from copydicom.reconcile import Options, run_reconcile

    route, config = _route(args)
    deletions = args.deletions or route.deletions
    options = Options(
        since=args.since, studies=tuple(args.study or ()), dry_run=args.dry_run, verify=args.verify,
        deletions=deletions,  # type: ignore[arg-type]  # checked by argparse choices / the route validator
        on_changed=route.on_changed_instance,
    )
    ledger = Ledger(config.store_location)  # SQLite file or PostgreSQL
    try:
        runtime = build_route(route, config, ledger, key_file=args.key_file)
        try:
            report = run_reconcile(runtime, ledger, options, out=print)
        finally:
            runtime.close()
    finally:
        ledger.close()
    if options.dry_run and (report.missing or report.mismatched or (deletions != "ignore" and report.extra)):
        print("dry run: nothing was repaired, replaced or deleted", file=sys.stderr)
    print(report.line())
    return 1 if report.remaining(options) or report.failed else 0


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``reconcile``."""
    p = subparsers.add_parser(
        "reconcile",
        help="compare a source with its destinations and repair the difference (missing, extra, different)",
        description="Compare top-down (study counts, then series, then instances) without downloading "
        "instance bytes; send what is missing through the route's pipeline. Last line: "
        "missing=M repaired=R extra=E deleted=D mismatched=X seconds=S. Exit 0 in sync, 1 differences "
        "remain, 2 usage error.",
    )
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--route", help="with --config: the route to reconcile; with --src/--dest: its ledger name "
                   "(default derived from the endpoints, as replicate does)")
    p.add_argument("--src", help="source (name or URL)")
    p.add_argument("--dest", action="append", default=[], help="destination (name or URL); repeatable")
    p.add_argument("--index", action="append", default=[],
                   help="the route's index (as given to replicate); a SQLite index is checked for missing "
                   "instance documents, which are re-indexed from the source")
    p.add_argument("--state", help="the state replicate used for this pair (tells what it delivered): a file or a "
                   "postgresql:// URL (password from PGPASSWORD or .pgpass)")
    p.add_argument("--profile", help="de-identification profile of the route (a config name, or 'default')")
    p.add_argument("--key-file", help="de-identification key (owner-only file)")
    p.add_argument("--workers", type=int, default=4, help="parallel transfers (default 4)")
    p.add_argument("--since", type=_day, metavar="YYYY-MM-DD",
                   help="only studies whose StudyDate is on or after this day")
    p.add_argument("--study", action="append", metavar="UID", help="only this Study Instance UID; repeatable")
    p.add_argument("--dry-run", action="store_true", help="report the differences; repair nothing")
    p.add_argument("--verify", action="store_true",
                   help="also compare content: Orthanc MD5 / S3 SHA-256 and size against what the route sends")
    p.add_argument("--deletions", choices=("ignore", "report", "propagate"),
                   help="instances gone at the source (default: the route's, else ignore)")
    p.set_defaults(func=cmd_reconcile)
