"""Assemble run-time objects (clients, stages, destinations, pipelines) from configuration.

The CLI and the daemon sit on top of this module; plugins never import it.
Endpoints may be names from the config or CopyDICOM-style URLs
(``http://user:pass@host:8042``, ``s3://bucket/prefix?...``).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

from copydicom import registry
from copydicom.config import AppConfig
from copydicom.errors import ConfigError
from copydicom.model import Destination, Stage

log = logging.getLogger(__name__)


def endpoint_from_url(url: str) -> tuple[str, Any]:
    """``(type, config)`` of an endpoint written as a URL (its scheme names a registered type)."""
    endpoint_type = registry.by_scheme(url)
    return endpoint_type.name, endpoint_type.from_url(url)


def resolve_endpoint(config: AppConfig | None, name_or_url: str) -> tuple[str, Any]:
    """An endpoint by config name, or parsed from a URL."""
    if config is not None and name_or_url in config.endpoints:
        return config.endpoint_types[name_or_url], config.endpoints[name_or_url]
    if "://" in name_or_url:
        return endpoint_from_url(name_or_url)
    known = ", ".join(config.endpoints) if config is not None else "none: no --config given"
    raise ConfigError(f"{name_or_url!r} is neither an endpoint name (known: {known}) nor a URL")


def make_destination(type_name: str, endpoint: Any, *, pool_size: int) -> Destination:
    """An image destination for an endpoint config (the registered type's factory)."""
    endpoint_type = registry.get(type_name)
    if endpoint_type.destination is None:
        raise ConfigError(
            f"endpoint {getattr(endpoint, 'name', '?')} of type {type_name} is not an image destination"
        )
    endpoint_type.check_installed(where=str(getattr(endpoint, "name", type_name)))
    return endpoint_type.destination(endpoint, registry.BuildContext(pool_size=pool_size))


def route_key(profile: Any, key_file: str | None = None) -> bytes:
    """Read and check the de-identification key of a profile (``--key-file`` wins).

    Raises
    ------
    ConfigError
        No key configured, or the key file is missing, not owner-only or too short.
    """
    from copydicom.stages.deid import load_key

    where = f"profiles.{profile.name}.key_file"
    path = key_file or profile.key_file or os.environ.get("COPYDICOM_DEID_KEY_FILE")
    if not path:
        raise ConfigError(f"{where}: required (the secret project key; or set COPYDICOM_DEID_KEY_FILE)")
    key: bytes = load_key(path, where="--key-file" if key_file else where)
    return key


def make_stages(
    profile: Any | None,
    *,
    state: Path | str | None,
    index_route: str | None = None,
    dose: bool = True,
    key_file: str | None = None,
    index_source_ids: bool = False,
) -> list[Stage]:
    """The stages of a route, built once at start-up (keys are read and checked here).

    De-identification first (if a profile is given), so that everything after it,
    destinations and indexes alike, sees only the de-identified instance; then,
    for routes with indexes (``index_route`` is the route name written into the
    documents), dose extraction and the index documents.
    """
    stages: list[Stage] = []
    if profile is not None:
        from copydicom.stages.deid import DeidStage, MappingStore

        key = route_key(profile, key_file)
        stages.append(DeidStage(profile, key, MappingStore(state) if state is not None else None))
    if index_route is not None:
        from copydicom.stages.index_docs import IndexDocumentsStage

        if dose:
            from copydicom.stages.dose import DoseStage

            stages.append(DoseStage())
        stages.append(
            IndexDocumentsStage(index_route, deidentified=profile is not None, source_ids=index_source_ids)
        )
    return stages


def make_index_destination(endpoint: Any, *, state: Path | str, background: bool) -> Destination:
    """An index endpoint as a pipeline destination, behind the durable spool in the state database."""
    from copydicom.sinks import open_index
    from copydicom.sinks.index_destination import IndexDestination
    from copydicom.sinks.spool import Spool, SpooledIndex

    spooled = SpooledIndex(open_index(endpoint), Spool(state))
    if background:
        spooled.start()
    return IndexDestination(spooled)


# The assembly path lives in copydicom.routes; re-exported here for existing callers.
from copydicom.routes import RouteRuntime, build_route  # noqa: E402

__all__ = [
    "RouteRuntime",
    "build_route",
    "endpoint_from_url",
    "make_destination",
    "make_index_destination",
    "make_stages",
    "resolve_endpoint",
    "route_key",
]
