"""Replication commands: ``replicate``, ``run``, ``check-config``, ``status``, ``quarantine``."""

from __future__ import annotations

import argparse
from collections import Counter
import json
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from copydicom import politeness, registry
from copydicom.cli._progress import Progress
from copydicom.cli._args import add_index_timeout
from copydicom.config import AppConfig, Route, load_config
from copydicom.errors import ConfigError, RetryableError
from copydicom.feedcheck import names_change, reset_reason
from copydicom.ledger import Ledger
from copydicom.logsetup import mask_secrets
from copydicom.model import ChangeFeedSource, CountableSource, FeedPosition, InstanceRef, SelectableSource, Source
from copydicom.pipeline import Outcome, Summary
from copydicom.routes import build_route, default_state, oneshot_route
from copydicom.selection import Selection
from copydicom.sources.orthanc import OrthancSource
from copydicom.state import FeedReset, display_source_id, mask_source_path, one_line


def make_progress(args: argparse.Namespace) -> Progress:
    """The progress display of a one-shot command (``--quiet``: none; a bar on a terminal, lines otherwise)."""
    return Progress("quiet" if getattr(args, "quiet", False) else "auto")


def listing_total(args: argparse.Namespace, source: Source) -> int | None:
    """How many instances a whole-source listing will yield, when the source can say so cheaply."""
    if getattr(args, "ids", None) or getattr(args, "ids_file", None) or not isinstance(source, CountableSource):
        return None
    try:
        return source.count()
    except (RetryableError, ConfigError):
        return None


def _load(args: argparse.Namespace) -> AppConfig | None:
    return load_config(args.config) if getattr(args, "config", None) else None


def _oneshot_route(
    args: argparse.Namespace, config: AppConfig | None
) -> tuple[Route, AppConfig]:
    """A route from ``--src``/``--dest``/``--index``/``--profile`` (names or URLs), validated like a configured one."""
    return oneshot_route(
        config,
        src=args.src,
        dests=list(args.dest or []),
        indexes=list(getattr(args, "index", None) or []),
        profile=getattr(args, "profile", None),
        workers=args.workers,
        state=args.state,
        route_name=getattr(args, "route", None),
        filters=list(getattr(args, "filter", None) or []),
    )


def _selection(source: Source, args: argparse.Namespace) -> tuple[Iterator[list[InstanceRef]], Selection | None]:
    """The batches to run, and the :class:`~copydicom.selection.Selection` when identifiers were named."""
    wanted: list[str] = list(args.ids or []) + list(getattr(args, "study", None) or [])
    if args.ids_file:
        wanted.extend(line.strip() for line in Path(args.ids_file).read_text().splitlines() if line.strip())
    if not wanted:
        return source.batches(), None
    if not isinstance(source, SelectableSource):
        raise ConfigError("--ids: this source cannot select instances by identifier")
    selection = Selection(wanted)
    return selection.batches(source), selection


def drain_indexes(destinations: Iterable[Any], timeout: float) -> int:
    """Wait up to ``timeout`` s for every index destination's spool to drain; return documents still pending.

    What is pending is counted as failed by the caller (exit 1); the documents stay in the spool of
    the state database and the next run (or the daemon) sends them.
    """
    from copydicom.sinks.index_destination import IndexDestination

    left = 0
    for dest in destinations:
        if isinstance(dest, IndexDestination):
            pending = dest.drain(timeout)
            if pending:
                print(f"index {dest.name}: {pending} document(s) not delivered within {timeout:g} s; "
                      "they are kept in the spool and the next run will send them", file=sys.stderr)
            left += pending
    return left


def _date(value: str) -> str:
    """A ``YYYY-MM-DD`` command-line date."""
    import datetime as dt

    try:
        dt.date.fromisoformat(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{value!r}: dates are written YYYY-MM-DD") from None
    return value


def cmd_replicate(args: argparse.Namespace) -> int:
    config = _load(args)
    route, app = _oneshot_route(args, config)
    ledger = Ledger(app.store_location)
    progress = make_progress(args)
    dates = {k: v for k in ("since", "until") if (v := getattr(args, k, None))}  # replicate-tags has neither
    runtime = build_route(route, app, ledger, on_outcome=progress, dry_run=args.dry_run, key_file=args.key_file,
                          source_options=dates)
    progress.set_total(listing_total(args, runtime.source))
    summary = Summary()
    selection: Selection | None = None
    try:
        batches, selection = _selection(runtime.source, args)
        runtime.pipeline.run(batches, summary)
        if not args.dry_run:
            summary.counts["failed"] += drain_indexes(runtime.destinations, args.index_timeout)
    except KeyboardInterrupt:
        runtime.pipeline.stop()
        print("interrupted: in-flight instances finished, state saved", file=sys.stderr)
    finally:
        progress.end()
        runtime.close()
        ledger.close()
    if summary.first_retryable:
        print(f"first failure: {summary.first_retryable}", file=sys.stderr)
    if selection is not None and selection.not_found:
        summary.not_found = len(selection.not_found)
        print(selection.report(runtime.source.name), file=sys.stderr)
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
    if args.schema and args.config:
        # It printed the schema and exited 0, ignoring the file: an operator could read that as "checked".
        raise ConfigError("check-config: --schema prints the JSON Schema and takes no configuration file; "
                          "check a file with 'copydicom check-config CONFIG'")
    if args.schema:
        from copydicom.schema import json_schema

        print(json.dumps(json_schema(), indent=2))
        return 0
    if not args.config:
        raise ConfigError("check-config: give a configuration file (or --schema)")
    config = load_config(args.config)
    print(
        f"{args.config}: OK: {len(config.endpoints)} endpoint(s), {len(config.profiles)} profile(s), "
        f"{len(config.routes)} route(s); state {config.store_location}"
    )
    if config.metrics_config is not None:
        m = config.metrics_config
        print(f"  metrics and health: http://{m.host}:{m.port}/metrics and /healthz")
    for route in config.routes:
        trigger = route.trigger
        when = (
            f"changes every {trigger.poll_seconds:g} s (wait for {trigger.wait_for})"
            if trigger.kind == "changes"
            else f"QIDO-RS every {trigger.poll_seconds:g} s over the last {trigger.window_seconds / 3600:g} h of StudyDate"
            if trigger.kind == "qido"
            else f"cron '{trigger.cron}'" if trigger.kind == "cron"
            else "driven by its source (receives pushes)" if trigger.kind == "driven" else "manual"
        )
        if route.filter is not None or route.window or route.max_rate:
            when += (f" | filter {'yes' if route.filter is not None else '-'}, window {route.window or '-'}, "
                     f"max_rate {route.max_rate or '-'}")
        print(
            f"  route {route.name}: {route.source} -> {', '.join(route.destinations) or '-'}"
            f" | index {', '.join(route.indexes) or '-'} | profile {route.profile or '-'} | {when}"
        )
    return _check_startup(config, offline=args.offline)


def _check_startup(config: AppConfig, *, offline: bool) -> int:
    """What ``run`` checks at start-up beyond the file: key files, then (unless offline) credentials.

    A missing, short or group/world-readable key is a ConfigError (exit 2), as are credentials an
    endpoint refuses; an endpoint that cannot be reached is reported and gives exit 1 (it may be a
    passing outage: the daemon retries).
    """
    from copydicom.app import route_key

    for route in config.routes:
        if route.profile is not None:
            route_key(config.profiles[route.profile])
    if offline:
        return 0
    used: list[str] = []
    for route in config.routes:
        names = [route.source, *route.destinations, *route.indexes]
        if route.trigger.index:
            names.append(route.trigger.index)
        used.extend(n for n in names if n not in used)
    unreachable = 0
    for name in used:
        endpoint_type = registry.get(config.endpoint_types[name])
        if endpoint_type.probe is None:
            continue
        try:
            note = endpoint_type.probe(config.endpoints[name])
        except ConfigError as exc:
            message = str(exc)
            raise ConfigError(message if message.startswith("endpoints.") else f"endpoints.{name}: {message}") from None
        except RetryableError as exc:
            print(f"  endpoint {name}: unreachable: {mask_secrets(str(exc))}")
            unreachable += 1
        else:
            shown = f"reachable, {mask_secrets(note)}" if note else "credentials accepted"
            print(f"  endpoint {name}: {shown}")
    return 1 if unreachable else 0


def cmd_run(args: argparse.Namespace) -> int:
    from copydicom.daemon import Daemon

    config = load_config(args.config)
    if config.log_json and not args.log_json:
        from copydicom.logsetup import configure_logging

        configure_logging(json_lines=True, verbose=max(1, args.verbose))
    role = getattr(args, "role", "all")
    if role == "planner":
        from copydicom.cluster.planner import run_planner

        return run_planner(config)
    if role == "worker":
        from copydicom.cluster.worker import run_worker

        return run_worker(config)
    return Daemon(config).run_forever()


def _source_feed(config: AppConfig, route: Route, position: FeedPosition | None) -> tuple[int | None, bool | None]:
    """The source's ``Last`` and whether the checkpoint's change still names its resource (``None``: unknown)."""
    endpoint_type = registry.get(config.endpoint_types[route.source])
    if endpoint_type.source is None or not endpoint_type.feeds:
        return None, None
    try:
        source = endpoint_type.source(config.endpoints[route.source], registry.BuildContext(pool_size=1))
    except (RetryableError, ConfigError):
        return None, None
    try:
        if not isinstance(source, ChangeFeedSource):
            return None, None
        last = source.last_change()
        names = source.names_change(position) if position is not None and last >= position.seq else None
        return last, names
    except (RetryableError, ConfigError):
        return None, None
    finally:
        source.close()


def _age(now: float, then: float | None) -> str | None:
    """An age written like the durations of the config (``45s``, ``12m``, ``5h``, ``3d``)."""
    if then is None:
        return None
    seconds = max(0, int(now - then))
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def cmd_status(args: argparse.Namespace) -> int:
    """Read-only: works while a daemon holds the route locks."""
    config = _load(args)
    state = _state_location(args, config)
    if isinstance(state, Path) and not state.exists():
        raise ConfigError(f"no state database at {state}")
    ledger = Ledger(state)
    now = time.time()
    try:
        counts = ledger.counts()
        per_destination = ledger.destination_counts()
        reasons = ledger.quarantine_reasons()
        resets = ledger.feed_resets()
        routes = {r.name: r for r in config.routes} if config else {}
        names = sorted(set(routes) | set(counts) | set(per_destination) | set(resets))
        reconciles = _last_reconciles(ledger)
        report: list[dict[str, Any]] = []
        for name in names:
            position = ledger.position(name)
            checkpoint = None if position is None else position.seq
            row: dict[str, Any] = {"route": name, "checkpoint": checkpoint}
            reset = resets.get(name)
            if name in routes and config is not None and routes[name].trigger.kind == "changes":
                last, same = _source_feed(config, routes[name], position)
                row["source_last"] = last
                reason = reset.reason if reset is not None else reset_reason(position, last, same)
                # Never a negative backlog: a source behind its checkpoint is a feed reset, shown as such.
                row["backlog"] = None if last is None or checkpoint is None or reason else last - checkpoint
                if reason and reset is None:
                    reset = FeedReset(name, now, checkpoint or 0, None, last, reason)
            row["feed_reset"] = None if reset is None else {
                "reason": reset.reason, "checkpoint": reset.checkpoint, "source_last": reset.source_last,
                "detected": reset.detected,
            }
            if name in routes and config is not None and routes[name].trigger.kind == "driven":
                row["receive"] = _driver_status(config, routes[name])
            window = routes[name].window if name in routes else None
            closed = politeness.closed_for(window)
            if window and closed is not None:  # outside its window: the daemon starts no batch for it
                row["waiting_for_window"] = {"window": window, "opens_in_seconds": round(closed)}
            row["counts"] = counts.get(name, {})
            dests = per_destination.get(name, {})
            row["images"] = {d: {k: v for k, v in c.items() if k != "kind"} for d, c in dests.items()
                             if c["kind"] == "image"}
            row["index_documents"] = {d: {k: v for k, v in c.items() if k != "kind"} for d, c in dests.items()
                                      if c["kind"] == "index"}
            row["quarantine_reasons"] = reasons.get(name, {})
            if name in reconciles:
                row["last_reconcile"] = reconciles[name]
            report.append(row)
        extra_providers = _status_extras(ledger)
        if config is not None and config.cluster is not None:
            from copydicom.cluster.status import cluster_status

            extra_providers["cluster"] = cluster_status(ledger.store, config.cluster, now=now)
        oldest = ledger.store.quarantine_oldest()
        extra_providers["quarantine_oldest_age"] = _age(now, oldest)
        rejected = ledger.store.spool_rejected_oldest()
        if rejected is not None:
            extra_providers["rejected_documents_oldest_age"] = _age(now, rejected)
        if args.json:
            text = json.dumps({"state": str(state), "routes": report, **extra_providers}, indent=2)
            print(mask_secrets(text))
            return 0
        for line in _status_lines(state, report, extra_providers):
            print(mask_secrets(line))
    finally:
        ledger.close()
    return 0


def _counts_text(c: dict[str, int]) -> str:
    return f"stored {c.get('stored', 0)}, already present {c.get('existing', 0)}"


def _driver_status(config: AppConfig, route: Route) -> dict[str, Any]:
    """What a driving source reports without running (a listener's spool depth and oldest entry)."""
    source_type = registry.get(config.endpoint_types[route.source])
    if source_type.source is None or not source_type.installed():
        return {}
    source = source_type.source(config.endpoints[route.source], registry.BuildContext())
    try:
        status = getattr(source, "status", None)
        return dict(status()) if callable(status) else {}
    finally:
        source.close()


def _status_lines(state: Any, report: list[dict[str, Any]], extras: dict[str, Any]) -> Iterator[str]:
    """The text of ``status`` (every line is passed through :func:`mask_secrets` by the caller)."""
    yield f"state: {state}"
    for row in report:
        yield f"route {row['route']}"
        line = f"  checkpoint: {row['checkpoint']}"
        if "source_last" in row:
            shown = "unreachable" if row["source_last"] is None else row["source_last"]
            backlog = row.get("backlog")
            line += f"   source Last: {shown}   backlog: {'-' if backlog is None else backlog}"
        yield line
        waiting = row.get("waiting_for_window")
        if waiting:
            yield "  " + politeness.waiting_text(waiting["window"], waiting["opens_in_seconds"])
        if row.get("feed_reset"):
            yield f"  FEED RESET: {row['feed_reset']['reason']}; checkpoint held, nothing sent from the feed"
        receive = row.get("receive")
        if receive:
            oldest = receive.get("spool_oldest_seconds")
            yield (f"  receive spool: {receive.get('spool_depth', 0)} waiting"
                   + ("" if oldest is None else f", oldest {oldest:.0f}s"))
        c = row["counts"]
        yield (
            f"  instances: stored: {c.get('stored', 0)}   already present: {c.get('existing', 0)}   "
            f"quarantined: {c.get('quarantined', 0)}"
        )
        if c.get("changed"):
            yield (f"  changed at the source since delivery, older copy kept (on_changed_instance: report): "
                   f"{c['changed']}")
        for dest, dc in sorted(row.get("images", {}).items()):
            yield f"    image destination {dest}: {_counts_text(dc)}"
        for sink, dc in sorted(row.get("index_documents", {}).items()):
            yield f"    index {sink} (instance documents): {_counts_text(dc)}"
        for code, n in sorted(row["quarantine_reasons"].items()):
            yield f"    quarantine {code}: {n}"
        if "last_reconcile" in row:
            r = row["last_reconcile"]
            when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(r["at"]))
            yield (f"  last reconcile: {when}{' (dry run)' if r['dry_run'] else ''}   missing={r['missing']} "
                   f"repaired={r['repaired']} extra={r['extra']} deleted={r['deleted']} "
                   f"mismatched={r['mismatched']} seconds={r['seconds']:.1f}")
    if extras.get("quarantine_oldest_age"):
        yield f"quarantine: oldest entry {extras['quarantine_oldest_age']} old"
    spool = extras.get("index_spool")
    if spool is not None:
        if spool:
            yield "index spool (documents waiting):"
            for sink, n in sorted(spool.items()):
                yield f"  {sink}: {n}"
        else:
            yield "index spool: empty"
    if extras.get("cluster"):
        from copydicom.cluster.status import status_lines

        yield from status_lines(extras["cluster"])
    for key, value in extras.items():
        if key not in ("index_spool", "quarantine_oldest_age", "cluster"):
            yield f"{key}: {value}"


def _last_reconciles(ledger: Ledger) -> dict[str, dict[str, Any]]:
    """``{route: last reconcile as a dict}`` (``copydicom reconcile`` and the daemon record them)."""
    from dataclasses import asdict

    from copydicom.reconcile._store import last_runs

    return {name: asdict(run) for name, run in last_runs(ledger).items()}


def _state_location(args: argparse.Namespace, config: AppConfig | None) -> Any:
    """``--state`` (a file or a ``postgresql://`` URL; its password from libpq's PGPASSWORD or .pgpass),
    else the configuration's state, else the default file."""
    from copydicom.state import PostgresTarget, is_postgres

    if args.state:
        return PostgresTarget(args.state) if is_postgres(args.state) else Path(args.state)
    return config.store_location if config else default_state()


def _status_extras(ledger: Ledger) -> dict[str, Any]:
    """More status sections contributed by other components (index spools...)."""
    from copydicom.sinks.spool import spool_sizes

    return {"index_spool": spool_sizes(ledger.store)}


def cmd_quarantine(args: argparse.Namespace) -> int:
    config = _load(args)
    state = _state_location(args, config)
    ledger = Ledger(state)
    try:
        entries = ledger.quarantined(args.route)
        if args.action == "list":
            # Source IDs that are file paths (folder import) are PHI: a digest unless --show-paths.
            show = bool(getattr(args, "show_paths", False))
            for e in entries:
                kept = (e.path or "-") if show else ("kept" if e.path else "-")
                reason = one_line(e.reason) if show else mask_source_path(one_line(e.reason), e.source_id)
                print(f"{e.route}\t{display_source_id(e.source_id, show_paths=show)}\t{e.code}\t{reason}\t{kept}")
            print(f"{len(entries)} quarantined")
            return 0
        if args.action == "purge":
            from copydicom.quarantine import purge_entries

            print(f"purged {purge_entries(ledger, entries)}")
            return 0
        return _retry(args, config, ledger, entries)
    finally:
        ledger.close()


def _retry(args: argparse.Namespace, config: AppConfig | None, ledger: Ledger, entries: Iterable[Any]) -> int:
    """Re-process quarantined instances through their route (with its indexes): see :mod:`copydicom.quarantine`."""
    from copydicom.quarantine import retry_entries

    entries = list(entries)
    routes: dict[str, Route] = {r.name: r for r in config.routes} if config is not None else {}
    app = config
    if args.src and (args.dest or args.index):
        base, app = _oneshot_route(args, config)
        routes = {
            e.route: Route(e.route, base.source, base.destinations, indexes=base.indexes, profile=base.profile,
                           workers=base.workers)
            for e in entries
        }
        app = replace(app, routes=tuple(routes.values()))
    if app is None:
        print("give --config with the entries' routes, or --src and --dest", file=sys.stderr)
        print(Summary(counts=Counter(failed=len(entries))).line())
        return 1
    summary, unknown = retry_entries(app, ledger, entries, routes, key_file=getattr(args, "key_file", None))
    for name in unknown:
        print(f"route {name}: give --config with this route, or --src and --dest", file=sys.stderr)
    print(summary.line())
    return 0 if summary.ok else 1


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", "-c", help="YAML configuration file")
    p.add_argument("--state", help="state database (default: the config's, or ~/.local/state/copydicom/state.db)")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the replication commands."""
    p = subparsers.add_parser(
        "replicate",
        help="copy every instance (or a selection) from a source to destinations, once",
        description="One-shot replication. Endpoints are config names or URLs like "
        "http://user:pass@127.0.0.1:8042 or s3://bucket/prefix/?endpoint_url=...",
    )
    _common(p)
    p.add_argument("--src", required=True,
                   help="source: a name or URL of any source type (http[s]:// Orthanc, s3://, file:///folder); "
                   "see copydicom endpoints")
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
    p.add_argument("--quiet", "-q", action="store_true", help="no progress display (the summary line stays)")
    add_index_timeout(p)
    p.add_argument("--since", type=_date, help="sources listed by study date (a DICOM node): first day, YYYY-MM-DD")
    p.add_argument("--until", type=_date, help="... last day, YYYY-MM-DD (default today)")
    p.set_defaults(func=cmd_replicate)

    p = subparsers.add_parser("run", help="run the daemon: every configured route on its schedule")
    p.add_argument("--config", "-c", required=True, help="YAML configuration file")
    p.add_argument("--role", choices=["all", "planner", "worker"], default="all",
                   help="all: one process does everything (default, no broker); planner: follow the change "
                        "feeds and publish batches (cluster: section; a standby waits for the lease); worker: "
                        "execute batches from the queue")
    p.set_defaults(func=cmd_run)

    p = subparsers.add_parser(
        "check-config",
        help="check a configuration as 'run' would at start-up (keys, key files, credentials); --schema prints its JSON Schema",
    )
    p.add_argument("config", nargs="?", help="YAML configuration file")
    p.add_argument("--schema", action="store_true",
                   help="print the configuration's JSON Schema and exit (alone: not with a CONFIG file)")
    p.add_argument("--offline", action="store_true",
                   help="do not contact the endpoints (systemd ExecStartPre: an outage must not block the start)")
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
    p.add_argument("--key-file", help="for retry of a de-identifying route: the key (owner-only file)")
    p.add_argument("--show-paths", action="store_true",
                   help="list: show source file paths and quarantine files (file names may be PHI)")
    p.set_defaults(func=cmd_quarantine)
