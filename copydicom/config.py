"""The YAML configuration: endpoints, de-identification profiles and routes.

Loaded with ``yaml.safe_load`` and validated entirely at start-up; every
error names the key (``routes[0].destinations[1]``) and says what is wrong.
See ``config/copydicom.example.yaml`` for a commented example.

Endpoint types are plugins: :data:`ENDPOINT_TYPES` maps a ``type:`` to the
config class of the plugin (imported lazily, so a missing optional dependency
is reported as "endpoint type s3 needs boto3" only when it is used).
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from copydicom.errors import ConfigError

#: ``type:`` -> (module, class, role, pip extra). Each class has ``from_mapping(name, data, where=...)``.
ENDPOINT_TYPES: dict[str, tuple[str, str, str, str | None]] = {
    "orthanc": ("copydicom.clients.orthanc", "OrthancConfig", "orthanc", None),
    "s3": ("copydicom.sinks.s3", "S3Config", "destination", "s3"),
    "sqlite": ("copydicom.sinks.sqlite_index", "SqliteIndexConfig", "index", None),
    "elasticsearch": ("copydicom.sinks.elasticsearch", "ElasticsearchConfig", "index", "elasticsearch"),
    "splunk": ("copydicom.sinks.splunk", "SplunkConfig", "index", "splunk"),
    "dicomweb": ("copydicom.endpoints.dicomweb", "DicomwebConfig", "orthanc", None),
}

#: Endpoint types a route may read from.
SOURCE_TYPES = ("orthanc", "dicomweb")

_TOP_KEYS = {"state", "quarantine_dir", "workers", "endpoints", "profiles", "routes", "logging", "metrics", "health"}
_ROUTE_KEYS = {
    "name", "source", "trigger", "profile", "destinations", "indexes", "workers", "stages",
    "filter", "window", "max_rate",
}
_WAIT_FOR = ("instance", "stable_series", "stable_study")


def endpoint_class(type_name: str, *, where: str) -> Any:
    """The config class of an endpoint type, or a ConfigError saying what is missing."""
    if type_name not in ENDPOINT_TYPES:
        raise ConfigError(f"{where}.type: unknown endpoint type {type_name!r} (one of {', '.join(ENDPOINT_TYPES)})")
    module_name, class_name, _, extra = ENDPOINT_TYPES[type_name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        hint = f" (pip install 'copydicom[{extra}]')" if extra else ""
        raise ConfigError(f"{where}: endpoint type {type_name} needs the package {exc.name}{hint}") from None
    return getattr(module, class_name)


@dataclass(frozen=True)
class Trigger:
    """When a route runs.

    ``changes``: poll the source's changes feed every ``poll_seconds``;
    ``qido``: poll a DICOMweb source every ``poll_seconds`` for the studies whose
    StudyDate falls in the last ``window_seconds``;
    ``cron``: run ``query`` against ``index`` on a cron schedule (conditional
    replication); ``manual``: only from the command line.
    """

    kind: str = "changes"
    poll_seconds: float = 10.0
    wait_for: str = "instance"
    start_from: str = "beginning"
    cron: str | None = None
    query: str | None = None
    index: str | None = None
    window_seconds: float = 7200.0


@dataclass(frozen=True)
class Route:
    """A named flow: one source, optional de-identification, destinations and indexes."""

    name: str
    source: str
    destinations: tuple[str, ...]
    indexes: tuple[str, ...] = ()
    profile: str | None = None
    trigger: Trigger = field(default_factory=Trigger)
    workers: int = 4
    dose: bool = True
    #: Compiled ``filter:`` (:class:`copydicom.stages.filters.Filter`), ``window:`` and ``max_rate:`` texts.
    filter: Any = None
    window: str | None = None
    max_rate: str | None = None


@dataclass(frozen=True)
class AppConfig:
    """The whole validated configuration."""

    state: Path
    quarantine_dir: Path
    endpoints: dict[str, Any]
    endpoint_types: dict[str, str]
    profiles: dict[str, Any]
    routes: tuple[Route, ...]
    workers: int = 4
    log_json: bool = False
    metrics: dict[str, Any] = field(default_factory=dict)
    source_file: Path | None = None

    def endpoint(self, name: str) -> Any:
        return self.endpoints[name]


def _require_mapping(value: Any, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where}: must be a mapping")
    return value


def _names(value: Any, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"{where}: must be a list of endpoint names")
    return tuple(value)


def _positive_int(value: Any, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ConfigError(f"{where}: must be a whole number >= 1")
    return value


def _trigger(data: Any, where: str) -> Trigger:
    if data is None:
        return Trigger()
    if data == "manual":
        return Trigger(kind="manual")
    data = _require_mapping(data, where)
    if len(data) != 1:
        raise ConfigError(f"{where}: give exactly one of changes, cron, manual")
    ((kind, body),) = data.items()
    body = _require_mapping(body or {}, f"{where}.{kind}")
    if kind == "changes":
        unknown = set(body) - {"poll_seconds", "wait_for", "start_from"}
        if unknown:
            raise ConfigError(f"{where}.changes: unknown key(s) {', '.join(sorted(unknown))}")
        poll = body.get("poll_seconds", 10)
        if not isinstance(poll, (int, float)) or isinstance(poll, bool) or poll <= 0:
            raise ConfigError(f"{where}.changes.poll_seconds: must be a number > 0")
        wait_for = body.get("wait_for", "instance")
        if wait_for not in _WAIT_FOR:
            raise ConfigError(f"{where}.changes.wait_for: one of {', '.join(_WAIT_FOR)}")
        start_from = body.get("start_from", "beginning")
        if start_from not in ("beginning", "now"):
            raise ConfigError(f"{where}.changes.start_from: 'beginning' or 'now'")
        return Trigger("changes", float(poll), wait_for, start_from)
    if kind == "qido":
        from copydicom.endpoints.dicomweb import parse_duration

        unknown = set(body) - {"poll_seconds", "window"}
        if unknown:
            raise ConfigError(f"{where}.qido: unknown key(s) {', '.join(sorted(unknown))}")
        poll = body.get("poll_seconds", 60)
        if not isinstance(poll, (int, float)) or isinstance(poll, bool) or poll <= 0:
            raise ConfigError(f"{where}.qido.poll_seconds: must be a number > 0")
        window = parse_duration(str(body.get("window", "2h")), where=f"{where}.qido.window")
        return Trigger("qido", float(poll), window_seconds=window)
    if kind == "cron":
        expression = body.get("schedule")
        if not isinstance(expression, str):
            raise ConfigError(f"{where}.cron.schedule: a crontab expression is required, e.g. '0 2 * * *'")
        try:
            from apscheduler.triggers.cron import CronTrigger

            CronTrigger.from_crontab(expression)
        except ValueError as exc:
            raise ConfigError(f"{where}.cron.schedule: {exc}") from None
        query = body.get("query")
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(f"{where}.cron.query: the index query to run is required")
        index = body.get("index")
        if not isinstance(index, str):
            raise ConfigError(f"{where}.cron.index: the index endpoint to query is required")
        return Trigger("cron", cron=expression, query=query, index=index)
    if kind == "manual":
        return Trigger(kind="manual")
    raise ConfigError(f"{where}: unknown trigger {kind!r} (changes, qido, cron or manual)")


def _politeness(body: Mapping[str, Any], where: str) -> tuple[Any, str | None, str | None]:
    """A route's ``filter:`` (compiled), ``window:`` and ``max_rate:`` (checked), each optional."""
    from copydicom.politeness import RateLimiter, TimeWindow
    from copydicom.stages.filters import parse_filter

    route_filter = parse_filter(body["filter"], where=f"{where}.filter") if body.get("filter") is not None else None
    window = body.get("window")
    if window is not None:
        TimeWindow.parse(str(window), where=f"{where}.window")
    max_rate = body.get("max_rate")
    if max_rate is not None:
        RateLimiter.parse(str(max_rate), where=f"{where}.max_rate")
    return route_filter, None if window is None else str(window), None if max_rate is None else str(max_rate)


def _load_profiles(data: Any, where: str) -> dict[str, Any]:
    if not data:
        return {}
    data = _require_mapping(data, where)
    try:
        from copydicom.stages.deid import DeidProfile
    except ImportError:  # pragma: no cover - the stage ships with the package
        raise ConfigError(f"{where}: the de-identification stage is not available") from None
    return {
        str(name): DeidProfile.from_mapping(str(name), _require_mapping(body or {}, f"{where}.{name}"), where=f"{where}.{name}")
        for name, body in data.items()
    }


#: Keys whose values are file paths: relative ones are taken relative to the config file.
_PATH_KEYS = ("ca_bundle", "path", "csv")


def _anchor_paths(value: Any, base: Path) -> Any:
    """Copy of ``value`` with relative file paths (``*_file``, ``ca_bundle``, ``path``, ``csv``) made absolute."""
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for key, item in value.items():
            is_path = isinstance(key, str) and (key.endswith("_file") or key in _PATH_KEYS)
            if is_path and isinstance(item, str) and item and not item.startswith(("/", "~", "$")):
                out[key] = str(base / item)
            else:
                out[key] = _anchor_paths(item, base)
        return out
    if isinstance(value, list):
        return [_anchor_paths(item, base) for item in value]
    return value


def parse_config(data: Any, *, base_dir: Path | None = None, source_file: Path | None = None) -> AppConfig:
    """Validate a loaded YAML document and return the configuration."""
    data = _require_mapping(data, "configuration")
    if base_dir is not None:
        data = {k: (_anchor_paths(v, base_dir) if k in ("endpoints", "profiles") else v) for k, v in data.items()}
    unknown = sorted(set(data) - _TOP_KEYS)
    if unknown:
        raise ConfigError(f"unknown top-level key(s): {', '.join(unknown)} (known: {', '.join(sorted(_TOP_KEYS))})")
    base = base_dir or Path.cwd()
    if "state" not in data:
        raise ConfigError("state: required (path of the ledger, e.g. /var/lib/copydicom/state.db)")
    state = (base / str(data["state"])).resolve()
    quarantine_dir = (base / str(data.get("quarantine_dir", state.parent / "quarantine"))).resolve()
    workers = _positive_int(data.get("workers", 4), "workers")

    endpoints: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, body in _require_mapping(data.get("endpoints") or {}, "endpoints").items():
        where = f"endpoints.{name}"
        body = _require_mapping(body, where)
        type_name = body.get("type")
        if not isinstance(type_name, str):
            raise ConfigError(f"{where}.type: required ({', '.join(ENDPOINT_TYPES)})")
        cls = endpoint_class(type_name, where=where)
        endpoints[str(name)] = cls.from_mapping(str(name), body, where=where)
        types[str(name)] = type_name

    profiles = _load_profiles(data.get("profiles"), "profiles")

    routes: list[Route] = []
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ConfigError("routes: must be a list")
    seen: set[str] = set()
    for i, body in enumerate(raw_routes):
        where = f"routes[{i}]"
        body = _require_mapping(body, where)
        unknown = sorted(set(body) - _ROUTE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        route_name = body.get("name")
        if not isinstance(route_name, str) or not route_name:
            raise ConfigError(f"{where}.name: required")
        name = route_name
        if name in seen:
            raise ConfigError(f"{where}.name: duplicate route name {name!r}")
        seen.add(name)
        source = body.get("source")
        if source not in endpoints or types.get(str(source)) not in SOURCE_TYPES:
            raise ConfigError(f"{where}.source: {source!r} is not an orthanc or dicomweb endpoint of endpoints:")
        destinations = _names(body.get("destinations"), f"{where}.destinations")
        indexes = _names(body.get("indexes"), f"{where}.indexes")
        for j, dest in enumerate(destinations):
            if dest not in endpoints or ENDPOINT_TYPES[types[dest]][2] == "index":
                raise ConfigError(f"{where}.destinations[{j}]: {dest!r} is not an orthanc, dicomweb or s3 endpoint")
            if dest == source:
                raise ConfigError(f"{where}.destinations[{j}]: the destination is the source")
        for j, index in enumerate(indexes):
            if index not in endpoints or ENDPOINT_TYPES[types[index]][2] != "index":
                raise ConfigError(f"{where}.indexes[{j}]: {index!r} is not an index endpoint (sqlite, elasticsearch, splunk)")
        if not destinations and not indexes:
            raise ConfigError(f"{where}: needs at least one destination or index")
        profile: str | None = body.get("profile")
        if profile is not None and profile not in profiles:
            raise ConfigError(f"{where}.profile: no profile {profile!r} under profiles:")
        trigger = _trigger(body.get("trigger"), f"{where}.trigger")
        if trigger.kind == "qido" and types[str(source)] != "dicomweb":
            raise ConfigError(f"{where}.trigger.qido: needs a dicomweb source")
        if trigger.kind == "changes" and types[str(source)] != "orthanc" and body.get("trigger") is not None:
            raise ConfigError(f"{where}.trigger.changes: needs an orthanc source (use qido for dicomweb)")
        if trigger.kind == "changes" and types[str(source)] == "dicomweb":
            trigger = Trigger("qido", 60.0)
        route_filter, window, max_rate = _politeness(body, where)
        if trigger.index is not None and (trigger.index not in endpoints or ENDPOINT_TYPES[types[trigger.index]][2] != "index"):
            raise ConfigError(f"{where}.trigger.cron.index: {trigger.index!r} is not an index endpoint")
        stages = _require_mapping(body.get("stages") or {}, f"{where}.stages")
        routes.append(
            Route(
                name=name,
                source=str(source),
                destinations=destinations,
                indexes=indexes,
                profile=profile,
                trigger=trigger,
                workers=_positive_int(body.get("workers", workers), f"{where}.workers"),
                dose=bool(stages.get("dose", True)),
                filter=route_filter,
                window=window,
                max_rate=max_rate,
            )
        )
    logging_cfg = _require_mapping(data.get("logging") or {}, "logging")
    metrics = dict(_require_mapping(data.get("metrics") or {}, "metrics"))
    if metrics:
        from copydicom.observability._config import MetricsConfig

        MetricsConfig.from_mapping(metrics, where="metrics")
    return AppConfig(
        state=state,
        quarantine_dir=quarantine_dir,
        endpoints=endpoints,
        endpoint_types=types,
        profiles=profiles,
        routes=tuple(routes),
        workers=workers,
        log_json=bool(logging_cfg.get("json", False)),
        metrics=metrics,
        source_file=source_file,
    )


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML configuration file; relative paths are relative to it."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    return parse_config(data, base_dir=p.resolve().parent, source_file=p)
