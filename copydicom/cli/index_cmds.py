"""Index commands: ``search``, ``report dose`` and ``replicate-tags``."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from copydicom.config import AppConfig, load_config
from copydicom.errors import ConfigError, CopyDicomError, SkippableError

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
    """Index the tags (and dose) of every instance of a source Orthanc, once.

    Instances already delivered to the index (per the spool's memory) are not downloaded again.
    """
    import io

    import pydicom

    from copydicom.app import resolve_endpoint
    from copydicom.clients.orthanc import OrthancClient
    from copydicom.model import orthanc_id
    from copydicom.sinks import open_index
    from copydicom.sinks.documents import dose_documents, instance_document
    from copydicom.sinks.spool import Spool, SpooledIndex
    from copydicom.stages.dose import extract_dose
    from copydicom.stages.flatten import flatten

    config = _config(args)
    src_type, src_cfg = resolve_endpoint(config, args.src)
    if src_type != "orthanc":
        raise ConfigError("--src: must be an Orthanc server (name or http[s]:// URL)")
    sink = open_index(args.index, endpoints=_endpoints(config))
    state = Path(args.state) if args.state else (config.state if config else _default_state())
    state.parent.mkdir(parents=True, exist_ok=True)
    spool = Spool(state)
    index = SpooledIndex(sink, spool, batch_size=args.batch)
    client = OrthancClient(src_cfg, pool_size=2, side="source")
    route = args.route or f"tags:{src_cfg.name}"
    indexed = skipped = failed = 0
    try:
        for series in client.iter_series():
            instance_ids = [str(i) for i in series.get("Instances", [])]
            done = index.already_indexed(instance_ids)
            skipped += len(done)
            docs: list[dict[str, Any]] = []
            for iid in instance_ids:
                if iid in done:
                    continue
                try:
                    ds = pydicom.dcmread(io.BytesIO(client.download(iid)), stop_before_pixels=True, force=True)
                    flat = flatten(ds, scheme="keyword")
                    ids = [str(ds.get(k, "") or "") for k in
                           ("PatientID", "StudyInstanceUID", "SeriesInstanceUID")]
                    orthanc = {"instance": iid, "series": str(series.get("ID") or orthanc_id(*ids)),
                               "study": str(series.get("ParentStudy") or orthanc_id(*ids[:2])),
                               "patient": orthanc_id(ids[0])}
                    docs.append(instance_document(flat, orthanc=orthanc, route=route, deidentified=False))
                    docs.extend(dose_documents(extract_dose(ds), orthanc=orthanc, route=route,
                                               deidentified=False, flat=flat))
                    indexed += 1
                except SkippableError as exc:
                    failed += 1
                    log.warning("instance %s not indexed: %s", iid, exc)
                except CopyDicomError:
                    raise  # source down, bad configuration: stop, the spool keeps what was read
                except Exception as exc:  # noqa: BLE001 - unreadable file: count it, never stop the run
                    failed += 1
                    log.warning("instance %s not indexed: %s", iid, type(exc).__name__)
            index.submit(docs)
            index.flush()
        result = index.flush()
    finally:
        client.close()
        index.close()
        spool.close()
    print(f"{indexed} instances indexed, {skipped} already indexed, {failed} failed, "
          f"{result.pending} documents waiting in the spool, {result.rejected} refused by the index")
    return 0 if failed == 0 and result.pending == 0 and result.rejected == 0 else 1


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

    p = subparsers.add_parser("replicate-tags", help="index the tags and dose of every instance of a source, once")
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database holding the index spool (default: the config's)")
    p.add_argument("--src", required=True, help="source Orthanc (name or URL)")
    p.add_argument("--index", required=True, help="index name or URL (sqlite:///, es+https://, splunk+https://)")
    p.add_argument("--route", help="route name stored in the documents (default tags:<source>)")
    p.add_argument("--batch", type=int, default=500, help="documents per index request (default 500)")
    p.set_defaults(func=cmd_replicate_tags)

