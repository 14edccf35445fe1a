"""Assemble run-time objects (clients, stages, destinations, pipelines) from configuration.

The CLI and the daemon sit on top of this module; plugins never import it.
Endpoints may be names from the config or CopyDICOM-style URLs
(``http://user:pass@host:8042``, ``s3://bucket/prefix?...``).
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.config import AppConfig, Route, endpoint_class
from copydicom.errors import ConfigError
from copydicom.ledger import Ledger
from copydicom.model import Destination, Stage
from copydicom.pipeline import DocumentSpool, Outcome, Pipeline
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
    raise ConfigError(f"endpoint {getattr(endpoint, 'name', '?')} of type {type_name} is not an image destination")


def make_stages(profile: Any | None, *, state: Path | None, dose: bool = True) -> list[Stage]:
    """The stages of a route: de-identification (if a profile is given), then dose extraction."""
    stages: list[Stage] = []
    if profile is not None:
        deid = importlib.import_module("copydicom.stages.deid")
        stages.append(deid.DeidStage.from_profile(profile, state=state))
    return stages


@dataclass
class RouteRuntime:
    """A route's live objects; :meth:`close` releases them."""

    route: Route
    source: OrthancSource
    pipeline: Pipeline
    destinations: list[Destination]
    indexes: list[DocumentSpool] = field(default_factory=list)

    def close(self) -> None:
        self.pipeline.close()
        for dest in self.destinations:
            dest.close()
        self.source.client.close()


def build_route(
    route: Route,
    config: AppConfig,
    ledger: Ledger,
    *,
    on_outcome: Callable[[Outcome], None] | None = None,
    dry_run: bool = False,
) -> RouteRuntime:
    """Build the source, stages, destinations and pipeline of a configured route."""
    source_cfg: OrthancConfig = config.endpoints[route.source]
    client = OrthancClient(source_cfg, pool_size=route.workers + 2, side="source")
    profile = config.profiles.get(route.profile) if route.profile else None
    stages = make_stages(profile, state=config.state, dose=route.dose)
    destinations = [
        make_destination(config.endpoint_types[d], config.endpoints[d], pool_size=route.workers + 2)
        for d in route.destinations
    ]
    source = OrthancSource(client, want_identity=profile is not None)
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
    )
    return RouteRuntime(route, source, pipeline, destinations)
