"""Typed configuration of the DIMSE endpoints (pydantic v2, see :mod:`copydicom.registry`).

Two endpoint types share this module:

``dimse_listener``
    copydicom as a C-STORE SCP (a push source): ``ae_title``, ``host``,
    ``port``, ``allowed_calling``, ``allowed_addresses``, ``spool``, limits
    and DICOM TLS (PS3.15 Annex B.1, "The Basic TLS Secure Transport
    Connection Profile").
``dimse``
    a remote DICOM node (C-STORE destination, C-FIND/C-GET/C-MOVE source),
    written on the command line as ``dicom://CALLED_AET@host:port?calling=COPYDICOM``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Literal
from urllib.parse import parse_qs, unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from typing_extensions import Self

from copydicom.errors import ConfigError
from copydicom.netaddr import is_loopback
from copydicom.registry import EndpointConfig

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_UNIT = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Seconds from ``30s``, ``5m``, ``2h`` (a bare number is seconds)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
    else:
        match = _DURATION.match(str(value))
        if not match:
            raise ValueError("must be a duration such as 30s, 5m or 2h")
        seconds = float(match.group(1)) * _UNIT[match.group(2)]
    if seconds <= 0:
        raise ValueError("must be a positive duration")
    return seconds


def check_ae_title(value: str) -> str:
    """An AE title: 1 to 16 characters of the default repertoire, no backslash (PS3.5 6.2, VR AE)."""
    title = value.strip()
    if not 1 <= len(title) <= 16 or "\\" in title or not title.isprintable() or not title.isascii():
        raise ValueError("must be an AE title: 1 to 16 printable ASCII characters, no backslash")
    return title


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ListenerTls(_Section):
    """DICOM TLS of the listener: its certificate and key; ``ca`` verifies client certificates.

    With ``ca`` given, a client certificate signed by it is checked when
    presented, and required when ``require_client_cert`` is true.
    """

    cert: Path
    key: Path
    ca: Path | None = None
    require_client_cert: bool = False

    @model_validator(mode="after")
    def _ca_for_clients(self) -> Self:
        if self.require_client_cert and self.ca is None:
            raise ValueError("require_client_cert needs ca (the authority that signs client certificates)")
        return self


class PeerTls(_Section):
    """DICOM TLS towards a peer: the authority that signs its certificate; our own for mutual TLS."""

    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None


class ListenerConfig(EndpointConfig):
    """A C-STORE receiver (``type: dimse_listener``).

    Attributes
    ----------
    ae_title
        Our AE title (the called AE title senders use).
    host, port
        Where to listen; ``host`` defaults to loopback. Any other address needs
        ``tls`` unless ``allow_plaintext`` is true.
    allowed_calling
        Calling AE titles accepted; any other is rejected with A-ASSOCIATE-RJ
        (rejected-permanent, service-user, "calling-AE-title-not-recognized",
        PS3.8 9.3.4). AE titles are labels, not authentication.
    allowed_addresses
        If given, the only client addresses or networks (``10.1.2.0/24``)
        accepted; other connections are closed before any association.
    spool
        Directory of received, not yet delivered instances (created 0700).
    fsync
        Flush each instance and the directory to disk before answering Success.
        Turn off only to measure what durability costs.
    max_pdu, max_associations, timeout
        Largest PDU we accept, concurrent associations (each on its own thread,
        so a stalled sender holds only its own), and how long an association
        may stay silent before it is aborted.
    batch
        Spool entries handed to the pipeline per batch.
    receiver
        ``process`` (default): the network side runs in a child process of its
        own, so receiving (pynetdicom, CPU-bound in Python) does not share the
        interpreter lock with the forwarding pipeline; the fsync'ed spool is the
        hand-off between them. ``thread``: both in one process.
    """

    ae_title: str = "COPYDICOM"
    host: str = "127.0.0.1"
    port: int = Field(default=11112, ge=1, le=65535)
    allowed_calling: tuple[str, ...] = Field(min_length=1)
    allowed_addresses: tuple[str, ...] | None = None
    spool: Path
    fsync: bool = True
    max_pdu: int = Field(default=131072, ge=0)
    max_associations: int = Field(default=10, ge=1)
    timeout: float = 60.0
    tls: ListenerTls | None = None
    allow_plaintext: bool = False
    batch: int = Field(default=100, ge=1, le=10000)
    receiver: Literal["process", "thread"] = "process"

    @field_validator("ae_title")
    @classmethod
    def _title(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("allowed_calling")
    @classmethod
    def _titles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return tuple(check_ae_title(v) for v in value)

    @field_validator("allowed_addresses")
    @classmethod
    def _networks(cls, value: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if value is not None:
            for item in value:
                try:
                    ipaddress.ip_network(item, strict=False)
                except ValueError:
                    raise ValueError(f"{item!r} is not an IP address or network") from None
        return value

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _closed_by_default(self) -> Self:
        if not is_loopback(self.host) and self.tls is None and not self.allow_plaintext:
            raise ValueError(
                f"host {self.host} is not loopback: give tls (cert, key) or set allow_plaintext: true "
                "(AE titles are not authentication; see the README)"
            )
        return self

    def allows_address(self, address: str) -> bool:
        """Whether a client address may connect (always, without ``allowed_addresses``)."""
        if self.allowed_addresses is None:
            return True
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in ipaddress.ip_network(n, strict=False) for n in self.allowed_addresses)

    @property
    def display_url(self) -> str:
        return f"dimse_listener {self.name} ({self.ae_title} on {self.host}:{self.port})"


class DimseConfig(EndpointConfig):
    """A remote DICOM node (``type: dimse``).

    Attributes
    ----------
    called_aet, host, port
        The peer's AE title and address.
    calling_aet
        Our AE title towards it (the peer must know it).
    dedupe
        ``ledger`` (default): what copydicom delivered before is not sent again;
        ``cfind``: also ask the peer with a C-FIND at IMAGE level by SOP
        Instance UID (PS3.4 C.4.1) before sending.
    timeout
        Association (ACSE), DIMSE and network timeouts.
    max_pdu
        Largest PDU we accept from the peer.
    retrieve
        As a source: ``get`` (C-GET, PS3.4 C.4.3) or ``move`` (C-MOVE to
        ``move_destination``, copydicom's own listener, which the peer must know).
    retrieve_level
        ``series`` (default): one C-GET/C-MOVE per series into a temporary spool
        on disk, instances handed on as they arrive; ``image``: one per instance.
    retrieve_spool, retrieve_spool_limit
        Parent folder of that temporary spool (the system's temporary folder by
        default) and the most bytes it holds at once (sub-operations beyond wait,
        then fail with 0xA702 and those instances are retrieved one by one).
    max_contexts
        Presentation contexts proposed per association (PS3.8 allows 128).
    tls
        DICOM TLS towards the peer (``ca`` verifies it; ``cert``/``key`` for mutual TLS).
    """

    called_aet: str
    host: str
    port: int = Field(ge=1, le=65535)
    calling_aet: str = "COPYDICOM"
    dedupe: Literal["ledger", "cfind"] = "ledger"
    timeout: float = 30.0
    max_pdu: int = Field(default=131072, ge=0)
    retrieve: Literal["get", "move"] = "get"
    retrieve_level: Literal["series", "image"] = "series"
    retrieve_spool: Path | None = None
    retrieve_spool_limit: int = Field(default=1 << 30, ge=1)
    move_destination: str | None = None
    move_port: int | None = Field(default=None, ge=1, le=65535)
    move_host: str = "127.0.0.1"
    max_contexts: int = Field(default=100, ge=2, le=128)
    tls: PeerTls | None = None

    @field_validator("called_aet", "calling_aet")
    @classmethod
    def _titles(cls, value: str) -> str:
        return check_ae_title(value)

    @field_validator("timeout", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @model_validator(mode="after")
    def _move_needs_destination(self) -> Self:
        if self.retrieve == "move" and (not self.move_destination or self.move_port is None):
            raise ValueError("retrieve: move needs move_destination and move_port (the AE title and port where "
                             "copydicom receives the C-MOVE sub-operations; the peer must know them)")
        if self.retrieve == "move" and not is_loopback(self.move_host):
            raise ValueError(f"move_host {self.move_host}: the C-MOVE receiver binds to loopback only")
        return self

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> Self:
        """``dicom://CALLED_AET@host:port?calling=COPYDICOM&dedupe=cfind&timeout=30s``."""
        parts = urlsplit(url)
        if parts.scheme.lower() != "dicom":
            raise ConfigError(f"{parts.scheme!r}: a DICOM node is written dicom://AET@host:port")
        if not parts.username or not parts.hostname:
            raise ConfigError("dicom:// URL: needs the called AE title and the host (dicom://AET@host:port)")
        try:
            port = parts.port or 104
        except ValueError:
            raise ConfigError("dicom:// URL: the port is not a number") from None
        body: dict[str, object] = {
            "type": "dimse",
            "called_aet": unquote(parts.username),
            "host": parts.hostname,
            "port": port,
        }
        names = {"calling": "calling_aet", "dedupe": "dedupe", "timeout": "timeout", "retrieve": "retrieve",
                 "retrieve_level": "retrieve_level",
                 "move_destination": "move_destination", "move_port": "move_port", "max_pdu": "max_pdu"}
        for key, values in parse_qs(parts.query, keep_blank_values=True).items():
            if key not in names:
                raise ConfigError(f"dicom:// URL: unknown parameter {key!r} (one of {', '.join(names)})")
            body[names[key]] = values[-1]
        label = name or f"{body['called_aet']}@{parts.hostname}:{port}"
        return cls.from_mapping(label, body, where=f"dicom://{label}")

    @property
    def display_url(self) -> str:
        return f"dicom://{self.called_aet}@{self.host}:{self.port}"
