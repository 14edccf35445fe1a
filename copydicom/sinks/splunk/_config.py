"""Configuration of a Splunk index sink."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from typing import Any, ClassVar
from urllib.parse import parse_qs, unquote, urlparse

from pydantic import Field

from copydicom.errors import ConfigError
from copydicom.registry import EndpointConfig
from copydicom.secrets import expand_env, resolve_secret

_KEYS = {"type", "url", "username", "password", "password_file", "hec_url", "hec_token", "hec_token_file",
         "index", "sourcetype", "source", "host", "ack", "ack_timeout", "batch_size", "batch_bytes",
         "verify", "ca_certs", "timeout", "max_retries", "backoff", "page_size", "timezone"}

_FALSE = ("0", "false", "no", "off")


class SplunkConfig(EndpointConfig):
    """Where and how to index into Splunk.

    Attributes
    ----------
    url
        The management API (``https://host:8089``), used by ``splunklib`` for searches.
    hec_url, hec_token
        The HTTP Event Collector (``https://host:8088``) and its token. An endpoint only searched
        (the index of a conditional route, CopyDICOM's ``conditional_replicate --index``) may leave
        them out when ``url`` is given; writing to it is then a configuration error.
    index, sourcetype, source, host
        Event metadata; ``sourcetype`` is ``_json`` so Splunk extracts fields at search time.
    ack
        Use indexer acknowledgement (the token must have it enabled); ``ack_timeout`` seconds.
    timezone
        The zone of DICOM dates/times without offset (PS3.3 C.12.1.1.8), for event times.
    """

    secret_keys: ClassVar[tuple[str, ...]] = ("password", "hec_token")

    type: str = "splunk"
    name: str
    hec_url: str = ""
    hec_token: str = Field(default="", repr=False)
    index: str
    url: str | None = None
    username: str | None = None
    password: str | None = Field(default=None, repr=False)
    sourcetype: str = "_json"
    source: str = "copydicom"
    host: str = ""
    ack: bool = False
    ack_timeout: float = Field(default=60.0, gt=0)
    batch_size: int = Field(default=200, ge=1)
    batch_bytes: int = Field(default=800_000, ge=1)
    verify: bool = True
    ca_certs: str | None = None
    timeout: float = Field(default=30.0, gt=0)
    max_retries: int = Field(default=3, ge=0)
    backoff: float = Field(default=1.0, ge=0)
    page_size: int = Field(default=1000, ge=1)
    timezone: str = "UTC"

    def __repr__(self) -> str:  # never show secrets
        return f"SplunkConfig(name={self.name!r}, hec_url={self.hec_url!r}, index={self.index!r})"

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> SplunkConfig:
        """Read ``{type: splunk, url, username, password, hec_url, hec_token, index, ...}``."""
        unknown = set(data) - _KEYS
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}")
        hec_url = data.get("hec_url") or ""
        search_only = not hec_url and bool(data.get("url"))
        if not search_only and (not isinstance(hec_url, str) or not hec_url.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}.hec_url: the http(s):// URL of the HTTP Event Collector is required")
        token = resolve_secret(data, "hec_token", where=where) or ""
        if not token and not search_only:
            raise ConfigError(f"{where}.hec_token: required (or hec_token_file)")
        index = data.get("index")
        if not isinstance(index, str) or not index:
            raise ConfigError(f"{where}.index: required")
        url = data.get("url")
        if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
            raise ConfigError(f"{where}.url: the http(s):// URL of the management port (8089)")
        password = resolve_secret(data, "password", where=where)
        if url and (not data.get("username") or password is None):
            raise ConfigError(f"{where}.username/password: required to search through {url}")

        def flag(key: str, default: bool) -> bool:
            value = data.get(key, default)
            return value if isinstance(value, bool) else str(value).lower() not in _FALSE

        try:
            from zoneinfo import ZoneInfo

            ZoneInfo(str(data.get("timezone", "UTC")))
        except (KeyError, ValueError):  # ZoneInfoNotFoundError is a KeyError
            raise ConfigError(f"{where}.timezone: unknown time zone {data.get('timezone')!r}") from None
        try:
            return cls(
                name=name, hec_url=expand_env(str(hec_url), where=f"{where}.hec_url").rstrip("/"), hec_token=token,
                index=index, url=expand_env(url, where=f"{where}.url").rstrip("/") if url else None,
                username=str(data["username"]) if data.get("username") else None, password=password,
                sourcetype=str(data.get("sourcetype", "_json")), source=str(data.get("source", "copydicom")),
                host=str(data.get("host") or socket.gethostname()), ack=flag("ack", False),
                ack_timeout=float(data.get("ack_timeout", 60.0)), batch_size=int(data.get("batch_size", 200)),
                batch_bytes=int(data.get("batch_bytes", 800_000)), verify=flag("verify", True),
                ca_certs=str(data["ca_certs"]) if data.get("ca_certs") else None,
                timeout=float(data.get("timeout", 30.0)), max_retries=int(data.get("max_retries", 3)),
                backoff=float(data.get("backoff", 1.0)), page_size=int(data.get("page_size", 1000)),
                timezone=str(data.get("timezone", "UTC")),
            )
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> SplunkConfig:
        """Parse ``splunk+https://user:pass@host:8089?hec=https://host:8088&hec_token=...&index=dicom``.

        Missing secrets come from ``COPYDICOM_SPLUNK_PASSWORD`` and ``COPYDICOM_SPLUNK_HEC_TOKEN``.
        Other query parameters are the mapping keys (``ack=1``, ``ca_certs=``, ``verify=false``...).
        """
        parsed = urlparse(url)
        if parsed.scheme not in ("splunk+http", "splunk+https"):
            raise ConfigError("index URL: expected splunk+http:// or splunk+https://")
        if not parsed.hostname:
            raise ConfigError("index URL: a host is required (splunk+https://host:8089?...)")
        params = {k: v[-1] for k, v in parse_qs(parsed.query).items()}
        data: dict[str, Any] = {k: v for k, v in params.items() if k in _KEYS and k not in ("hec", "url")}
        data["hec_url"] = params.get("hec", "")
        data["url"] = f"{parsed.scheme[7:]}://{parsed.hostname}" + (f":{parsed.port}" if parsed.port else "")
        data.setdefault("index", "main")
        if parsed.username:
            data["username"] = unquote(parsed.username)
            if parsed.password is not None:
                data["password"] = unquote(parsed.password)
        if "password" not in data and os.environ.get("COPYDICOM_SPLUNK_PASSWORD"):
            data["password"] = "${COPYDICOM_SPLUNK_PASSWORD}"
        if "hec_token" not in data and os.environ.get("COPYDICOM_SPLUNK_HEC_TOKEN"):
            data["hec_token"] = "${COPYDICOM_SPLUNK_HEC_TOKEN}"
        if not parsed.username:
            data.pop("url")
        hec = urlparse(str(data["hec_url"]))
        where_to = f"{hec.hostname}:{hec.port or 8088}" if data["hec_url"] else f"{parsed.hostname}:{parsed.port or 8089}"
        default_name = f"splunk:{where_to}/{data['index']}"
        return cls.from_mapping(name or default_name, data, where="index URL")
