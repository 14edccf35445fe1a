"""``copydicom restore`` (S3 back into Orthanc) and ``copydicom import`` (a folder of DICOM files).

Both drive the same :class:`~copydicom.pipeline.Pipeline` as ``replicate``:
ledger dedupe, destination dedupe (Orthanc answers ``AlreadyStored``, S3
``HEAD``), quarantine of unreadable files, progress on a terminal and the
same summary line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from copydicom.cli.replicate_cmds import make_progress
from copydicom.config import AppConfig, Route, load_config
from copydicom.ledger import Ledger
from copydicom.pipeline import Summary
from copydicom.routes import build_route, oneshot_route


def _load(args: argparse.Namespace) -> AppConfig | None:
    return load_config(args.config) if getattr(args, "config", None) else None


def _drive(
    route: Route,
    app: AppConfig,
    args: argparse.Namespace,
    *,
    source_options: Mapping[str, Any] | None = None,
    key_file: str | None = None,
) -> tuple[int, Any]:
    """Build the route through the one assembly path, run it once, print the summary line.

    Returns the exit status and the route's source (``import`` lists the files it skipped).
    """
    ledger = Ledger(app.store_location)
    progress = make_progress(args)
    summary = Summary()
    try:
        runtime = build_route(
            route, app, ledger, on_outcome=progress, dry_run=args.dry_run, key_file=key_file,
            source_options=source_options,
        )
    except BaseException:
        ledger.close()
        raise
    try:
        runtime.pipeline.run(runtime.source.batches(), summary)
    except KeyboardInterrupt:
        runtime.pipeline.stop()
        print("interrupted: in-flight instances finished, state saved", file=sys.stderr)
    finally:
        progress.end()
        runtime.close()
        ledger.close()
    if summary.first_retryable:
        print(f"first failure: {summary.first_retryable}", file=sys.stderr)
    print(summary.line(), flush=True)
    return (0 if summary.ok else 1), runtime.source


def cmd_restore(args: argparse.Namespace) -> int:
    config = _load(args)
    route, app = oneshot_route(
        config, src=args.source, dests=args.dest, workers=args.workers, state=args.state,
        route_name=args.route, prefix="restore",
    )
    status, _ = _drive(route, app, args, source_options={"studies": tuple(args.study or ())})
    return status


def cmd_import(args: argparse.Namespace) -> int:
    from copydicom.sources.folder import FolderSource

    config = _load(args)
    folder = Path(args.directory).resolve()
    route, app = oneshot_route(
        config, src=folder.as_uri(), dests=args.dest, profile=getattr(args, "profile", None),
        workers=args.workers, state=args.state, route_name=args.route, prefix="import",
    )
    status, source = _drive(route, app, args, key_file=getattr(args, "key_file", None))
    if isinstance(source, FolderSource) and source.skipped and not args.show_paths:
        print(f"skipped {len(source.skipped)} non-DICOM file(s) (--show-paths lists them)", file=sys.stderr)
    elif isinstance(source, FolderSource) and source.skipped:
        print(f"skipped {len(source.skipped)} non-DICOM file(s):", file=sys.stderr)
        for path in source.skipped[:50]:
            print(f"  {path}", file=sys.stderr)
        if len(source.skipped) > 50:
            print(f"  ... and {len(source.skipped) - 50} more", file=sys.stderr)
    return status


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database (default: the config's, or ~/.local/state/copydicom/state.db)")
    p.add_argument("--workers", type=int, default=4, help="parallel transfers (default 4)")
    p.add_argument("--route", help="route name in the ledger (default derived from the endpoints)")
    p.add_argument("--dry-run", action="store_true", help="decide what would be sent; send nothing")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display (the summary line stays)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``restore`` and ``import``."""
    p = subparsers.add_parser(
        "restore",
        help="stream objects from s3://bucket/prefix back into an Orthanc server",
        description="Restore DICOM objects from S3 (a URL like "
        "s3://bucket/prefix/?endpoint_url=http://127.0.0.1:8333&region=us-east-1, credentials from "
        "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, or a configured s3 endpoint) into Orthanc.",
    )
    p.add_argument("source", help="s3:// URL or s3 endpoint name")
    p.add_argument("--dest", required=True, action="append", help="destination Orthanc (name or URL); repeatable")
    p.add_argument("--study", action="append", help="only this Study Instance UID; repeatable")
    _common(p)
    p.set_defaults(func=cmd_restore)

    p = subparsers.add_parser(
        "import",
        help="send a folder of DICOM files (recursively) to destinations",
        description="Files with or without .dcm are recognised by the DICM preamble; DICOMDIR and "
        "non-DICOM files are skipped and listed.",
    )
    p.add_argument("directory", help="folder to read recursively")
    p.add_argument("--dest", required=True, action="append", help="destination (name or URL); repeatable")
    p.add_argument("--profile", help="de-identification profile (a config name, or 'default')")
    p.add_argument("--show-paths", action="store_true",
                   help="list the paths of skipped files (file names may be PHI: not shown by default)")
    _common(p)
    p.set_defaults(func=cmd_import)
