"""S3 and S3-compatible object stores: a destination (keys from UIDs) and the source of ``restore``.

URLs ``s3://bucket/prefix/?endpoint_url=...&region=...`` (credentials from the boto3 chain);
needs the ``s3`` extra (boto3), imported only inside the factories.
"""

from __future__ import annotations

from copydicom.model import Destination, Source
from copydicom.registry import BuildContext, EndpointType
from copydicom.sinks.s3._config import S3Config


def _source(config: S3Config, ctx: BuildContext) -> Source:
    from copydicom.sources.s3 import S3Source

    studies = ctx.options.get("studies") or ()
    source = S3Source(config, studies=tuple(str(s) for s in studies))
    source.check()
    return source


def _destination(config: S3Config, ctx: BuildContext) -> Destination:
    from copydicom.sinks.s3._destination import S3Destination

    return S3Destination(config, callers=ctx.pool_size)


def probe(config: S3Config) -> None:
    """``HeadBucket`` with the configured credentials (``check-config``)."""
    from copydicom.sinks.s3._client import check_bucket, make_client

    check_bucket(make_client(config), config)


ENDPOINT: EndpointType[S3Config] = EndpointType(
    name="s3",
    description="S3 bucket: destination (objects keyed by UIDs) and restore source",
    schemes=("s3",),
    config=S3Config,
    source=_source,
    destination=_destination,
    by_identity=True,
    extra="s3",
    requires=("boto3",),
    probe=probe,
)
