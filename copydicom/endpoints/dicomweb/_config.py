"""Configuration of a DICOMweb endpoint (PS3.18): where, how to authenticate, how to move instances."""

from __future__ import annotations

from typing import ClassVar, Literal
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from pydantic import Field, ValidationError, model_validator
from typing_extensions import Self

from copydicom.errors import ConfigError
from copydicom.registry import EndpointConfig, config_error

SCHEMES = ("dicomweb+http", "dicomweb+https")


class DicomwebConfig(EndpointConfig):
    """One DICOMweb server (QIDO-RS, WADO-RS, STOW-RS under one base URL).

    Attributes
    ----------
    url
        Base URL of the service (``https://pacs.example.org/dicom-web``), without credentials.
    user, password
        HTTP basic authentication (``password`` from ``${ENV}`` or ``password_file``).
    token
        A bearer token instead (``token_file`` or ``${ENV}``); refused together with a password.
    ca_bundle
        CA bundle to verify the server's certificate against.
    insecure_skip_verify
        Turn TLS verification off (explicit; warned about at every start).
    transfer_syntax
        What WADO-RS asks for: ``"*"`` (default) is the instance as stored; without
        it PS3.18 8.7.3.5.2 lets the server transcode to Explicit VR Little Endian.
    retrieve
        ``series``: one WADO-RS request per series, parts spooled to a private temp
        file as they stream in (flat memory); ``instance``: one request per instance.
    page_size
        QIDO-RS ``limit`` per request (servers cap it: Azure at 200).
    stow_max_instances, stow_max_bytes
        Bounds of one STOW-RS request.
    stow_linger
        Seconds a STOW-RS batch waits for more workers' instances before it is sent.
    mode
        ``images`` (default) or ``metadata``: the source serves header-only files built
        from QIDO-RS ``/metadata`` (index routes only: no pixel download).
    spool_dir
        Where series retrievals are spooled (default: the system temp dir).
    """

    secret_keys: ClassVar[tuple[str, ...]] = ("password", "token")

    type: str = "dicomweb"
    url: str
    user: str | None = None
    password: str | None = Field(default=None, repr=False)
    token: str | None = Field(default=None, repr=False)
    ca_bundle: str | None = None
    insecure_skip_verify: bool = False
    connect_timeout: float = Field(default=5.0, gt=0)
    read_timeout: float = Field(default=120.0, gt=0)
    retries: int = Field(default=4, ge=0, le=20)
    transfer_syntax: str = "*"
    retrieve: Literal["series", "instance"] = "series"
    page_size: int = Field(default=200, ge=1, le=10000)
    stow_max_instances: int = Field(default=50, ge=1)
    stow_max_bytes: int = Field(default=64 << 20, ge=1024)
    stow_linger: float = Field(default=0.01, ge=0, le=5)
    mode: Literal["images", "metadata"] = "images"
    spool_dir: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("url: expected http[s]://host[:port]/path of the DICOMweb service")
        try:
            _ = parts.port  # urllib raises ValueError on a port out of range or not a number
        except ValueError:
            raise ValueError("url: the port must be a number from 1 to 65535") from None
        if parts.username or parts.password:
            raise ValueError("url: put credentials in user/password or token, not in the URL")
        if self.token and self.password:
            raise ValueError("give either a password (basic auth) or a token (bearer), not both")
        return self

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> Self:
        """Parse ``dicomweb+https://user:pass@host/dicom-web`` (``?mode=metadata&retrieve=instance`` optional)."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in SCHEMES or not parts.hostname:
            raise ConfigError(f"{scheme or url[:20]!r}: expected dicomweb+http[s]://[user:password@]host[:port]/path")
        netloc = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
        try:
            port = parts.port
        except ValueError:
            raise ConfigError("dicomweb URL: the port must be a number from 1 to 65535") from None
        if port:
            netloc += f":{port}"
        base = urlunsplit((scheme.split("+", 1)[1], netloc, parts.path.rstrip("/"), "", ""))
        body: dict[str, object] = {"url": base}
        if parts.username:
            body["user"] = unquote(parts.username)
        if parts.password:
            body["password"] = unquote(parts.password)
        known = {"mode", "retrieve", "transfer_syntax", "page_size", "ca_bundle"}
        for key, value in parse_qsl(parts.query):
            if key not in known:
                raise ConfigError(f"dicomweb URL: unknown option {key!r} (one of {', '.join(sorted(known))})")
            body[key] = value
        body["name"] = name or f"{netloc}{parts.path.rstrip('/')}"
        try:  # not from_mapping: credentials in a command-line URL are the documented form here
            return cls.model_validate(body)
        except ValidationError as exc:
            raise config_error(exc, where="dicomweb URL") from None

    @property
    def display_url(self) -> str:
        return f"dicomweb+{self.url}"
