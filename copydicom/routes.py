"""The one assembly path: a validated route -> a runnable pipeline.

Every command (``replicate``, ``replicate-tags``, ``conditional-replicate``,
``import``, ``restore``, ``quarantine retry``, ``demo``), the Python API and
the daemon build their pipeline with :func:`build_route` from a
:class:`~copydicom.config.Route` that went through
:func:`~copydicom.config.validate_route`.  The one-shot commands make that
route with :func:`oneshot_route` from endpoint names or URLs.

Sources, destinations and indexes are built by the factories of their
registered endpoint types (:mod:`copydicom.registry`); nothing here names a
type.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copydicom import registry
from copydicom.config import AppConfig, Route, validate_route
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.model import Destination, Source
from copydicom.pipeline import Outcome, Pipeline


def default_state() -> Path:
    """``$XDG_STATE_HOME/copydicom/state.db`` (``~/.local/state/...``) for one-shot commands."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "copydicom" / "state.db"


@dataclass
class RouteRuntime:
    """A route's live objects; :meth:`close` releases them."""

    route: Route
    source: Source
    pipeline: Pipeline
    destinations: list[Destination]

    def close(self) -> None:
        self.pipeline.close()
        for dest in self.destinations:
            dest.close()
        self.source.close()


def _mask(value: str) -> str:
    from copydicom.logsetup import mask_secrets

    return mask_secrets(value)


def oneshot_route(
    config: AppConfig | None,
    *,
    src: str,
    dests: Sequence[str] = (),
    indexes: Sequence[str] = (),
    profile: str | None = None,
    workers: int = 4,
    state: str | Path | None = None,
    route_name: str | None = None,
    prefix: str = "oneshot",
    filters: Sequence[str] = (),
) -> tuple[Route, AppConfig]:
    """A route from endpoint names or URLs, validated like a configured one.

    Parameters
    ----------
    config
        The configuration, for endpoint and profile names (``None``: URLs only).
    src, dests, indexes
        Endpoint names (of ``config``) or URLs (``http://user:pass@host:8042``,
        ``s3://bucket/prefix/``, ``sqlite:///index.db``, ``file:///folder``...).
    profile
        A profile name of ``config``, or a built-in one: ``"default"``, ``"private_only"``,
        ``"hipaa_safe_harbor"``.
    state
        The state database (default: the config's, else :func:`default_state`).
    route_name
        The route's name in the ledger (default derived from the endpoints).
    prefix
        The first word of the derived name (``oneshot``, ``import``, ``restore``).
    filters
        ``--filter`` expressions (:func:`copydicom.stages.filters.parse_cli_filters`).

    Returns
    -------
    tuple
        The route (trigger ``manual``) and a configuration holding just its endpoints and profiles.
    """
    from copydicom import app  # app re-exports this module's names: import it at call time

    endpoints: dict[str, Any] = {}
    types: dict[str, str] = {}

    def add(value: str, flag: str) -> str:
        try:
            type_name, cfg = app.resolve_endpoint(config, value)
        except ConfigError as exc:
            raise ConfigError(f"{flag} {_mask(value)}: {exc}") from None
        endpoints[cfg.name] = cfg
        types[cfg.name] = type_name
        return str(cfg.name)

    source = add(src, "--src")
    dest_names = [add(v, "--dest") for v in dests]
    index_names = [add(v, "--index") for v in indexes]
    if not dest_names and not index_names:
        raise ConfigError("give at least one --dest or --index")
    profiles = dict(config.profiles) if config is not None else {}
    if profile is not None and profile not in profiles:
        from copydicom.stages.deid import DeidProfile

        builtin = DeidProfile.named(profile)  # default, private_only, hipaa_safe_harbor
        if builtin is None:
            raise ConfigError(f"--profile {profile}: no such profile in the config "
                              "(built in: default, private_only, hipaa_safe_harbor)")
        profiles[profile] = builtin
    from copydicom.state import PostgresTarget, is_postgres

    # --state may name a PostgreSQL state (its password from libpq's PGPASSWORD or .pgpass): it was
    # taken for a file path, and a one-shot command wrote a SQLite file called "postgresql:".
    state_url = config.state_url if config is not None and not state else None
    if state and is_postgres(str(state)):
        state_url = state if isinstance(state, PostgresTarget) else PostgresTarget(str(state))
        state = None
    state_path = Path(state) if state else (config.state if config is not None else default_state())
    quarantine_dir = config.quarantine_dir if config is not None and not state else state_path.parent / "quarantine"
    name = route_name or f"{prefix}:{source}>{','.join(dest_names + index_names)}" + (f"|{profile}" if profile else "")
    body: dict[str, Any] = {
        "name": name, "source": source, "destinations": dest_names, "indexes": index_names,
        "trigger": "manual", "workers": workers,
    }
    if profile is not None:
        body["profile"] = profile
    route = validate_route(body, where="route", types=types, profiles=profiles, workers=workers)
    if filters:  # --filter 'Keyword=v1,v2' / 'Keyword!=v' (all must hold)
        from dataclasses import replace

        from copydicom.stages.filters import parse_cli_filters

        route = replace(route, filter=parse_cli_filters(filters))
    app_config = AppConfig(
        state=state_path,
        state_url=state_url,
        quarantine_dir=quarantine_dir,
        endpoints=endpoints,
        endpoint_types=types,
        profiles=profiles,
        routes=(route,),
        workers=workers,
    )
    return route, app_config


def fetched_check(data: bytes) -> None:
    """The structure check every route runs on what its source fetched, before anything parses it.

    Here, once for every route, rather than in each source's ``fetch``: a DICOMweb, S3 or DIMSE
    Q/R source forwarded a 100-deep nested instance from a non-Orthanc archive to an Orthanc
    destination, which crashed on it (Orthanc 1.10.1), and a new source cannot forget it here.
    About 30 microseconds per 0.5 MB instance (element headers only; see
    :mod:`copydicom.stages.structure`).

    Raises
    ------
    InvalidInstance
        Nested deeper than :data:`~copydicom.stages.structure.MAX_DEPTH`, truncated, malformed or
        not DICOM (PS3.5 7.1, 7.5, A.4): the pipeline quarantines the instance with its bytes.
    """
    from copydicom.stages.structure import check_structure

    check_structure(data)


def build_route(
    route: Route,
    config: AppConfig,
    ledger: Ledger,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    dry_run: bool = False,
    key_file: str | None = None,
    background_index: bool = False,
    source_options: Mapping[str, Any] | None = None,
) -> RouteRuntime:
    """Build the source, stages, destinations and pipeline of a validated route.

    Parameters
    ----------
    source_options
        Per-run settings for the source's factory (``studies`` for an S3 restore).
    """
    from copydicom import app  # app re-exports this module's names: import it at call time

    source_type = registry.get(config.endpoint_types[route.source])
    if source_type.source is None:
        raise ConfigError(f"route {route.name}: endpoint {route.source} (type {source_type.name}) is not a source")
    source_type.check_installed(where=route.source)
    profile = config.profiles.get(route.profile) if route.profile else None
    stages = app.make_stages(
        profile,
        state=config.store_location,
        index_route=route.name if route.indexes else None,
        dose=route.dose,
        key_file=key_file,
        index_source_ids=route.index_source_ids,
    )
    destinations: list[Destination] = []
    try:
        for d in route.destinations:
            destinations.append(
                app.make_destination(config.endpoint_types[d], config.endpoints[d], pool_size=route.workers + 2)
            )
        for i in route.indexes:
            destinations.append(
                app.make_index_destination(config.endpoints[i], state=config.store_location, background=background_index)
            )
        # Identities are read from the source's index (no download) when de-identification
        # changes them or a destination addresses objects by them (S3 keys).
        by_identity = profile is not None or any(
            registry.get(config.endpoint_types[d]).by_identity for d in route.destinations
        )
        options = {
            "wait_for": route.trigger.wait_for,
            "filter": route.filter,
            "trigger": {"qido": {"window": route.trigger.window_seconds}} if route.trigger.kind == "qido" else None,
            "index_only": not route.destinations,  # a DICOMweb source then reads headers only (/metadata)
            **(source_options or {}),
        }
        context = registry.BuildContext(
            pool_size=route.workers + 2, want_identity=by_identity, state=config.state, options=options
        )
        source = source_type.source(config.endpoints[route.source], context)
    except BaseException:
        for dest in destinations:
            dest.close()
        raise
    validate = None
    if len(destinations) > 1:
        # Several destinations must stay consistent: the route decides validity once, before the
        # first store (see copydicom.stages.validity); one destination decides for itself.
        from copydicom.stages.validity import check_readable

        validate = check_readable
    from copydicom.politeness import RateLimiter, TimeWindow
    from copydicom.stages.filter_attrs import describer_for

    pipeline = Pipeline(
        route.name,
        source,
        stages,
        destinations,
        ledger,
        quarantine_dir=config.quarantine_dir,
        workers=route.workers,
        on_outcome=on_outcome,
        dry_run=dry_run,
        validate=validate,
        check_fetched=fetched_check,
        on_changed="resend" if route.on_changed_instance == "resend" else "report",
        route_filter=route.filter,
        describe=describer_for(source, route.filter),
        rate_limiter=RateLimiter.parse(route.max_rate, where=f"routes.{route.name}.max_rate") if route.max_rate else None,
        window=TimeWindow.parse(route.window, where=f"routes.{route.name}.window") if route.window else None,
    )
    return RouteRuntime(route, source, pipeline, destinations)
