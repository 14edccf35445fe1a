"""The one registry of endpoint types: which systems copydicom can read from and write to.

Every endpoint type (Orthanc, S3, DICOMweb, DIMSE, the indexes...) is one package
under :mod:`copydicom.endpoints` that exports one :class:`EndpointType`
descriptor, listed once in :data:`BUILTIN`.  Configuration, URL parsing, the
CLI, the index factory and observability read only this registry, in the
manner of rclone's ``fs.Register`` and dlt's destination factories: adding an
endpoint type is one package plus one line here (or one :func:`register` call
for a plug-in or a test).

A descriptor is light: it imports its endpoint's heavy dependencies (boto3,
pynetdicom, elasticsearch...) only inside its factories, so ``import
copydicom`` stays fast and an endpoint whose extra is missing is reported as
``endpoint type s3 needs boto3 (pip install 'copydicom[s3]')`` only when used.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar, Generic, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

from copydicom.errors import ConfigError

if TYPE_CHECKING:
    from copydicom.model import Destination, IndexSink, Source

Role = Literal["source", "destination", "index"]
ROLES: tuple[Role, ...] = ("source", "destination", "index")


def _describe(error: Mapping[str, Any]) -> str:
    """``routes[0].workers`` from a pydantic error location."""
    out = ""
    for part in error.get("loc", ()):
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def config_error(exc: ValidationError, *, where: str) -> ConfigError:
    """One :class:`ConfigError` naming every failing key of a pydantic validation error."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = _describe(err)
        key = f"{where}.{loc}" if where and loc else (where or loc or "configuration")
        message = str(err.get("msg", "invalid"))
        if err.get("type") == "extra_forbidden":
            message = "unknown key"
        lines.append(f"{key}: {message}")
    return ConfigError("; ".join(lines))


#: An endpoint's config class: an :class:`EndpointConfig` (pydantic), or, for the types not yet
#: converted (s3, elasticsearch, splunk), a frozen dataclass with the same ``from_mapping``/``from_url``.
_C = TypeVar("_C")


class EndpointConfig(BaseModel):
    """Base of every endpoint's typed configuration (pydantic v2).

    Unknown keys are refused (``extra="forbid"``), values are immutable, and
    :meth:`from_mapping` turns validation errors into one
    :class:`~copydicom.errors.ConfigError` that names the key.  Secrets
    (``password``, ``token``...) are declared in :attr:`secret_keys`: each may be
    written inline with ``${ENV}`` or as ``<key>_file`` (owner-only file), and
    is resolved before validation by :func:`copydicom.secrets.resolve_secret`.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    #: Keys that hold secrets: each also accepts ``<key>_file``.
    secret_keys: ClassVar[tuple[str, ...]] = ()

    name: str = ""
    type: str = ""

    @classmethod
    def from_mapping(cls, name: str, data: Mapping[str, Any], *, where: str) -> Self:
        """Validate one ``endpoints:`` entry (``where`` is its key path, for messages)."""
        from copydicom.secrets import resolve_secret

        body = dict(data)
        for key in cls.secret_keys:
            value = resolve_secret(body, key, where=where)
            body.pop(f"{key}_file", None)
            if value is not None:
                body[key] = value
        body["name"] = name
        try:
            return cls.model_validate(body)
        except ValidationError as exc:
            raise config_error(exc, where=where) from None

    @classmethod
    def from_url(cls, url: str, *, name: str | None = None) -> Self:
        """Parse the endpoint's URL form (``http://user:pass@host:8042``); override per type."""
        raise ConfigError(f"endpoints of type {cls.__name__} have no URL form")

    @property
    def display_url(self) -> str:
        """What may be logged or shown for this endpoint (never credentials)."""
        return self.name

    @classmethod
    def config_schema(cls) -> dict[str, Any]:
        """JSON Schema of the YAML entry: the model's fields (``name`` comes from the key), plus
        ``<key>_file`` for every secret; override when the YAML keys differ from the fields."""
        schema = cls.model_json_schema()
        props = dict(schema.get("properties", {}))
        props.pop("name", None)
        for key in cls.secret_keys:
            props[f"{key}_file"] = {"type": "string", "description": f"owner-only file holding {key}"}
        schema["properties"] = props
        required = [k for k in schema.get("required", []) if k != "name"]
        either = [k for k in required if k in cls.secret_keys]  # the secret itself, or its _file
        schema["required"] = [k for k in required if k not in either]
        if either:
            schema["allOf"] = [{"anyOf": [{"required": [k]}, {"required": [f"{k}_file"]}]} for k in either]
        schema["additionalProperties"] = False
        return schema



@dataclass(frozen=True)
class BuildContext:
    """What a factory may need besides its endpoint's config.

    Attributes
    ----------
    pool_size
        Connections the caller will use in parallel (workers + 2).
    want_identity
        A source should read identities (PatientID, UIDs) from its index before
        download (de-identifying routes and identity-addressed destinations).
    state
        The state store (``copydicom.state``), for endpoints that keep state
        (a receive spool, an index spool).
    options
        Route-level settings for the endpoint (``trigger``, ``filter`` ...).
    """

    pool_size: int = 6
    want_identity: bool = False
    state: Any = None
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class EndpointType(Generic[_C]):
    """One endpoint type, as registered.

    Attributes
    ----------
    name
        The ``type:`` in the configuration (``orthanc``).
    description
        One line for ``copydicom endpoints``.
    schemes
        URL schemes accepted on the command line (``http``, ``https``).
    config
        The typed config class (a :class:`EndpointConfig` subclass).
    source, destination, index
        Factories for the roles this type can play (``None``: not that role).
        ``index`` returns an :class:`~copydicom.model.IndexSink`.
    by_identity
        Its destination addresses objects by identity (S3 keys from UIDs): the
        source must read identities before download.
    extra
        The pip extra it needs (``copydicom[s3]``), or ``None``.
    requires
        Import names of that extra's packages, checked by :meth:`installed`.
    probe
        A quick check of reachability and credentials (``check-config``, ``/healthz``): raises
        :class:`~copydicom.errors.ConfigError` (wrong settings) or
        :class:`~copydicom.errors.RetryableError` (unreachable); may return a short note
        (no secrets) when the endpoint answered but could not be fully verified.
    drives
        Its source drives its route itself (:class:`~copydicom.model.RouteDriver`,
        e.g. a DIMSE listener): a route from it takes no trigger, and the daemon
        calls its runner.
    """

    name: str
    description: str
    schemes: tuple[str, ...]
    config: type[_C]
    source: Callable[[_C, BuildContext], Source] | None = None
    destination: Callable[[_C, BuildContext], Destination] | None = None
    index: Callable[[_C, BuildContext], IndexSink] | None = None
    by_identity: bool = False
    extra: str | None = None
    requires: tuple[str, ...] = ()
    feeds: bool = False
    probe: Callable[[_C], str | None] | None = None
    drives: bool = False

    def from_mapping(self, name: str, data: Mapping[str, Any], *, where: str) -> _C:
        """Validate one ``endpoints:`` entry into this type's config (extra checked first)."""
        self.check_installed(where=where)
        try:
            config: _C = self.config.from_mapping(name, data, where=where)  # type: ignore[attr-defined]
        except ValidationError as exc:  # a field constraint the type's own checks did not catch first
            raise config_error(exc, where=where) from None
        return config

    def from_url(self, url: str, *, name: str | None = None) -> _C:
        """Parse this type's URL form."""
        self.check_installed(where=url.split("://", 1)[0])
        try:
            config: _C = self.config.from_url(url, name=name)  # type: ignore[attr-defined]
        except ValidationError as exc:
            raise config_error(exc, where=url.split("://", 1)[0]) from None
        except ValueError as exc:  # urllib's own checks (a port out of range, a bad IPv6 literal)
            message = str(exc).replace(url, "<url>")  # never echo the URL: it may carry credentials
            raise ConfigError(f"{url.split('://', 1)[0]} URL: {message}") from None
        return config

    def json_schema(self) -> dict[str, Any]:
        """The JSON Schema of one ``endpoints:`` entry of this type (``type`` fixed to its name)."""
        schema: dict[str, Any]
        if isinstance(self.config, type) and issubclass(self.config, EndpointConfig):
            schema = self.config.config_schema()
        else:  # a plug-in's config that is not an EndpointConfig: its own from_mapping validates the keys
            schema = {"type": "object", "additionalProperties": True}
            schema.setdefault("properties", {})
        schema["title"] = self.name
        schema["description"] = self.description
        schema.setdefault("properties", {})["type"] = {"const": self.name}
        schema["required"] = sorted(set(schema.get("required", [])) | {"type"})
        return schema

    @property
    def roles(self) -> tuple[Role, ...]:
        """The roles this type can play, in :data:`ROLES` order."""
        have = {"source": self.source, "destination": self.destination, "index": self.index}
        return tuple(r for r in ROLES if have[r] is not None)

    def missing(self) -> list[str]:
        """Import names of required packages that are not installed."""
        return [m for m in self.requires if importlib.util.find_spec(m) is None]

    def installed(self) -> bool:
        return not self.missing()

    def check_installed(self, *, where: str) -> None:
        """Raise a ConfigError naming the missing package and the extra that brings it."""
        missing = self.missing()
        if missing:
            hint = f" (pip install 'copydicom[{self.extra}]')" if self.extra else ""
            raise ConfigError(f"{where}: endpoint type {self.name} needs the package {missing[0]}{hint}")


_REGISTRY: dict[str, EndpointType[Any]] = {}


def register(endpoint_type: EndpointType[Any], *, replace: bool = False) -> EndpointType[Any]:
    """Add an endpoint type (plug-ins and tests); a name or scheme may be taken only once."""
    _load_builtin()
    if endpoint_type.name in _REGISTRY and not replace:
        raise ValueError(f"endpoint type {endpoint_type.name!r} is already registered")
    taken = {s: t.name for t in _REGISTRY.values() for s in t.schemes if t.name != endpoint_type.name}
    clash = [s for s in endpoint_type.schemes if s in taken]
    if clash:
        raise ValueError(f"URL scheme {clash[0]!r} already belongs to endpoint type {taken[clash[0]]!r}")
    _REGISTRY[endpoint_type.name] = endpoint_type
    return endpoint_type


def unregister(name: str) -> None:
    """Remove an endpoint type (tests)."""
    _REGISTRY.pop(name, None)


_LOADED = False


def _load_builtin() -> None:
    global _LOADED
    if _LOADED:
        return
    _LOADED = True
    from copydicom.endpoints import BUILTIN

    for endpoint_type in BUILTIN:
        _REGISTRY.setdefault(endpoint_type.name, endpoint_type)


def all_types() -> Iterator[EndpointType[Any]]:
    """Every registered endpoint type, built-in first."""
    _load_builtin()
    return iter(list(_REGISTRY.values()))


def get(name: str, *, where: str = "type") -> EndpointType[Any]:
    """The endpoint type called ``name``, or a ConfigError listing the known ones."""
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"{where}: unknown endpoint type {name!r} (one of {', '.join(_REGISTRY)})") from None


def by_scheme(url: str) -> EndpointType[Any]:
    """The endpoint type of a URL, by its scheme (``s3://`` -> s3)."""
    _load_builtin()
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    for endpoint_type in _REGISTRY.values():
        if scheme in endpoint_type.schemes:
            return endpoint_type
    known = sorted(s for t in _REGISTRY.values() for s in t.schemes)
    shown = scheme or url.split("/", 1)[0][:20]
    raise ConfigError(f"{shown!r}: not a known endpoint URL scheme ({', '.join(known)})")


def of_config(config: Any) -> EndpointType[Any] | None:
    """The endpoint type whose config class ``config`` is an instance of (``None``: none)."""
    _load_builtin()
    for endpoint_type in _REGISTRY.values():
        if isinstance(config, endpoint_type.config):
            return endpoint_type
    return None


def with_role(role: Role) -> list[EndpointType[Any]]:
    """The registered types that can play ``role``."""
    return [t for t in all_types() if role in t.roles]
