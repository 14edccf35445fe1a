"""Replication commands: ``replicate``, ``run``, ``check-config``, ``status``, ``quarantine``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from copydicom.app import build_route, resolve_endpoint
from copydicom.clients.orthanc import OrthancClient
from copydicom.config import AppConfig, Route, load_config
from copydicom.errors import ConfigError, RetryableError
from copydicom.ledger import Ledger
from copydicom.logsetup import mask_secrets
from copydicom.model import InstanceRef
from copydicom.pipeline import Outcome, Summary
from copydicom.sources.orthanc import OrthancSource


def default_state() -> Path:
    """``$XDG_STATE_HOME/copydicom/state.db`` (``~/.local/state/...``) for one-shot commands."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "copydicom" / "state.db"


class Progress:
    """A one-line progress display on a terminal (stderr); silent otherwise."""

    def __init__(self, enabled: bool | None = None) -> None:
        self.enabled = sys.stderr.isatty() if enabled is None else enabled
        self.summary: Summary | None = None
        self._last = 0.0

    def __call__(self, outcome: Outcome) -> None:
        if not self.enabled or self.summary is None:
            return
        now = time.monotonic()
        if now - self._last < 0.2:
            return
        self._last = now
        c = self.summary.counts
        done = sum(c.values()) + 1
        rate = done / max(self.summary.seconds, 1e-6)
        sys.stderr.write(
            f"\r  {done} done ({c['stored']} sent, {c['existing']} present, "
            f"{c['quarantined']} quarantined, {c['failed']} failed) {rate:.0f}/s "
        )
        sys.stderr.flush()

    def end(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _load(args: argparse.Namespace) -> AppConfig | None:
    return load_config(args.config) if getattr(args, "config", None) else None


def _oneshot_route(
    args: argparse.Namespace, config: AppConfig | None
) -> tuple[Route, AppConfig]:
    """A route from ``--src``/``--dest``/``--profile`` (names or URLs)."""
    src_type, src_cfg = resolve_endpoint(config, args.src)
    if src_type not in ("orthanc", "dicomweb"):
        raise ConfigError("--src: must be an Orthanc server (http[s]://) or a DICOMweb server (dicomweb+http[s]://)")
    endpoints: dict[str, Any] = {src_cfg.name: src_cfg}
    types = {src_cfg.name: src_type}
    dest_names: list[str] = []
    for value in args.dest:
        d_type, d_cfg = resolve_endpoint(config, value)
        if d_type not in ("orthanc", "s3", "dicomweb"):
            raise ConfigError(f"--dest {mask_secrets(value)}: not an image destination (orthanc, dicomweb or s3)")
        if d_cfg.name == src_cfg.name:
            raise ConfigError("--dest: the destination is the source")
        endpoints[d_cfg.name] = d_cfg
        types[d_cfg.name] = d_type
        dest_names.append(d_cfg.name)
    index_names: list[str] = []
    for value in getattr(args, "index", None) or []:
        if config is not None and value in config.endpoints:
            i_type, i_cfg = config.endpoint_types[value], config.endpoints[value]
        else:
            from copydicom.sinks import index_config_from_url

            i_type, i_cfg = "index", index_config_from_url(value)
        if i_type not in ("sqlite", "elasticsearch", "splunk", "index"):
            raise ConfigError(f"--index {mask_secrets(value)}: not an index (sqlite, elasticsearch, splunk)")
        endpoints[i_cfg.name] = i_cfg
        types[i_cfg.name] = i_type
        index_names.append(i_cfg.name)
    if not dest_names and not index_names:
        raise ConfigError("give at least one --dest or --index")
    profiles = dict(config.profiles) if config is not None else {}
    profile = getattr(args, "profile", None)
    if profile is not None and profile not in profiles:
        if profile == "default":
            from copydicom.stages.deid import DeidProfile

            profiles["default"] = DeidProfile.default()
        else:
            raise ConfigError(f"--profile {profile}: no such profile in the config ('default' is built in)")
    state = Path(args.state) if args.state else (config.state if config is not None else default_state())
    quarantine_dir = config.quarantine_dir if config is not None and not args.state else state.parent / "quarantine"
    name = args.route or f"oneshot:{src_cfg.name}>{','.join(dest_names + index_names)}" + (f"|{profile}" if profile else "")
    route = Route(
        name=name,
        source=src_cfg.name,
        destinations=tuple(dest_names),
        indexes=tuple(index_names),
        profile=profile,
        workers=args.workers,
        filter=_cli_filter(args),
    )
    app = AppConfig(
        state=state,
        quarantine_dir=quarantine_dir,
        endpoints=endpoints,
        endpoint_types=types,
        profiles=profiles,
        routes=(route,),
        workers=args.workers,
    )
    return route, app


def _cli_filter(args: argparse.Namespace) -> Any:
    """``--filter 'Key=v1,v2'`` / ``'Key!=v'`` options, all of which must hold (None if none)."""
    from copydicom.stages.filters import parse_cli_filters

    return parse_cli_filters(getattr(args, "filter", None) or [])


def _selection(source: Any, args: argparse.Namespace) -> Iterator[list[InstanceRef]]:
    wanted: list[str] = list(args.ids or []) + list(getattr(args, "study", None) or [])
    if args.ids_file:
        wanted.extend(line.strip() for line in Path(args.ids_file).read_text().splitlines() if line.strip())
    if wanted:
        return source.selected(wanted)
    listing = getattr(source, "all_instances", None) or source.batches
    return listing()


def cmd_replicate(args: argparse.Namespace) -> int:
    config = _load(args)
    route, app = _oneshot_route(args, config)
    ledger = Ledger(app.state)
    progress = Progress()
    runtime = build_route(route, app, ledger, on_outcome=progress, dry_run=args.dry_run, key_file=args.key_file)
    summary = Summary()
    progress.summary = summary
    try:
        runtime.pipeline.run(_selection(runtime.source, args), summary)
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
    return 0 if summary.ok else 1


def add_filter_options(p: argparse.ArgumentParser) -> None:
    """``--filter`` and ``--study`` for one-shot commands."""
    p.add_argument("--filter", action="append", default=[], metavar="EXPR",
                   help="only instances matching Keyword=v1,v2 (globs, DICOM date ranges) or Keyword!=v; "
                   "repeatable (all must hold); '\\,' is a literal comma")
    p.add_argument("--study", action="append", default=[], metavar="UID",
                   help="only this study (Study Instance UID); repeatable")


def cmd_check_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    print(
        f"{args.config}: OK: {len(config.endpoints)} endpoint(s), {len(config.profiles)} profile(s), "
        f"{len(config.routes)} route(s); state {config.state}"
    )
    if config.metrics:
        from copydicom.observability import MetricsConfig

        m = MetricsConfig.from_mapping(config.metrics)
        print(f"  metrics and health: http://{m.host}:{m.port}/metrics and /healthz")
    for route in config.routes:
        trigger = route.trigger
        when = (
            f"changes every {trigger.poll_seconds:g} s (wait for {trigger.wait_for})"
            if trigger.kind == "changes"
            else f"QIDO-RS every {trigger.poll_seconds:g} s over the last {trigger.window_seconds / 3600:g} h of StudyDate"
            if trigger.kind == "qido"
            else f"cron '{trigger.cron}'" if trigger.kind == "cron" else "manual"
        )
        if route.filter is not None or route.window or route.max_rate:
            when += f" | filter {'yes' if route.filter is not None else '-'}, window {route.window or '-'}, " \
                    f"max_rate {route.max_rate or '-'}"
        print(
            f"  route {route.name}: {route.source} -> {', '.join(route.destinations) or '-'}"
            f" | index {', '.join(route.indexes) or '-'} | profile {route.profile or '-'} | {when}"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from copydicom.daemon import Daemon

    config = load_config(args.config)
    if config.log_json and not args.log_json:
        from copydicom.logsetup import configure_logging

        configure_logging(json_lines=True, verbose=max(1, args.verbose))
    return Daemon(config).run_forever()


def _source_last(config: AppConfig, route: Route) -> int | None:
    client = OrthancClient(config.endpoints[route.source], pool_size=1)
    try:
        return client.last_change()
    except (RetryableError, ConfigError):
        return None
    finally:
        client.close()


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    state = Path(args.state) if args.state else (config.state if config else default_state())
    if not state.exists():
        raise ConfigError(f"no state database at {state}")
    ledger = Ledger(state)
    try:
        counts = ledger.counts()
        reasons = ledger.quarantine_reasons()
        routes = {r.name: r for r in config.routes} if config else {}
        names = sorted(set(routes) | set(counts))
        report: list[dict[str, Any]] = []
        for name in names:
            checkpoint = ledger.checkpoint(name)
            row: dict[str, Any] = {"route": name, "checkpoint": checkpoint}
            if name in routes and config is not None and routes[name].trigger.kind == "changes":
                last = _source_last(config, routes[name])
                row["source_last"] = last
                row["backlog"] = None if last is None or checkpoint is None else last - checkpoint
            row["counts"] = counts.get(name, {})
            row["quarantine_reasons"] = reasons.get(name, {})
            report.append(row)
        extra_providers = _status_extras(ledger)
        if args.json:
            text = json.dumps({"state": str(state), "routes": report, **extra_providers}, indent=2)
            print(mask_secrets(text))
            return 0
        for line in _status_lines(state, report, extra_providers):
            print(mask_secrets(line))
    finally:
        ledger.close()
    return 0


def _status_lines(state: Path, report: list[dict[str, Any]], extras: dict[str, Any]) -> Iterator[str]:
    """The text of ``status`` (every line is passed through :func:`mask_secrets` by the caller)."""
    yield f"state: {state}"
    for row in report:
        yield f"route {row['route']}"
        line = f"  checkpoint: {row['checkpoint']}"
        if "source_last" in row:
            shown = "unreachable" if row["source_last"] is None else row["source_last"]
            line += f"   source Last: {shown}   backlog: {row.get('backlog')}"
        yield line
        c = row["counts"]
        yield (
            f"  stored: {c.get('stored', 0)}   already present: {c.get('existing', 0)}   "
            f"quarantined: {c.get('quarantined', 0)}"
        )
        for code, n in sorted(row["quarantine_reasons"].items()):
            yield f"    quarantine {code}: {n}"
    spool = extras.get("index_spool")
    if spool is not None:
        if spool:
            yield "index spool (documents waiting):"
            for sink, n in sorted(spool.items()):
                yield f"  {sink}: {n}"
        else:
            yield "index spool: empty"
    for key, value in extras.items():
        if key != "index_spool":
            yield f"{key}: {value}"


def _status_extras(ledger: Ledger) -> dict[str, Any]:
    """More status sections contributed by other components (index spools...)."""
    extras: dict[str, Any] = {}
    try:
        from copydicom.sinks.spool import spool_sizes  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return extras
    extras["index_spool"] = spool_sizes(ledger.connection)
    return extras


def cmd_quarantine(args: argparse.Namespace) -> int:
    config = _load(args)
    state = Path(args.state) if args.state else (config.state if config else default_state())
    ledger = Ledger(state)
    try:
        entries = ledger.quarantined(args.route)
        if args.action == "list":
            for e in entries:
                print(f"{e.route}\t{e.source_id}\t{e.code}\t{e.reason}\t{e.path or '-'}")
            print(f"{len(entries)} quarantined")
            return 0
        if args.action == "purge":
            for e in entries:
                if e.path:
                    Path(e.path).unlink(missing_ok=True)
                ledger.release(e.route, e.source_id)
            print(f"purged {len(entries)}")
            return 0
        return _retry(args, config, ledger, entries)
    finally:
        ledger.close()


def _retry(args: argparse.Namespace, config: AppConfig | None, ledger: Ledger, entries: Iterable[Any]) -> int:
    by_route: dict[str, list[Any]] = {}
    for e in entries:
        by_route.setdefault(e.route, []).append(e)
    summary = Summary()
    for route_name, items in by_route.items():
        if args.src and args.dest:
            route, app = _oneshot_route(args, config)
            route = Route(route_name, route.source, route.destinations, profile=route.profile, workers=route.workers)
        elif config is not None and route_name in {r.name for r in config.routes}:
            route = next(r for r in config.routes if r.name == route_name)
            app = config
        else:
            print(f"route {route_name}: give --config with this route, or --src and --dest", file=sys.stderr)
            summary.counts["failed"] += len(items)
            continue
        runtime = build_route(route, app, ledger)
        try:
            for e in items:
                ledger.release(e.route, e.source_id)
            refs = [[runtime.source.complete(InstanceRef(e.source_id))] for e in items]
            for outcome in runtime.pipeline.stream(refs):
                summary.add(outcome)
                if outcome.kind in ("stored", "existing"):
                    path = next((e.path for e in items if e.source_id == outcome.ref.source_id), None)
                    if path:
                        Path(path).unlink(missing_ok=True)
        finally:
            runtime.close()
    print(summary.line())
    return 0 if summary.ok else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database (default: the config's, or ~/.local/state/copydicom/state.db)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the replication commands."""
    p = subparsers.add_parser(
        "replicate",
        help="copy every instance (or a selection) from a source Orthanc to destinations, once",
        description="One-shot replication. Endpoints are config names or URLs like "
        "http://user:pass@127.0.0.1:8042 or s3://bucket/prefix/?endpoint_url=...",
    )
    _common(p)
    p.add_argument("--src", required=True,
                   help="source: an Orthanc (name or http[s]:// URL) or a DICOMweb server (dicomweb+http[s]://)")
    p.add_argument("--dest", action="append", default=[], help="destination (name or URL); repeatable")
    p.add_argument("--index", action="append", default=[],
                   help="also index tags and dose: sqlite:///path, es+https://..., splunk+https://... or a name")
    p.add_argument("--workers", type=int, default=4, help="parallel transfers (default 4)")
    p.add_argument("--profile", help="de-identification profile (a config name, or 'default')")
    p.add_argument("--key-file", help="de-identification key (owner-only file); overrides the profile's key_file")
    p.add_argument("--route", help="route name in the ledger (default derived from the endpoints)")
    p.add_argument("--ids", nargs="*", help="Orthanc IDs or Study/Series/SOP Instance UIDs to copy (default: all)")
    p.add_argument("--ids-file", help="file with one Orthanc ID or UID per line")
    add_filter_options(p)
    p.add_argument("--dry-run", action="store_true", help="decide what would be sent; send nothing")
    p.set_defaults(func=cmd_replicate)

    p = subparsers.add_parser("run", help="run the daemon: every configured route on its schedule")
    p.add_argument("--config", "-c", required=True, help="YAML configuration file")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser("check-config", help="validate a configuration file and summarise it")
    p.add_argument("config", help="YAML configuration file")
    p.set_defaults(func=cmd_check_config)

    p = subparsers.add_parser("status", help="per route: checkpoint, source Last, backlog, counts, quarantine")
    _common(p)
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_status)

    p = subparsers.add_parser("quarantine", help="list, retry or purge quarantined instances")
    p.add_argument("action", choices=["list", "retry", "purge"])
    _common(p)
    p.add_argument("--route", help="only this route")
    p.add_argument("--src", help="for retry of a one-shot route: the source")
    p.add_argument("--dest", action="append", default=[], help="for retry of a one-shot route: destination(s)")
    p.add_argument("--index", action="append", default=[], help="for retry of a one-shot route: index(es)")
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--profile")
    p.set_defaults(func=cmd_quarantine)
