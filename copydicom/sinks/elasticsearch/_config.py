"""Configuration of an Elasticsearch index sink."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import Field

from copydicom.errors import ConfigError
from copydicom.registry import EndpointConfig
from copydicom.secrets import expand_env, resolve_secret

_KEYS = {"type", "url", "index", "username", "password", "password_file", "api_key", "api_key_file",
         "ca_certs", "verify_certs", "timeout", "max_retries", "chunk_size", "backoff", "page_size"}


class ElasticsearchConfig(EndpointConfig):
    """Where and how to index into Elasticsearch.

    Attributes
    ----------
    url
        ``http(s)://host:port`` of the cluster (no credentials in it).
    index
        The index name (the index template covers ``index`` and ``index-*``).
    username, password
        Basic auth; or ``api_key`` (the encoded ``id:key`` form Elasticsearch returns).
    ca_certs
        A CA bundle for TLS; ``verify_certs`` false only for lab set-ups.
    max_retries, backoff
        Retries on 429/502/503/504 (client and per bulk item) and the first back-off in seconds.
    """

    secret_keys: ClassVar[tuple[str, ...]] = ("password", "api_key")

    type: str = "elasticsearch"
    name: str
    url: str
    index: str
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    api_key: str | None = Field(default=None, repr=False)
    ca_certs: str | None = None
    verify_certs: bool = True
    timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    chunk_size: int = Field(default=500, ge=1)
    backoff: float = Field(default=1.0, ge=0)
    page_size: int = Field(default=1000, ge=1)

    def __repr__(self) -> str:  # never show secrets
        return f"ElasticsearchConfig(name={self.name!r}, url={self.url!r}, index={self.index!r})"

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> ElasticsearchConfig:
        """Read ``{type: elasticsearch, url, index, username, password|password_file|api_key...}``."""
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        url = data.get("url")
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: an http(s):// URL of the cluster is required")
        index = data.get("index")
        if not isinstance(index, str) or not index or index != index.lower() or index.startswith(("_", "-")):
            raise ConfigError(f"{where}.index: a lowercase index name is required")
        password = resolve_secret(data, "password", where=where)
        api_key = resolve_secret(data, "api_key", where=where)
        username = data.get("username")
        if password is not None and not username:
            raise ConfigError(f"{where}.username: required with a password")
        if api_key is not None and password is not None:
            raise ConfigError(f"{where}: give either api_key or username/password, not both")
        try:
            return cls(
                name=name, url=expand_env(url, where=f"{where}.url").rstrip("/"), index=index,
                username=str(username) if username else None, password=password, api_key=api_key,
                ca_certs=expand_env(str(data["ca_certs"]), where=f"{where}.ca_certs") if data.get("ca_certs") else None,
                verify_certs=bool(data.get("verify_certs", True)),
                timeout=float(data.get("timeout", 30.0)), max_retries=int(data.get("max_retries", 3)),
                chunk_size=int(data.get("chunk_size", 500)), backoff=float(data.get("backoff", 1.0)),
                page_size=int(data.get("page_size", 1000)),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> ElasticsearchConfig:
        """Parse ``es+https://user:pass@host:9200/index?ca_certs=/path&verify_certs=false``.

        Without credentials in the URL, ``COPYDICOM_ES_API_KEY`` or ``COPYDICOM_ES_USERNAME`` and
        ``COPYDICOM_ES_PASSWORD`` are read from the environment.
        """
        parsed = urlparse(url)
        if parsed.scheme not in ("es+http", "es+https"):
            raise ConfigError("index URL: expected es+http:// or es+https://")
        if not parsed.hostname:
            raise ConfigError("index URL: a host is required (es+https://host:9200/index)")
        index = parsed.path.strip("/")
        if not index or "/" in index:
            raise ConfigError("index URL: give exactly one index name as the path (es+https://host:9200/dicom)")
        params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        host = parsed.hostname if ":" not in parsed.hostname else f"[{parsed.hostname}]"
        base = f"{parsed.scheme[3:]}://{host}" + (f":{parsed.port}" if parsed.port else "")
        data: dict[str, Any] = {"url": base, "index": index}
        if parsed.username:
            data["username"] = unquote(parsed.username)
            data["password"] = unquote(parsed.password or "")
        elif os.environ.get("COPYDICOM_ES_API_KEY"):
            data["api_key"] = "${COPYDICOM_ES_API_KEY}"
        elif os.environ.get("COPYDICOM_ES_USERNAME"):
            data["username"] = os.environ["COPYDICOM_ES_USERNAME"]
            data["password"] = "${COPYDICOM_ES_PASSWORD}"
        for key in ("ca_certs", "timeout", "max_retries", "chunk_size", "backoff", "page_size"):
            if key in params:
                data[key] = params[key]
        if "verify_certs" in params:
            data["verify_certs"] = params["verify_certs"].lower() not in ("0", "false", "no")
        # a URL-made index is named after where it points, so two URLs never share a spool memory
        return cls.from_mapping(name or f"es:{parsed.hostname}:{parsed.port or 9200}/{index}", data,
                                where="index URL")
