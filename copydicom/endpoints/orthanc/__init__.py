"""Orthanc (REST API): a source with a change feed, and a destination.

URLs ``http[s]://[user:password@]host:port``; YAML ``{type: orthanc, url: ..., user: ..., password_file: ...}``.
The client, source and destination modules load inside the factories.
"""

from __future__ import annotations

from copydicom.clients.orthanc import OrthancConfig
from copydicom.model import Destination, Source
from copydicom.registry import BuildContext, EndpointType


def _source(config: OrthancConfig, ctx: BuildContext) -> Source:
    from copydicom.clients.orthanc import OrthancClient
    from copydicom.sources.orthanc import OrthancSource

    client = OrthancClient(config, pool_size=ctx.pool_size, side="source")
    return OrthancSource(
        client,
        want_identity=ctx.want_identity,
        wait_for=str(ctx.options.get("wait_for", "instance")),  # type: ignore[arg-type]
    )


def _destination(config: OrthancConfig, ctx: BuildContext) -> Destination:
    from copydicom.sinks.orthanc import OrthancDestination

    return OrthancDestination(config, pool_size=ctx.pool_size)


def probe(config: OrthancConfig) -> None:
    """``GET /system`` once, with short timeouts and no retries (health checks, ``check-config``)."""
    from copydicom.clients.orthanc import OrthancClient

    quick = config.model_copy(
        update={"retries": 0, "connect_timeout": min(config.connect_timeout, 2.0), "read_timeout": 5.0}
    )
    client = OrthancClient(quick, pool_size=1)
    try:
        client.system()
    finally:
        client.close()


ENDPOINT: EndpointType[OrthancConfig] = EndpointType(
    name="orthanc",
    description="Orthanc REST API: source (changes feed, listings, queries) and destination",
    schemes=("http", "https"),
    config=OrthancConfig,
    source=_source,
    destination=_destination,
    feeds=True,
    probe=probe,
)
