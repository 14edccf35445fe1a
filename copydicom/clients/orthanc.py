"""A small Orthanc REST client: JSON over a pooled :class:`requests.Session`, files over keep-alive.

The control plane (listings, changes, look-ups) uses one ``requests.Session``
whose pool is sized to the worker count.  DICOM file bodies (download and
upload) go through :mod:`copydicom.clients._keepalive`, which spends a third
of the client CPU per instance (see that module for the measurement).

Every status code is mapped to the exception tree in one place
(:meth:`OrthancClient._check`, via :func:`copydicom.errors.classify_http_status`).
Transient failures (connection errors, timeouts, 425, 429, 5xx) are retried
here with the one retry policy (:mod:`copydicom.retry`: exponential backoff,
full jitter, ``Retry-After`` capped, interrupted by a stop request); when the
attempts are used up the caller gets a :class:`~copydicom.errors.RetryableError`.

Downloads of ``/instances/{id}/file`` send ``Accept-Encoding: identity``:
otherwise Orthanc deflates every file on the fly, which measured 6-7 times
slower on a 2-core machine.
"""

from __future__ import annotations

import http.client
import json
import logging
from collections.abc import Callable, Iterator, Mapping
from typing import Any, ClassVar, TypeVar
from urllib.parse import quote, unquote, urlsplit, urlunsplit

import requests
from pydantic import Field, StrictBool, ValidationError

from copydicom.clients._keepalive import KeepAlive, Reply
from copydicom.clients._session import endpoint_session
from copydicom.errors import (
    RETRYABLE,
    ConfigError,
    CopyDicomError,
    RetryableError,
    Side,
    classify_exception,
    classify_http_status,
)
from copydicom.registry import EndpointConfig, config_error
from copydicom.retry import Backoff, parse_retry_after
from copydicom.secrets import expand_env, resolve_secret

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_DICOM = {"Content-Type": "application/dicom"}
_IDENTITY = {"Accept-Encoding": "identity"}


class OrthancConfig(EndpointConfig):
    """Connection settings of one Orthanc endpoint (pydantic: ranges checked, unknown keys refused).

    Attributes
    ----------
    name
        The endpoint's name in the config (used in logs instead of the URL).
    url
        Base URL without credentials.
    user, password
        HTTP basic authentication (``password`` from ``${ENV}`` or ``password_file``).
    ca_bundle
        A CA bundle file to verify the server's certificate against.
    insecure_skip_verify
        Turns TLS verification off. Must be explicit; warned about at every start.
    connect_timeout, read_timeout
        Seconds (> 0); a timeout is a retryable error.
    retries
        Attempts after the first one for transient failures (>= 0).
    """

    secret_keys: ClassVar[tuple[str, ...]] = ("password",)

    type: str = "orthanc"
    url: str
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    ca_bundle: str | None = None
    insecure_skip_verify: StrictBool = False
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=120.0, gt=0)
    retries: int = Field(default=4, ge=0)
    backoff_base: float = Field(default=0.5, ge=0)
    backoff_max: float = Field(default=20.0, ge=0)

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> OrthancConfig:
        """Parse a CopyDICOM-style URL, ``http://user:password@host:8042``."""
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"{url!r} is not an Orthanc URL (expected http[s]://[user:password@]host:port)")
        try:
            port = parts.port
        except ValueError:  # urllib refuses ports outside 0-65535 with a bare ValueError
            port = -1
        if port is not None and not 1 <= port <= 65535:
            raise ConfigError("url: the port must be a number from 1 to 65535")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        if port:
            netloc += f":{port}"
        base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        user = unquote(parts.username) if parts.username else None
        password = unquote(parts.password) if parts.password else None
        return cls(name=name or netloc, url=base, user=user, password=password)

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> OrthancConfig:
        """Build from an ``endpoints:`` entry of the YAML config."""
        known = set(cls.model_fields) - {"name", "backoff_base", "backoff_max"} | {"password_file"}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} for an orthanc endpoint")
        if "url" not in data:
            raise ConfigError(f"{where}.url: required")
        try:
            base = cls.from_url(expand_env(str(data["url"]), where=f"{where}.url"), name=name)
        except ConfigError as exc:
            text = str(exc)
            raise ConfigError(f"{where}.{text}" if text.startswith("url: ") else f"{where}.url: {text}") from None
        if base.password:
            raise ConfigError(f"{where}.url: put the password in password or password_file, not in the URL")
        body = {k: v for k, v in data.items() if k not in ("url", "type")}
        if body.get("user") is None:
            body.pop("user", None)
        body["password"] = resolve_secret(data, "password", where=where)
        body.pop("password_file", None)
        if not body.get("ca_bundle"):
            body.pop("ca_bundle", None)
        try:
            return base.model_validate({**base.model_dump(), **body})
        except ValidationError as exc:
            raise config_error(exc, where=where) from None

    @property
    def display_url(self) -> str:
        """The URL safe to log or show (never credentials)."""
        return self.url


class OrthancClient:
    """REST client of one Orthanc server.

    Parameters
    ----------
    config
        Where and how to connect.
    pool_size
        Connections kept open; size it to the number of workers.
    side
        ``"source"`` or ``"destination"``: which retryable error to raise.
    """

    def __init__(self, config: OrthancConfig, *, pool_size: int = 8, side: str = "source") -> None:
        self.config = config
        self.name = config.name
        self._side: Side = "source" if side == "source" else "destination"
        self._retryable: type[RetryableError] = RETRYABLE[self._side]
        #: The retry policy of every request (tests replace it to record or skip the waits).
        self.backoff = Backoff(retries=config.retries, base=config.backoff_base, cap=config.backoff_max)
        self.session = endpoint_session(config, pool_size=pool_size)
        self._timeout = (config.connect_timeout, config.read_timeout)
        self._keepalive = KeepAlive(
            config.url,
            user=config.user,
            password=config.password,
            timeout=max(config.connect_timeout, config.read_timeout),
            ca_bundle=config.ca_bundle,
            insecure=config.insecure_skip_verify,
        )

    # -- transport ---------------------------------------------------------------------

    def _retrying(self, what: str, attempt_once: Callable[[], _T]) -> _T:
        """Run ``attempt_once`` with the one retry policy (:class:`copydicom.retry.Backoff`).

        ``attempt_once`` raises :class:`RetryableError` (or another
        :class:`~copydicom.errors.CopyDicomError`, which is not retried).
        Backoff is exponential with full jitter, or the server's ``Retry-After``
        (capped); a stop request (SIGTERM) ends the wait at once.
        """
        return self.backoff.call(attempt_once, what=what)

    def _check(self, what: str, status: int, body: str, retry_after: str | None) -> None:
        """The one place where this client maps an HTTP status to an error."""
        classified = classify_http_status(
            status, what=what, side=self._side, body=body, retry_after=parse_retry_after(retry_after)
        )
        if classified is not None:
            raise classified

    def _transport_error(self, exc: BaseException, what: str) -> CopyDicomError:
        """A connection error, timeout or TLS failure as the error tree says (one table, errors.py)."""
        mapped = classify_exception(exc, what=what, side=self._side)
        if mapped is None:
            raise exc
        return mapped

    def _request(
        self,
        method: str,
        path: str,
        *,
        ok404: bool = False,
        **kwargs: Any,
    ) -> requests.Response | None:
        """Control plane: one JSON request with retries; ``None`` for an allowed 404."""
        url = self.config.url + path
        what = f"{method} {path.split('?')[0]} on {self.name}"

        def once() -> requests.Response | None:
            try:
                reply = self.session.request(method, url, timeout=self._timeout, **kwargs)
            except requests.RequestException as exc:
                raise self._transport_error(exc, what) from None
            if reply.status_code == 404 and ok404:
                return None
            self._check(what, reply.status_code, reply.text if reply.status_code >= 400 else "",
                        reply.headers.get("Retry-After"))
            return reply

        return self._retrying(what, once)

    def _data(self, method: str, path: str, what: str, body: bytes | None, headers: dict[str, str]) -> Reply:
        """Data plane: one file request over the keep-alive transport, with retries."""

        def once() -> Reply:
            try:
                reply = self._keepalive.request(method, path, body, headers)
            except (OSError, http.client.HTTPException) as exc:
                raise self._transport_error(exc, what) from None
            if reply.content_length is not None and reply.content_length != len(reply.body):
                raise self._retryable(f"{what}: reply cut short")
            text = reply.body[:300].decode("utf-8", "replace") if reply.status >= 400 else ""
            self._check(what, reply.status, text, reply.retry_after)
            return reply

        return self._retrying(what, once)

    def get_json(self, path: str, *, ok404: bool = False, **params: Any) -> Any:
        """GET a JSON resource; ``None`` if ``ok404`` and it does not exist."""
        reply = self._request("GET", path, ok404=ok404, params=params or None)
        return None if reply is None else reply.json()

    # -- system ----------------------------------------------------------------------

    def system(self) -> dict[str, Any]:
        result: dict[str, Any] = self.get_json("/system")
        return result

    # -- changes -----------------------------------------------------------------------

    def changes(self, since: int, limit: int = 1000) -> dict[str, Any]:
        """One page of ``/changes``: ``since`` is exclusive; ``Done`` and ``Last`` tell the rest."""
        result: dict[str, Any] = self.get_json("/changes", since=since, limit=limit)
        return result

    def last_change(self) -> int:
        """The newest sequence number of the changes feed."""
        return int(self.get_json("/changes", last="")["Last"])

    # -- listings ----------------------------------------------------------------------

    def iter_series(self, page: int = 200) -> Iterator[dict[str, Any]]:
        """Every series (expanded), paged so memory stays constant for any archive size."""
        since = 0
        while True:
            batch = self.get_json("/series", expand="", since=since, limit=page)
            yield from batch
            if len(batch) < page:
                return
            since += len(batch)

    def series_instances(self, series_id: str) -> list[dict[str, Any]]:
        """Instances of one series (expanded: ID and MainDicomTags)."""
        result: list[dict[str, Any]] = self.get_json(f"/series/{series_id}/instances")
        return result

    def resource(self, level: str, orthanc_id: str) -> dict[str, Any] | None:
        """``/{level}/{id}`` as JSON, or ``None`` if it does not exist."""
        result: dict[str, Any] | None = self.get_json(f"/{level}/{orthanc_id}", ok404=True)
        return result

    def lookup(self, value: str) -> list[dict[str, Any]]:
        """``/tools/lookup``: resources whose DICOM identifier is ``value``."""
        reply = self._request("POST", "/tools/lookup", data=value.encode())
        assert reply is not None
        result: list[dict[str, Any]] = reply.json()
        return result

    # -- instances ---------------------------------------------------------------------

    def download(self, instance_id: str) -> bytes:
        """The DICOM file of one instance, uncompressed on the wire (``Accept-Encoding: identity``)."""
        reply = self._data("GET", f"/instances/{quote(instance_id)}/file", f"download of {instance_id} from {self.name}",
                           None, _IDENTITY)
        return reply.body

    def upload(self, data: bytes) -> dict[str, Any]:
        """POST one DICOM file; returns Orthanc's answer (``Status``: Success or AlreadyStored)."""
        reply = self._data("POST", "/instances", f"POST /instances on {self.name}", data, _DICOM)
        if reply.status == 409:
            return {"Status": "AlreadyStored"}
        result: dict[str, Any] = json.loads(reply.body)
        return result

    def has_instance(self, instance_id: str) -> bool:
        return self._request("GET", f"/instances/{instance_id}/metadata", ok404=True) is not None

    def instance_md5(self, instance_id: str) -> str | None:
        """MD5 (hex) of an instance's DICOM file as stored (``/attachments/dicom/md5``); ``None`` if unknown."""
        reply = self._request("GET", f"/instances/{quote(instance_id)}/attachments/dicom/md5", ok404=True)
        return None if reply is None else reply.text.strip().strip('"') or None

    def delete_instance(self, instance_id: str) -> bool:
        """``DELETE /instances/{id}``; ``False`` if it did not exist."""
        return self._request("DELETE", f"/instances/{quote(instance_id)}", ok404=True) is not None

    def series_instance_ids(self, series_id: str) -> set[str] | None:
        """IDs of the instances of a series, or ``None`` if the series does not exist."""
        series = self.resource("series", series_id)
        return None if series is None else set(series.get("Instances", []))

    def peer_store(self, peer: str, resources: list[str], *, synchronous: bool = True) -> dict[str, Any]:
        """Orthanc's own transfer, ``/peers/{peer}/store`` (benchmarks compare against it)."""
        body = {"Resources": resources, "Synchronous": synchronous}
        reply = self._request("POST", f"/peers/{peer}/store", json=body)
        assert reply is not None
        result: dict[str, Any] = reply.json()
        return result

    def close(self) -> None:
        self.session.close()
        self._keepalive.close()

