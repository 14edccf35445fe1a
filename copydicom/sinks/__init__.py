"""Destinations (images) and index sinks (documents).

Index sinks: :mod:`copydicom.sinks.sqlite_index` (embedded, the default),
:mod:`copydicom.sinks.elasticsearch`, :mod:`copydicom.sinks.splunk`; the durable
:mod:`copydicom.sinks.spool` in front of them; :func:`open_index` from a URL,
a configured name or a config, through the endpoint registry.
"""

from copydicom.sinks.index_factory import SearchableIndex, index_config_from_url, open_index

__all__ = ["SearchableIndex", "index_config_from_url", "open_index"]
