"""Index commands: ``search``, ``report dose`` and ``replicate-tags``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from copydicom.cli._args import add_index_timeout
from copydicom.config import AppConfig, load_config
from copydicom.errors import ConfigError

log = logging.getLogger(__name__)


def _config(args: argparse.Namespace) -> AppConfig | None:
    return load_config(args.config) if getattr(args, "config", None) else None


def _endpoints(config: AppConfig | None) -> dict[str, Any]:
    return dict(config.endpoints) if config is not None else {}


def cmd_search(args: argparse.Namespace) -> int:
    """Print every matching document (or row) as one JSON object per line."""
    from copydicom.sinks import open_index

    sink = open_index(args.index, endpoints=_endpoints(_config(args)))
    count = 0
    try:
        for row in sink.search(args.query):
            if args.limit is not None and count >= args.limit:
                break
            print(json.dumps(row, sort_keys=True, default=str, ensure_ascii=False))
            count += 1
    finally:
        sink.close()
    print(f"{count} result(s)", file=sys.stderr)
    return 0


def cmd_report_dose(args: argparse.Namespace) -> int:
    """Write the static HTML dose report of an embedded (SQLite) index."""
    from copydicom.sinks import index_config_from_url
    from copydicom.sinks.sqlite_index import SqliteIndexConfig
    from copydicom.sinks.sqlite_index._report import dose_report_html

    endpoints = _endpoints(_config(args))
    cfg = endpoints.get(args.index) or (index_config_from_url(args.index) if "://" in args.index else None)
    if cfg is None:
        raise ConfigError(f"--index {args.index!r}: neither a configured index name nor an index URL")
    if not isinstance(cfg, SqliteIndexConfig):
        raise ConfigError("report dose: renders the embedded (sqlite) index; for Elasticsearch and Splunk "
                          "import the dashboards under config/dashboards/")
    out = Path(args.out)
    out.write_text(dose_report_html(cfg.path), encoding="utf-8")
    print(f"wrote {out}")
    return 0


def cmd_replicate_tags(args: argparse.Namespace) -> int:
    """Index the tags (and dose) of every instance of a source Orthanc, once (CopyDICOM's ``replicate_tags``).

    This is an index-only route through the same pipeline as ``replicate``:
    parallel downloads, dedupe by the ledger and by what the index already
    received, quarantine, the same summary line and exit status.  Documents go
    through the durable spool; any the index could not take yet stay there
    for the next run or the daemon: the command waits up to ``--index-timeout`` for the spool to
    drain, then counts what is still pending as failed (exit 1).
    """
    from copydicom.cli._compat import COPYDICOM_NAMES, splunk_index_url
    from copydicom.cli.replicate_cmds import cmd_replicate

    args.dest = []
    args.index = [splunk_index_url(args.index, args.hec, copydicom_name=args.command in COPYDICOM_NAMES)]
    return cmd_replicate(args)


def _default_state() -> Path:
    from copydicom.cli.replicate_cmds import default_state

    return default_state()


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``search``, ``report`` and ``replicate-tags``."""
    p = subparsers.add_parser(
        "search", help="query an index (SQL SELECT for sqlite, Lucene/JSON DSL for Elasticsearch, SPL for Splunk)",
        description="Examples: copydicom search --index sqlite:///var/lib/copydicom/index.db "
        "\"SELECT modality, count(*) FROM series GROUP BY 1\"; copydicom search --index es Modality:SR; "
        "copydicom search --index splunk 'SeriesDescription=\"Dose Record\"'",
    )
    p.add_argument("--config", "-c", help="YAML configuration file (for index names)")
    p.add_argument("--index", required=True, help="index name from the configuration, or an index URL")
    p.add_argument("--limit", type=int, help="stop after this many results")
    p.add_argument("query", help="the query")
    p.set_defaults(func=cmd_search)

    p = subparsers.add_parser("report", help="reports from the embedded index")
    sub = p.add_subparsers(dest="report", metavar="REPORT")
    sub.required = True
    d = sub.add_parser("dose", help="static HTML: studies by modality by day; CT DLP/CTDIvol by protocol; DAP")
    d.add_argument("--config", "-c", help="YAML configuration file (for index names)")
    d.add_argument("--index", required=True, help="sqlite index name or sqlite:/// URL")
    d.add_argument("--out", required=True, help="HTML file to write")
    d.set_defaults(func=cmd_report_dose)

    p = subparsers.add_parser("replicate-tags", aliases=["replicate_tags"],
                              help="index the tags and dose of every instance of a source, once")
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database holding the index spool (default: the config's)")
    p.add_argument("--src", required=True, help="source (name or URL): an Orthanc, or a DICOMweb server "
                   "(dicomweb+http[s]://: read from QIDO-RS /metadata, no pixel download)")
    p.add_argument("--index", required=True, help="index name or URL (sqlite:///, es+https://, splunk+https://; "
                   "CopyDICOM's https://user:pass@host:8089 with --hec)")
    p.add_argument("--hec", help="CopyDICOM form: http(s)://Splunk:TOKEN@host:8088, the HTTP Event Collector "
                   "(makes a plain https:// --index a Splunk management URL)")
    p.add_argument("--route", help="route name stored in the documents (default derived from the endpoints)")
    p.add_argument("--workers", type=int, default=4, help="parallel downloads (default 4)")
    p.add_argument("--profile", help="index the de-identified tags under this profile (a config name or 'default')")
    p.add_argument("--key-file", help="de-identification key (owner-only file)")
    p.add_argument("--ids", nargs="*", help="Orthanc IDs or UIDs to index (default: all)")
    p.add_argument("--ids-file", help="file with one Orthanc ID or UID per line")
    from copydicom.cli.replicate_cmds import add_filter_options

    add_filter_options(p)
    p.add_argument("--dry-run", action="store_true", help="decide what would be indexed; index nothing")
    add_index_timeout(p)
    p.set_defaults(func=cmd_replicate_tags)

