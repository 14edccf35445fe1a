"""Splunk index: HEC writes, SPL search queries: an index (documents of tags and dose) and the query side of conditional replication.

The sink module loads inside the factory; the config module is light.
"""

from __future__ import annotations

from copydicom.model import IndexSink
from copydicom.registry import BuildContext, EndpointType
from copydicom.sinks.splunk._config import SplunkConfig


def _index(config: SplunkConfig, ctx: BuildContext) -> IndexSink:
    from copydicom.sinks.splunk._sink import SplunkIndex

    return SplunkIndex(config)


ENDPOINT: EndpointType[SplunkConfig] = EndpointType(
    name="splunk",
    description="Splunk index: HEC writes, SPL search queries",
    schemes=("splunk+http", "splunk+https",),
    config=SplunkConfig,
    index=_index,
    extra="splunk",
    requires=("splunklib",),
)
