"""``copydicom conditional-replicate``: replicate what an index query matched."""

from __future__ import annotations

import argparse
import sys

from copydicom.app import build_route
from copydicom.cli.replicate_cmds import _load, _oneshot_route, make_progress
from copydicom.conditional import describe, replicate_matches
from copydicom.ledger import Ledger
from copydicom.pipeline import Summary
from copydicom.sources.index_query import QueryStats


def cmd_conditional_replicate(args: argparse.Namespace) -> int:
    from copydicom.sinks import open_index

    config = _load(args)
    # --index here is the index to query, not an index to write to.
    route_args = argparse.Namespace(**{**vars(args), "index": []})
    route, app = _oneshot_route(route_args, config)
    from copydicom.cli._compat import COPYDICOM_NAMES, splunk_index_url

    index_url = splunk_index_url(args.index, args.hec, copydicom_name=args.command in COPYDICOM_NAMES)
    index = open_index(index_url, endpoints=config.endpoints if config is not None else None)
    ledger = Ledger(app.store_location)
    progress = make_progress(args)
    summary = Summary()
    stats = QueryStats()
    try:
        runtime = build_route(route, app, ledger, on_outcome=progress, dry_run=args.dry_run, key_file=args.key_file)
        try:
            summary, stats = replicate_matches(runtime, index, args.query, summary)
        except KeyboardInterrupt:
            runtime.pipeline.stop()
            print("interrupted: in-flight instances finished, state saved", file=sys.stderr)
        finally:
            progress.end()
            runtime.close()
    finally:
        index.close()
        ledger.close()
    print(describe(stats))
    if summary.first_retryable:
        print(f"first failure: {summary.first_retryable}", file=sys.stderr)
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``conditional-replicate``."""
    p = subparsers.add_parser(
        "conditional-replicate", aliases=["conditional_replicate"],
        help="run a query against an index and replicate exactly the matching instances",
        description="Query an index (SQLite: one read-only SELECT; Elasticsearch: query DSL JSON or a Lucene "
        "query_string; Splunk: SPL) and replicate the instances its results name by ID (Orthanc ID, any level), "
        "SOPInstanceUID, SeriesInstanceUID or StudyInstanceUID, with dedupe and de-identification. "
        "Exit 0 when all went well (also when nothing matched), 1 if something was quarantined or failed, "
        "2 on a configuration error or an invalid query.",
    )
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database (default: the config's, or ~/.local/state/copydicom/state.db)")
    p.add_argument("--src", required=True, help="source Orthanc (name or URL)")
    p.add_argument("--index", required=True,
                   help="index to query: sqlite:///path, es+https://..., splunk+https://... or a config name")
    p.add_argument("--hec", help="CopyDICOM form: the Splunk HTTP Event Collector; with it (or when invoked as "
                   "conditional_replicate) a plain https:// --index is a Splunk management URL")
    p.add_argument("--query", required=True, help="the query, in the index's language")
    p.add_argument("--dest", action="append", default=[], required=True,
                   help="destination (name or URL); repeatable")
    p.add_argument("--workers", type=int, default=4, help="parallel transfers (default 4)")
    p.add_argument("--profile", help="de-identification profile (a config name, or 'default')")
    p.add_argument("--key-file", help="de-identification key (owner-only file); overrides the profile's key_file")
    p.add_argument("--route", help="route name in the ledger (default derived from the endpoints)")
    p.add_argument("--dry-run", action="store_true", help="decide what would be sent; send nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display (the summary line stays)")
    p.set_defaults(func=cmd_conditional_replicate)
