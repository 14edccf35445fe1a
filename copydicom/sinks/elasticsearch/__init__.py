"""Elasticsearch index sink (official ``elasticsearch`` client, 8.x and 9.x)."""

from copydicom.sinks.elasticsearch._config import ElasticsearchConfig
from copydicom.sinks.elasticsearch._sink import ElasticsearchIndex, index_template

__all__ = ["ElasticsearchConfig", "ElasticsearchIndex", "index_template"]
