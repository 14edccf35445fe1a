"""``copydicom restore`` (S3 back into Orthanc) and ``copydicom import`` (a folder of DICOM files).

Both drive the same :class:`~copydicom.pipeline.Pipeline` as ``replicate``:
ledger dedupe, destination dedupe (Orthanc answers ``AlreadyStored``, S3
``HEAD``), quarantine of unreadable files, progress on a terminal and the
same summary line.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from copydicom.app import make_destination, make_stages, resolve_endpoint
from copydicom.cli.replicate_cmds import Progress, default_state
from copydicom.config import AppConfig, load_config
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.logsetup import mask_secrets
from copydicom.model import Destination, InstanceRef, Stage
from copydicom.pipeline import Fetcher, Pipeline, Summary


def _load(args: argparse.Namespace) -> AppConfig | None:
    return load_config(args.config) if getattr(args, "config", None) else None


def _state(args: argparse.Namespace, config: AppConfig | None) -> tuple[Path, Path]:
    state = Path(args.state) if args.state else (config.state if config is not None else default_state())
    quarantine = config.quarantine_dir if config is not None and not args.state else state.parent / "quarantine"
    return state, quarantine


def _destinations(
    args: argparse.Namespace, config: AppConfig | None, *, allowed: tuple[str, ...], workers: int
) -> list[Destination]:
    out: list[Destination] = []
    for value in args.dest:
        d_type, d_cfg = resolve_endpoint(config, value)
        if d_type not in allowed:
            raise ConfigError(f"--dest {mask_secrets(value)}: must be {' or '.join(allowed)}")
        out.append(make_destination(d_type, d_cfg, pool_size=workers + 2))
    return out


def _drive(
    route: str,
    source: Fetcher,
    batches: Iterable[list[InstanceRef]],
    stages: list[Stage],
    destinations: list[Destination],
    args: argparse.Namespace,
    config: AppConfig | None,
) -> int:
    state, quarantine = _state(args, config)
    ledger = Ledger(state)
    progress = Progress()
    summary = Summary()
    progress.summary = summary
    pipeline = Pipeline(
        route, source, stages, destinations, ledger, quarantine_dir=quarantine, workers=args.workers,
        on_outcome=progress, dry_run=args.dry_run,
    )
    try:
        pipeline.run(batches, summary)
    except KeyboardInterrupt:
        pipeline.stop()
        print("interrupted: in-flight instances finished, state saved", file=sys.stderr)
    finally:
        progress.end()
        pipeline.close()
        for dest in destinations:
            dest.close()
        ledger.close()
    if summary.first_retryable:
        print(f"first failure: {summary.first_retryable}", file=sys.stderr)
    print(summary.line(), flush=True)
    return 0 if summary.ok else 1


def cmd_restore(args: argparse.Namespace) -> int:
    from copydicom.sources.s3 import S3Source

    config = _load(args)
    src_type, src_cfg = resolve_endpoint(config, args.source)
    if src_type != "s3":
        raise ConfigError("SOURCE: must be an s3://bucket/prefix URL or the name of an s3 endpoint")
    destinations = _destinations(args, config, allowed=("orthanc",), workers=args.workers)
    source = S3Source(src_cfg, studies=args.study or ())
    try:
        source.check()
        route = args.route or f"restore:{src_cfg.name}>{','.join(d.name for d in destinations)}"
        return _drive(route, source, source.batches(), [], destinations, args, config)
    finally:
        source.close()


def _profile(args: argparse.Namespace, config: AppConfig | None) -> Any | None:
    name = getattr(args, "profile", None)
    if name is None:
        return None
    profiles = dict(config.profiles) if config is not None else {}
    if name in profiles:
        return profiles[name]
    from copydicom.stages.deid import DeidProfile

    builtin = DeidProfile.named(name)
    if builtin is not None:
        return builtin
    raise ConfigError(f"--profile {name}: no such profile in the config "
                      "(built in: default, private_only, hipaa_safe_harbor)")


def cmd_import(args: argparse.Namespace) -> int:
    from copydicom.sources.folder import FolderSource

    config = _load(args)
    source = FolderSource(Path(args.directory))
    destinations = _destinations(args, config, allowed=("orthanc", "s3"), workers=args.workers)
    state, _ = _state(args, config)
    stages = make_stages(_profile(args, config), state=state)
    route = args.route or f"import:{Path(args.directory).resolve()}>{','.join(d.name for d in destinations)}"
    status = _drive(route, source, source.batches(), stages, destinations, args, config)
    if source.skipped:
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
    _common(p)
    p.set_defaults(func=cmd_import)
