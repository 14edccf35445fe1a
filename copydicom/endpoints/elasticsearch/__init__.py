"""Elasticsearch tag and dose index (Lucene or query DSL queries): an index (documents of tags and dose) and the query side of conditional replication.

The sink module loads inside the factory; the config module is light.
"""

from __future__ import annotations

from copydicom.model import IndexSink
from copydicom.registry import BuildContext, EndpointType
from copydicom.sinks.elasticsearch._config import ElasticsearchConfig


def _index(config: ElasticsearchConfig, ctx: BuildContext) -> IndexSink:
    from copydicom.sinks.elasticsearch._sink import ElasticsearchIndex

    return ElasticsearchIndex(config)


ENDPOINT: EndpointType[ElasticsearchConfig] = EndpointType(
    name="elasticsearch",
    description="Elasticsearch tag and dose index (Lucene or query DSL queries)",
    schemes=("es+http", "es+https",),
    config=ElasticsearchConfig,
    index=_index,
    extra="elasticsearch",
    requires=("elasticsearch",),
)
