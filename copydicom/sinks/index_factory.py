"""Index URLs and configs to index sinks, in one place.

URL forms (README "Index sinks")::

    sqlite:///var/lib/copydicom/index.db
    es+https://user:pass@host:9200/dicom        (or es+http; ?ca_certs=/path&verify_certs=false)
    splunk+https://user:pass@host:8089?hec=https://host:8088&hec_token=...&index=dicom

Names are looked up among the ``endpoints`` of the configuration (types
``sqlite``, ``elasticsearch``, ``splunk``).  Credentials may come from the
environment (``COPYDICOM_ES_*``, ``COPYDICOM_SPLUNK_*``) instead of the URL.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping
from typing import Any, Protocol

from copydicom.errors import ConfigError
from copydicom.model import IndexSink

#: URL scheme -> (module, config class, sink class, pip extra)
INDEX_SCHEMES: dict[str, tuple[str, str, str, str | None]] = {
    "sqlite": ("copydicom.sinks.sqlite_index", "SqliteIndexConfig", "SqliteIndex", None),
    "es+http": ("copydicom.sinks.elasticsearch", "ElasticsearchConfig", "ElasticsearchIndex", "elasticsearch"),
    "es+https": ("copydicom.sinks.elasticsearch", "ElasticsearchConfig", "ElasticsearchIndex", "elasticsearch"),
    "splunk+http": ("copydicom.sinks.splunk", "SplunkConfig", "SplunkIndex", "splunk"),
    "splunk+https": ("copydicom.sinks.splunk", "SplunkConfig", "SplunkIndex", "splunk"),
}

#: config class name -> sink class name, for configs built from the YAML file
_SINK_OF_CONFIG = {cfg: (module, sink, extra) for module, cfg, sink, extra in INDEX_SCHEMES.values()}


class SearchableIndex(IndexSink, Protocol):
    """An index sink that can also be searched (every sink of this package)."""

    def search(self, query: str) -> Iterator[dict[str, Any]]: ...


def _module(module_name: str, extra: str | None) -> Any:
    try:
        return importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = f" (pip install 'copydicom[{extra}]')" if extra else ""
        raise ConfigError(f"this index needs the package {exc.name}{hint}") from None


def index_config_from_url(url: str, *, name: str | None = None) -> Any:
    """Parse an index URL into the sink's config dataclass."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.split(":", 1)[0].lower()
    if scheme not in INDEX_SCHEMES:
        raise ConfigError(f"{scheme!r}: not an index URL scheme (one of {', '.join(INDEX_SCHEMES)})")
    module_name, cfg_class, _sink, extra = INDEX_SCHEMES[scheme]
    return getattr(_module(module_name, extra), cfg_class).from_url(url, name=name)


def open_index(target: Any, *, endpoints: Mapping[str, Any] | None = None) -> SearchableIndex:
    """Open an index sink from a URL, an endpoint name, or a config dataclass.

    Parameters
    ----------
    target
        ``"sqlite:///path.db"``, ``"es+https://..."``, ``"splunk+https://..."``, the name of an
        index endpoint in ``endpoints``, or a ``SqliteIndexConfig`` / ``ElasticsearchConfig`` /
        ``SplunkConfig``.
    endpoints
        The configuration's endpoints (``AppConfig.endpoints``), for names.
    """
    if isinstance(target, str):
        if endpoints is not None and target in endpoints:
            return open_index(endpoints[target])
        if "://" not in target:
            known = ", ".join(sorted(endpoints)) if endpoints else "none (no configuration)"
            raise ConfigError(f"{target!r} is neither an index name (known: {known}) nor an index URL")
        target = index_config_from_url(target)
    cls_name = type(target).__name__
    if cls_name not in _SINK_OF_CONFIG:
        raise ConfigError(f"{getattr(target, 'name', cls_name)!r} is not an index endpoint "
                          "(sqlite, elasticsearch, splunk)")
    module_name, sink_class, extra = _SINK_OF_CONFIG[cls_name]
    sink: SearchableIndex = getattr(_module(module_name, extra), sink_class)(target)
    return sink
