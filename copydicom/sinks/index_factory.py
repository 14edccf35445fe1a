"""Index URLs and configs to index sinks, through the endpoint registry.

URL forms (README "Index sinks")::

    sqlite:///var/lib/copydicom/index.db
    es+https://user:pass@host:9200/dicom        (or es+http; ?ca_certs=/path&verify_certs=false)
    splunk+https://user:pass@host:8089?hec=https://host:8088&hec_token=...&index=dicom

Names are looked up among the ``endpoints`` of the configuration.  Which
schemes and config classes are indexes is read from :mod:`copydicom.registry`
(the types with the ``index`` role); nothing here names a type.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Protocol, runtime_checkable

from copydicom import registry
from copydicom.errors import ConfigError
from copydicom.model import IndexSink


@runtime_checkable
class SearchableIndex(IndexSink, Protocol):
    """An index sink that can also be searched (the query side of conditional replication)."""

    def search(self, query: str) -> Iterator[dict[str, Any]]: ...


def _index_types() -> str:
    return ", ".join(t.name for t in registry.with_role("index"))


def index_config_from_url(url: str, *, name: str | None = None) -> Any:
    """Parse an index URL into the index type's config."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else url.split(":", 1)[0].lower()
    schemes = [s for t in registry.with_role("index") for s in t.schemes]
    if scheme not in schemes:
        raise ConfigError(f"{scheme!r}: not an index URL scheme (one of {', '.join(schemes)})")
    return registry.by_scheme(url).from_url(url, name=name)


def open_index(target: Any, *, endpoints: Mapping[str, Any] | None = None) -> SearchableIndex:
    """Open an index sink from a URL, an endpoint name, or an index endpoint's config.

    Parameters
    ----------
    target
        ``"sqlite:///path.db"``, ``"es+https://..."``, ``"splunk+https://..."``, the name of an
        index endpoint in ``endpoints``, or the config of a registered index type.
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
    endpoint_type = registry.of_config(target)
    if endpoint_type is None or endpoint_type.index is None:
        raise ConfigError(f"{getattr(target, 'name', type(target).__name__)!r} is not an index endpoint "
                          f"({_index_types()})")
    endpoint_type.check_installed(where=str(getattr(target, "name", endpoint_type.name)))
    sink = endpoint_type.index(target, registry.BuildContext())
    if not isinstance(sink, SearchableIndex):
        raise ConfigError(f"index {sink.name}: cannot be searched")
    return sink
