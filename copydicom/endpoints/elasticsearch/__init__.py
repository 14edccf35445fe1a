"""Elasticsearch tag and dose index (Lucene or query DSL queries): an index (documents of tags and dose) and the query side of conditional replication.

The sink module loads inside the factory; the config module is light.
"""

from __future__ import annotations

from copydicom.errors import classify_exception
from copydicom.model import IndexSink
from copydicom.registry import BuildContext, EndpointType
from copydicom.sinks.elasticsearch._config import ElasticsearchConfig


def _index(config: ElasticsearchConfig, ctx: BuildContext) -> IndexSink:
    from copydicom.sinks.elasticsearch._sink import ElasticsearchIndex

    return ElasticsearchIndex(config)


def probe(config: ElasticsearchConfig) -> None:
    """``GET /`` (cluster info) once, with the configured credentials and no retries (``check-config``)."""
    from copydicom.sinks.elasticsearch._sink import ElasticsearchIndex

    sink = ElasticsearchIndex(config)
    try:
        try:
            sink.client.options(max_retries=0, request_timeout=5).info()
        except Exception as exc:  # the one classifier maps client errors to the error tree
            mapped = classify_exception(exc, what=f"elasticsearch {config.name}: GET /", side="index")
            raise (exc if mapped is None else mapped) from None
    finally:
        sink.close()


ENDPOINT: EndpointType[ElasticsearchConfig] = EndpointType(
    name="elasticsearch",
    description="Elasticsearch tag and dose index (Lucene or query DSL queries)",
    schemes=("es+http", "es+https",),
    config=ElasticsearchConfig,
    index=_index,
    extra="elasticsearch",
    requires=("elasticsearch",),
    probe=probe,
)
