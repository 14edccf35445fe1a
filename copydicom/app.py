"""Assemble run-time objects (clients, stages, destinations, pipelines) from configuration.

The CLI and the daemon sit on top of this module; plugins never import it.
Endpoints may be names from the config or CopyDICOM-style URLs
(``http://user:pass@host:8042``, ``s3://bucket/prefix?...``).
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.config import AppConfig, Route, endpoint_class
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.model import Destination, Stage
from copydicom.pipeline import Outcome, Pipeline
from copydicom.sinks.orthanc import OrthancDestination
from copydicom.sources.orthanc import OrthancSource

log = logging.getLogger(__name__)

#: URL scheme -> endpoint type, for endpoints given on the command line.
URL_SCHEMES: dict[str, str] = {
    "http": "orthanc",
    "https": "orthanc",
    "s3": "s3",
    "sqlite": "sqlite",
    "es+http": "elasticsearch",
    "es+https": "elasticsearch",
    "splunk+http": "splunk",
    "splunk+https": "splunk",
    "dicomweb+http": "dicomweb",
    "dicomweb+https": "dicomweb",
}


def endpoint_from_url(url: str) -> tuple[str, Any]:
    """``(type, config)`` of an endpoint written as a URL."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme not in URL_SCHEMES:
        raise ConfigError(f"{url.split('://')[0]!r}: not a known endpoint URL scheme ({', '.join(URL_SCHEMES)})")
    type_name = URL_SCHEMES[scheme]
    if type_name == "orthanc":
        return type_name, OrthancConfig.from_url(url)
    return type_name, endpoint_class(type_name, where=scheme).from_url(url)


def resolve_endpoint(config: AppConfig | None, name_or_url: str) -> tuple[str, Any]:
    """An endpoint by config name, or parsed from a URL."""
    if config is not None and name_or_url in config.endpoints:
        return config.endpoint_types[name_or_url], config.endpoints[name_or_url]
    if "://" in name_or_url:
        return endpoint_from_url(name_or_url)
    known = ", ".join(config.endpoints) if config is not None else "none: no --config given"
    raise ConfigError(f"{name_or_url!r} is neither an endpoint name (known: {known}) nor a URL")


def make_destination(type_name: str, endpoint: Any, *, pool_size: int) -> Destination:
    """An image destination for an endpoint config."""
    if type_name == "orthanc":
        return OrthancDestination(endpoint, pool_size=pool_size)
    if type_name == "s3":
        module = importlib.import_module("copydicom.sinks.s3")
        destination: Destination = module.S3Destination(endpoint)
        return destination
    if type_name == "dicomweb":
        from copydicom.endpoints.dicomweb import make_destination as make_stow
        from copydicom.registry import BuildContext

        return make_stow(endpoint, BuildContext(pool_size=pool_size))
    raise ConfigError(f"endpoint {getattr(endpoint, 'name', '?')} of type {type_name} is not an image destination")


def make_stages(
    profile: Any | None,
    *,
    state: Path | None,
    index_route: str | None = None,
    dose: bool = True,
    key_file: str | None = None,
) -> list[Stage]:
    """The stages of a route, built once at start-up (keys are read and checked here).

    De-identification first (if a profile is given), so that everything after it,
    destinations and indexes alike, sees only the de-identified instance; then,
    for routes with indexes (``index_route`` is the route name written into the
    documents), dose extraction and the index documents.
    """
    stages: list[Stage] = []
    if profile is not None:
        from copydicom.stages.deid import DeidStage, MappingStore, load_key

        where = f"profiles.{profile.name}.key_file"
        path = key_file or profile.key_file or os.environ.get("COPYDICOM_DEID_KEY_FILE")
        if not path:
            raise ConfigError(f"{where}: required (the secret project key; or set COPYDICOM_DEID_KEY_FILE)")
        key = load_key(path, where="--key-file" if key_file else where)
        stages.append(DeidStage(profile, key, MappingStore(state) if state is not None else None))
    if index_route is not None:
        from copydicom.stages.index_docs import IndexDocumentsStage

        if dose:
            from copydicom.stages.dose import DoseStage

            stages.append(DoseStage())
        stages.append(IndexDocumentsStage(index_route, deidentified=profile is not None))
    return stages


def make_index_destination(endpoint: Any, *, state: Path, background: bool) -> Destination:
    """An index endpoint as a pipeline destination, behind the durable spool in the state database."""
    from copydicom.sinks import open_index
    from copydicom.sinks.index_destination import IndexDestination
    from copydicom.sinks.spool import Spool, SpooledIndex

    spooled = SpooledIndex(open_index(endpoint), Spool(state))
    if background:
        spooled.start()
    return IndexDestination(spooled)


@dataclass
class RouteRuntime:
    """A route's live objects; :meth:`close` releases them."""

    route: Route
    source: Any  # OrthancSource or a DICOMweb source (model.Source)
    pipeline: Pipeline
    destinations: list[Destination]

    def close(self) -> None:
        self.pipeline.close()
        for dest in self.destinations:
            dest.close()
        close = getattr(self.source, "close", None)
        if callable(close):
            close()
        else:
            self.source.client.close()


def build_route(
    route: Route,
    config: AppConfig,
    ledger: Ledger,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    dry_run: bool = False,
    key_file: str | None = None,
    background_index: bool = False,
) -> RouteRuntime:
    """Build the source, stages, destinations and pipeline of a configured route."""
    source_cfg = config.endpoints[route.source]
    source_type = config.endpoint_types[route.source]
    profile = config.profiles.get(route.profile) if route.profile else None
    stages = make_stages(
        profile,
        state=config.state,
        index_route=route.name if route.indexes else None,
        dose=route.dose,
        key_file=key_file,
    )
    destinations = [
        make_destination(config.endpoint_types[d], config.endpoints[d], pool_size=route.workers + 2)
        for d in route.destinations
    ]
    destinations += [
        make_index_destination(config.endpoints[i], state=config.state, background=background_index)
        for i in route.indexes
    ]
    # Identities are read from the source's index (no download) when de-identification
    # changes them or a destination addresses objects by them (S3 keys).
    by_identity = profile is not None or any(
        config.endpoint_types[d] in ("s3", "dicomweb") for d in route.destinations
    )
    describe = None
    source: Any
    if source_type == "dicomweb":
        from copydicom.endpoints.dicomweb import make_source
        from copydicom.registry import BuildContext

        if not route.destinations and source_cfg.mode != "metadata":
            source_cfg = source_cfg.model_copy(update={"mode": "metadata"})  # an index feed: no pixel download
        if source_cfg.spool_dir is None:  # series retrievals spool beside the state (not a tmpfs /tmp)
            config.state.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            source_cfg = source_cfg.model_copy(update={"spool_dir": str(config.state.parent)})
        options = {"filter": route.filter, "trigger": {"qido": {"window": route.trigger.window_seconds}}}
        source = make_source(source_cfg, BuildContext(pool_size=route.workers + 2, options=options))
    else:
        client = OrthancClient(source_cfg, pool_size=route.workers + 2, side="source")
        source = OrthancSource(client, want_identity=by_identity)
        if route.filter is not None:
            from copydicom.stages.filter_attrs import orthanc_describer

            describe = orthanc_describer(source, keywords=route.filter.keywords)
    rate_limiter = window = None
    if route.max_rate:
        from copydicom.politeness import RateLimiter

        rate_limiter = RateLimiter.parse(route.max_rate, where=f"route {route.name}: max_rate")
    if route.window:
        from copydicom.politeness import TimeWindow

        window = TimeWindow.parse(route.window, where=f"route {route.name}: window")
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
        route_filter=route.filter,
        describe=describe,
        rate_limiter=rate_limiter,
        window=window,
    )
    return RouteRuntime(route, source, pipeline, destinations)
