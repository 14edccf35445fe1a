"""The YAML configuration: endpoints, de-identification profiles and routes.

Loaded with ``yaml.safe_load`` and validated entirely at start-up; every
error names the key (``routes[0].destinations[1]``) and says what is wrong.
See ``config/copydicom.example.yaml`` for a commented example and
``copydicom check-config --schema`` for its JSON Schema.

Endpoint types come from the one registry (:mod:`copydicom.registry`): a
``type:`` names a registered type, whose typed config class validates the
entry; a route's source, destinations and indexes must be endpoints whose
type can play that role.  :func:`validate_route` is the one route validator,
used for the file's ``routes:`` and for the routes the one-shot commands
build from ``--src``/``--dest``/``--index``.

Typed objects, two techniques (issue 10 asks to pick and say why): endpoint
configs are pydantic v2 models (:class:`copydicom.registry.EndpointConfig`:
field types and ranges, immutability and a JSON Schema come with the class, and
a plug-in brings its own); the sections around them (top level, routes,
triggers, stages, logging) are frozen dataclasses filled by this hand-written
validator, because their checks are mostly references between sections
(a route's source must be a source endpoint, a cron index an index, a profile
a profile) and their messages are a contract pinned by tests.
:mod:`copydicom.schema` describes those sections for editors; a unit test
keeps its keys equal to this module's.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from copydicom import registry
from copydicom.errors import ConfigError

_TOP_KEYS = {
    "state", "quarantine_dir", "workers", "endpoints", "profiles", "routes", "logging", "metrics",
    "quarantine", "index_spool",  # retention: see copydicom/state/_retention.py
    "console",  # the web console: copydicom/console/_config.py
    "cluster",  # scale-out: see copydicom/cluster/
}
_STATE_KEYS = {"url", "password", "password_file"}
_ROUTE_KEYS = {"name", "source", "trigger", "profile", "destinations", "indexes", "workers", "stages",
               "index_source_ids", "on_changed_instance", "deletions", "reconcile", "filter", "window", "max_rate"}
#: What a route does when an instance it delivered changed at the source (same SOP Instance UID, new bytes).
CHANGED_INSTANCE_POLICIES = ("report", "resend")
_STAGE_KEYS = {"dose"}
_LOGGING_KEYS = {"json"}
_WAIT_FOR = ("instance", "stable_series", "stable_study")


def endpoint_class(type_name: str, *, where: str) -> Any:
    """The config class of a registered endpoint type, or a ConfigError saying what is missing."""
    endpoint_type = registry.get(type_name, where=f"{where}.type")
    endpoint_type.check_installed(where=where)
    return endpoint_type.config


@dataclass(frozen=True)
class Trigger:
    """When a route runs.

    ``changes``: poll the source's changes feed every ``poll_seconds``;
    ``qido``: poll a DICOMweb source every ``poll_seconds`` for the studies whose
    StudyDate falls in the last ``window_seconds`` (the source's RouteDriver);
    ``cron``: run ``query`` against ``index`` on a cron schedule (conditional
    replication); ``manual``: only from the command line; ``driven``: the
    source drives the route (a DIMSE listener), its runner polled every
    ``poll_seconds``.
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
    #: On a de-identifying route, index documents carry the *source* Orthanc IDs (links back to the patient).
    index_source_ids: bool = False
    #: ``report`` (count, log, keep the delivered copy) or ``resend`` (replace it at every destination).
    on_changed_instance: str = "report"
    #: What reconcile does with instances gone at the source: ``ignore``, ``report`` or ``propagate``.
    deletions: str = "ignore"
    #: ``reconcile: {cron, on_start}`` (see :func:`copydicom.reconcile.config.reconcile_options`).
    reconcile: Any = None
    #: Compiled ``filter:`` (:class:`copydicom.stages.filters.Filter`), and the ``window:`` and
    #: ``max_rate:`` texts (checked here; :mod:`copydicom.politeness` parses them at build time).
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
    #: ``metrics:`` parsed once (an ``observability.MetricsConfig``), ``None`` without the section.
    metrics_config: Any = None
    source_file: Path | None = None
    console: Any = None
    #: ``quarantine: {retain: 30d}`` and ``index_spool: {retain: 30d}`` (state branch).
    retention: Any = None
    #: ``state: postgresql://user@host/db``: the URL (a ``state.PostgresTarget``, password kept apart).
    #: ``state`` is then only the folder for local files (quarantine) of this host.
    state_url: Any = None
    #: ``cluster:`` parsed (a ``cluster.ClusterConfig``), ``None`` without the section.
    cluster: Any = None

    def endpoint(self, name: str) -> Any:
        return self.endpoints[name]

    @property
    def store_location(self) -> Any:
        """What :func:`copydicom.state.open_store` opens: the PostgreSQL target, else the SQLite file."""
        return self.state_url if self.state_url is not None else self.state


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
_PATH_KEYS = ("ca_bundle", "path", "csv", "spool", "cert", "key", "ca", "retrieve_spool")


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


def _known_keys(data: Mapping[str, Any], known: set[str], where: str) -> None:
    unknown = sorted(str(k) for k in set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(known))})")


def _role_of(name: Any, types: Mapping[str, str], role: registry.Role) -> bool:
    return isinstance(name, str) and name in types and role in registry.get(types[name]).roles


def _kinds(role: registry.Role) -> str:
    return ", ".join(t.name for t in registry.with_role(role))


def validate_route(
    body: Any,
    *,
    where: str,
    types: Mapping[str, str],
    profiles: Mapping[str, Any],
    workers: int = 4,
) -> Route:
    """Validate one route against the endpoints (``types``: endpoint name -> type) and profiles.

    The one route validator: the file's ``routes:`` and the one-shot commands' routes
    (``--src``/``--dest``/``--index``) go through it.
    """
    body = _require_mapping(body, where)
    unknown = sorted(set(body) - _ROUTE_KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
    name = body.get("name")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{where}.name: required")
    source = body.get("source")
    if not _role_of(source, types, "source"):
        raise ConfigError(f"{where}.source: {source!r} is not a source endpoint of endpoints: ({_kinds('source')})")
    destinations = _names(body.get("destinations"), f"{where}.destinations")
    indexes = _names(body.get("indexes"), f"{where}.indexes")
    for j, dest in enumerate(destinations):
        if not _role_of(dest, types, "destination"):
            raise ConfigError(f"{where}.destinations[{j}]: {dest!r} is not a destination endpoint ({_kinds('destination')})")
        if dest == source:
            raise ConfigError(f"{where}.destinations[{j}]: the destination is the source")
    for j, index in enumerate(indexes):
        if not _role_of(index, types, "index"):
            raise ConfigError(f"{where}.indexes[{j}]: {index!r} is not an index endpoint ({_kinds('index')})")
    if not destinations and not indexes:
        raise ConfigError(f"{where}: needs at least one destination or index")
    profile: str | None = body.get("profile")
    if profile is not None and profile not in profiles:
        raise ConfigError(f"{where}.profile: no profile {profile!r} under profiles:")
    if registry.get(types[str(source)]).drives:
        # A listener receives pushes and drives its route (model.RouteDriver): no trigger.
        if body.get("trigger") is not None:
            raise ConfigError(
                f"{where}.trigger: the source {source!r} (type {types[str(source)]}) receives pushes and drives "
                "its route itself: no trigger (run it with copydicom run or copydicom listen)"
            )
        trigger = Trigger(kind="driven", poll_seconds=1.0)
    else:
        trigger = _trigger(body.get("trigger"), f"{where}.trigger")
        polls = types[str(source)] == "dicomweb"  # QIDO-RS is DICOMweb's: its source is the poller (RouteDriver)
        if trigger.kind == "qido" and not polls:
            raise ConfigError(f"{where}.trigger.qido: needs a dicomweb source")
        if trigger.kind == "changes" and polls and body.get("trigger") is None:
            trigger = Trigger("qido", 60.0)  # a DICOMweb route without a trigger polls QIDO-RS every minute
    if trigger.kind == "changes" and not registry.get(types[str(source)]).feeds:
        raise ConfigError(
            f"{where}.trigger: the source {source!r} (type {types[str(source)]}) has no change feed; "
            "use trigger: manual or a cron trigger"
        )
    if trigger.index is not None and not _role_of(trigger.index, types, "index"):
        raise ConfigError(f"{where}.trigger.cron.index: {trigger.index!r} is not an index endpoint")
    stages = _require_mapping(body.get("stages") or {}, f"{where}.stages")
    _known_keys(stages, _STAGE_KEYS, f"{where}.stages")
    dose = stages.get("dose", True)
    if not isinstance(dose, bool):
        raise ConfigError(f"{where}.stages.dose: must be true or false")
    index_source_ids = body.get("index_source_ids", False)
    if not isinstance(index_source_ids, bool):
        raise ConfigError(f"{where}.index_source_ids: true or false")
    route_filter, window, max_rate = _politeness(body, where)
    on_changed = body.get("on_changed_instance", "report")
    if on_changed not in CHANGED_INSTANCE_POLICIES:
        raise ConfigError(f"{where}.on_changed_instance: one of {', '.join(CHANGED_INSTANCE_POLICIES)}")
    return Route(
        name=name,
        source=str(source),
        destinations=destinations,
        indexes=indexes,
        profile=profile,
        trigger=trigger,
        workers=_positive_int(body.get("workers", workers), f"{where}.workers"),
        dose=dose,
        index_source_ids=index_source_ids,
        on_changed_instance=str(on_changed),
        filter=route_filter,
        window=window,
        max_rate=max_rate,
        **_reconcile_keys(body, where, trigger.kind),
    )


def _reconcile_keys(body: Mapping[str, Any], where: str, trigger_kind: str) -> dict[str, Any]:
    """The route's ``deletions`` and ``reconcile`` keys (validated in :mod:`copydicom.reconcile.config`)."""
    from copydicom.reconcile.config import deletions_policy, reconcile_options

    if body.get("reconcile") is not None and trigger_kind != "changes":
        raise ConfigError(f"{where}.reconcile: the daemon reconciles changes routes only; for this route run "
                          "copydicom reconcile --config ... --route NAME")
    return {
        "deletions": deletions_policy(body.get("deletions", "ignore"), f"{where}.deletions"),
        "reconcile": reconcile_options(body.get("reconcile"), f"{where}.reconcile"),
    }


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
    state, state_url = _state(data["state"], base)
    quarantine_dir = (base / str(data.get("quarantine_dir", state.parent / "quarantine"))).resolve()
    workers = _positive_int(data.get("workers", 4), "workers")

    endpoints: dict[str, Any] = {}
    types: dict[str, str] = {}
    for name, body in _require_mapping(data.get("endpoints") or {}, "endpoints").items():
        where = f"endpoints.{name}"
        body = _require_mapping(body, where)
        type_name = body.get("type")
        if not isinstance(type_name, str):
            known = ", ".join(t.name for t in registry.all_types())
            raise ConfigError(f"{where}.type: required ({known})")
        endpoint_type = registry.get(type_name, where=f"{where}.type")
        endpoints[str(name)] = endpoint_type.from_mapping(str(name), body, where=where)
        types[str(name)] = type_name

    profiles = _load_profiles(data.get("profiles"), "profiles")

    routes: list[Route] = []
    raw_routes = data.get("routes") or []
    if not isinstance(raw_routes, list):
        raise ConfigError("routes: must be a list")
    seen: set[str] = set()
    for i, body in enumerate(raw_routes):
        where = f"routes[{i}]"
        route = validate_route(body, where=where, types=types, profiles=profiles, workers=workers)
        if route.name in seen:
            raise ConfigError(f"{where}.name: duplicate route name {route.name!r}")
        seen.add(route.name)
        routes.append(route)
    logging_cfg = _require_mapping(data.get("logging") or {}, "logging")
    _known_keys(logging_cfg, _LOGGING_KEYS, "logging")
    if not isinstance(logging_cfg.get("json", False), bool):
        raise ConfigError("logging.json: must be true or false")
    metrics = dict(_require_mapping(data.get("metrics") or {}, "metrics"))
    metrics_config = None
    if metrics:
        from copydicom.observability._config import MetricsConfig

        metrics_config = MetricsConfig.from_mapping(metrics, where="metrics")
    console = None
    if data.get("console") is not None:
        console = _console(data["console"], base)
    config = AppConfig(
        console=console,
        state=state,
        quarantine_dir=quarantine_dir,
        endpoints=endpoints,
        endpoint_types=types,
        profiles=profiles,
        routes=tuple(routes),
        workers=workers,
        log_json=bool(logging_cfg.get("json", False)),
        metrics=metrics,
        metrics_config=metrics_config,
        source_file=source_file,
        retention=_retention(data),
        state_url=state_url,
        cluster=_cluster(data.get("cluster"), state_url),
    )
    if config.cluster is not None and config.cluster.staging:  # names checked here, so check-config sees them
        from copydicom.cluster.staging import expand

        expand(config)
    return config


def _console(data: Any, base: Path) -> Any:
    """The ``console:`` section (pydantic model; paths relative to the config file)."""
    from pydantic import ValidationError

    from copydicom.console._config import ConsoleConfig
    from copydicom.registry import config_error

    body = dict(_require_mapping(data, "console"))
    for key in ("users_file", "session_secret_file", "audit_log"):
        if isinstance(body.get(key), str):
            body[key] = str(base / body[key])
    if isinstance(body.get("tls"), Mapping):
        body["tls"] = {k: str(base / v) if isinstance(v, str) else v for k, v in body["tls"].items()}
    if isinstance(body.get("folder_roots"), list):
        body["folder_roots"] = [str(base / r) if isinstance(r, str) else r for r in body["folder_roots"]]
    try:
        return ConsoleConfig.model_validate(body)
    except ValidationError as exc:
        raise config_error(exc, where="console") from None
def _state(value: Any, base: Path) -> tuple[Path, Any]:
    """``state:`` a SQLite path, ``postgresql://user@host/db``, or ``{url, password | password_file}``.

    For PostgreSQL the returned path is ``<config folder>/state-local``: the parent of the default
    quarantine folder of this host (quarantined bytes stay on the host that saw them).
    """
    from copydicom.secrets import resolve_secret
    from copydicom.state import PostgresTarget, is_postgres

    password = None
    if isinstance(value, Mapping):
        _known_keys(value, _STATE_KEYS, "state")
        if not isinstance(value.get("url"), str):
            raise ConfigError("state.url: required (postgresql://user@host:5432/db)")
        password = resolve_secret(value, "password", where="state")
        value = value["url"]
    text = str(value)
    if not is_postgres(text):
        if password is not None:
            raise ConfigError("state.password: only a PostgreSQL state has a password")
        return (base / text).resolve(), None
    from urllib.parse import urlsplit

    parts = urlsplit(text)
    if parts.password is not None:
        raise ConfigError("state: put no password in the URL; give state.password: ${ENV} or state.password_file")
    if not parts.hostname or not parts.path.strip("/"):
        raise ConfigError("state: a PostgreSQL URL needs a host and a database (postgresql://user@host:5432/db)")
    try:
        parts.port
    except ValueError:
        raise ConfigError("state: the port must be 1-65535") from None
    return (base / "state-local").resolve(), PostgresTarget(text, password)


def _cluster(value: Any, state_url: Any) -> Any:
    if value is None:
        return None
    from copydicom.cluster.config import ClusterConfig

    if state_url is None:
        raise ConfigError("cluster: needs a PostgreSQL state (state: postgresql://user@host/db)")
    return ClusterConfig.from_mapping(_require_mapping(value, "cluster"), where="cluster")




def _retention(data: Mapping[str, Any]) -> Any:
    """``quarantine: {retain: ..}`` and ``index_spool: {retain: ..}`` (default 30d each; ``off`` keeps)."""
    from copydicom.state import DEFAULT_RETAIN, Retention, parse_retain

    values: dict[str, float | None] = {}
    for key, attr in (("quarantine", "quarantine"), ("index_spool", "rejected_documents")):
        section = _require_mapping(data.get(key) or {}, key)
        unknown = sorted(set(section) - {"retain"})
        if unknown:
            raise ConfigError(f"{key}: unknown key(s) {', '.join(unknown)} (known: retain)")
        values[attr] = parse_retain(section["retain"], f"{key}.retain") if "retain" in section else DEFAULT_RETAIN
    return Retention(**values)


def _read_yaml(p: Path) -> Any:
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None


def load_config(path: str | Path) -> AppConfig:
    """Read and validate a YAML configuration file; relative paths are relative to it."""
    p = Path(path)
    return parse_config(_read_yaml(p), base_dir=p.resolve().parent, source_file=p)


def load_profiles(path: str | Path) -> dict[str, Any]:
    """The ``profiles:`` of a YAML file (a full configuration or only profiles), paths relative to it.

    Used by ``deidentify --config``, so that a profile's ``key_file`` and
    ``patient_map.csv`` resolve exactly as they do for ``run``.
    """
    p = Path(path)
    data = _require_mapping(_read_yaml(p) or {}, str(p))
    section = _anchor_paths(data.get("profiles") or {}, p.resolve().parent)
    return _load_profiles(section, "profiles")
