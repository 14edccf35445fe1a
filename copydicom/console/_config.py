"""The ``console:`` section of the configuration (off unless present)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from copydicom.netaddr import is_loopback


def _host_port(listen: str) -> tuple[str, int]:
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit():
        raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8300")
    number = int(port)
    if not 1 <= number <= 65535:
        raise ValueError("port must be 1-65535")
    return host.strip("[]") or "127.0.0.1", number


class ConsoleTLS(BaseModel):
    """A certificate and key (PEM) to serve HTTPS."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    cert: Path
    key: Path


class UploadLimits(BaseModel):
    """Limits of one upload."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    max_upload_mb: int = Field(default=2048, ge=1)
    max_files: int = Field(default=20_000, ge=1)
    max_expanded_mb: int = Field(default=4096, ge=1)
    max_zip_ratio: float = Field(default=200.0, gt=1)


class ConsoleConfig(BaseModel):
    """``console: {listen: "127.0.0.1:8300", users_file: PATH, ...}``.

    Attributes
    ----------
    listen
        ``HOST:PORT``. Anything but loopback requires ``tls``.
    users_file
        Users and their argon2 hashes (``copydicom console add-user``), owner-only.
    auth
        ``users`` (login form and HTTP basic auth against ``users_file``) or
        ``proxy_header``: a reverse proxy that authenticated the user (SSO) passes
        its name in ``proxy_header``; accepted only from ``trusted_proxies``, and
        the name must still be in ``users_file`` (which gives its role).
    session_secret_file
        A secret to sign session cookies with; without it a random one is made at
        each start (everyone logs in again after a restart).
    session_hours
        A session's lifetime.
    audit_log
        JSON lines of PHI reveals and of retries, purges and uploads.
    folder_roots
        Server-side folders an operator may name as an upload source (nothing else is readable).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)
    listen: str = "127.0.0.1:8300"
    users_file: Path
    tls: ConsoleTLS | None = None
    auth: Literal["users", "proxy_header"] = "users"
    proxy_header: str = "X-Remote-User"
    trusted_proxies: tuple[str, ...] = ("127.0.0.1", "::1")
    session_secret_file: Path | None = None
    session_hours: float = Field(default=8.0, gt=0, le=24 * 7)
    audit_log: Path | None = None
    folder_roots: tuple[Path, ...] = ()
    upload: UploadLimits = Field(default_factory=UploadLimits)
    login_attempts: int = Field(default=5, ge=1)

    @field_validator("listen")
    @classmethod
    def _listen(cls, value: str) -> str:
        _host_port(value)
        return value

    @model_validator(mode="after")
    def _closed_by_default(self) -> ConsoleConfig:
        host, _ = _host_port(self.listen)
        if self.tls is None and not is_loopback(host):
            raise ValueError(f"listen {self.listen}: plain HTTP is allowed only on loopback; configure tls")
        return self

    @property
    def host(self) -> str:
        return _host_port(self.listen)[0]

    @property
    def port(self) -> int:
        return _host_port(self.listen)[1]
