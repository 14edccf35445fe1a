"""Run listener routes alone (``copydicom listen``) until the foundation's assembly path takes over.

This is the one place that still reads a configuration file for DIMSE on
its own: it accepts the same YAML as ``copydicom run`` (``state``,
``quarantine_dir``, ``endpoints``, ``profiles``, ``routes``) and keeps the
routes whose source is a ``dimse_listener``.  When the foundation's
validated route object and pipeline builder land, :func:`load` is replaced
by them (see ``notes/dimse.md``) and this module keeps only :class:`ListenLoop`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from copydicom.endpoints.dimse._config import DimseConfig, ListenerConfig
from copydicom.errors import ConfigError, FatalError, RetryableError
from copydicom.ledger import Ledger
from copydicom.model import Destination

log = logging.getLogger(__name__)

_ROUTE_KEYS = {"name", "source", "destinations", "profile", "workers", "trigger", "stages", "indexes"}
_PATHS = {"spool", "cert", "key", "ca"}


def _anchor(value: Any, base: Path) -> Any:
    """Relative ``spool`` and TLS file paths, made relative to the config file's folder."""
    if isinstance(value, Mapping):
        return {
            k: (str(base / v) if k in _PATHS and isinstance(v, str) and not v.startswith(("/", "~", "$")) else _anchor(v, base))
            for k, v in value.items()
        }
    return value


@dataclass
class ListenRoute:
    """One listener route's configuration."""

    name: str
    listener: ListenerConfig
    destinations: list[tuple[str, Any]]
    profile: Any = None
    workers: int = 4


@dataclass
class ListenConfig:
    """What ``copydicom listen`` needs from the configuration file."""

    state: Path
    quarantine_dir: Path
    routes: list[ListenRoute]
    listeners: dict[str, ListenerConfig] = field(default_factory=dict)


def load(path: str | Path) -> ListenConfig:
    """Read the listener routes of a configuration file (errors name the key)."""
    from copydicom.config import _anchor_paths, _load_profiles, endpoint_class

    p = Path(path)
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{p}: not valid YAML: {exc}") from None
    if not isinstance(data, Mapping):
        raise ConfigError("configuration: must be a mapping")
    base = p.resolve().parent
    if "state" not in data:
        raise ConfigError("state: required (path of the ledger, e.g. /var/lib/copydicom/state.db)")
    state = (base / str(data["state"])).resolve()
    quarantine_dir = (base / str(data.get("quarantine_dir", state.parent / "quarantine"))).resolve()
    endpoints: dict[str, tuple[str, Any]] = {}
    for name, body in (data.get("endpoints") or {}).items():
        where = f"endpoints.{name}"
        if not isinstance(body, Mapping) or not isinstance(body.get("type"), str):
            raise ConfigError(f"{where}.type: required")
        kind = body["type"]
        if kind == "dimse_listener":
            endpoints[name] = (kind, ListenerConfig.from_mapping(name, _anchor(body, base), where=where))
        elif kind == "dimse":
            endpoints[name] = (kind, DimseConfig.from_mapping(name, _anchor(body, base), where=where))
        else:
            endpoints[name] = (kind, endpoint_class(kind, where=where).from_mapping(name, _anchor_paths(body, base), where=where))
    profiles = _load_profiles(_anchor_paths(data.get("profiles"), base), "profiles")
    routes: list[ListenRoute] = []
    for i, body in enumerate(data.get("routes") or []):
        where = f"routes[{i}]"
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: must be a mapping")
        source = endpoints.get(str(body.get("source")))
        if source is None or source[0] != "dimse_listener":
            continue  # not a listener route: ``copydicom run`` handles it
        unknown = sorted(set(body) - _ROUTE_KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}")
        if body.get("indexes"):
            raise ConfigError(f"{where}.indexes: not supported by copydicom listen yet (use destinations)")
        dests = []
        for j, dest in enumerate(body.get("destinations") or []):
            if dest not in endpoints or endpoints[dest][0] not in ("orthanc", "s3", "dimse"):
                raise ConfigError(f"{where}.destinations[{j}]: {dest!r} is not an orthanc, s3 or dimse endpoint")
            dests.append(endpoints[dest])
        if not dests:
            raise ConfigError(f"{where}.destinations: at least one is required")
        profile_name = body.get("profile")
        if profile_name is not None and profile_name not in profiles:
            raise ConfigError(f"{where}.profile: no profile {profile_name!r} under profiles:")
        workers = body.get("workers", data.get("workers", 4))
        if not isinstance(workers, int) or workers < 1:
            raise ConfigError(f"{where}.workers: must be a whole number >= 1")
        routes.append(ListenRoute(str(body.get("name") or f"listen:{source[1].name}"), source[1], dests,
                                  profiles.get(profile_name) if profile_name else None, workers))
    listeners = {n: c for n, (k, c) in endpoints.items() if k == "dimse_listener"}
    return ListenConfig(state, quarantine_dir, routes, listeners)


def make_destination(kind: str, cfg: Any, *, pool_size: int) -> Destination:
    if kind == "dimse":
        from copydicom.endpoints.dimse.scu import DimseDestination

        return DimseDestination(cfg)
    from copydicom.app import make_destination as legacy

    return legacy(kind, cfg, pool_size=pool_size)


class ListenLoop:
    """Listener routes, each draining its spool on its own thread until :meth:`stop`.

    A poll that ends with a retryable failure backs off (1 s doubling to
    60 s, interrupted at once by a stop); otherwise the loop waits for the
    next arrival (or one second).
    """

    def __init__(self, config: ListenConfig, *, key_file: str | None = None,
                 on_fatal: Callable[[BaseException], None] | None = None) -> None:
        from copydicom.app import make_stages
        from copydicom.endpoints.dimse.listener import ListenerSource
        from copydicom.pipeline import Pipeline

        self.config = config
        self.stop_event = threading.Event()
        self.ledger = Ledger(config.state)
        self.parts: list[tuple[ListenRoute, Any, Any, list[Destination]]] = []
        for route in config.routes:
            source = ListenerSource(route.listener)
            dests = [make_destination(k, c, pool_size=route.workers + 2) for k, c in route.destinations]
            stages = make_stages(route.profile, state=config.state, key_file=key_file)
            pipeline = Pipeline(route.name, source, stages, dests, self.ledger,
                                quarantine_dir=config.quarantine_dir, workers=route.workers)
            self.parts.append((route, source, pipeline, dests))
        self.runners: list[Any] = []
        self.threads: list[threading.Thread] = []
        self.failures = 0
        self.on_fatal = on_fatal

    def start(self) -> None:
        for route, source, pipeline, _ in self.parts:
            runner = source.runner(route.name, pipeline, self.ledger)
            self.runners.append(runner)
            thread = threading.Thread(target=self._drive, args=(route.name, runner), name=f"listen-{route.name}",
                                      daemon=True)
            self.threads.append(thread)
            thread.start()

    def _drive(self, name: str, runner: Any) -> None:
        backoff = 1.0
        while not self.stop_event.is_set():
            try:
                summary = runner.poll()
            except RetryableError as exc:
                log.warning("route %s: %s", name, exc)
                summary = None
            except (ConfigError, FatalError) as exc:  # nothing sensible to retry: stop the process
                log.error("route %s: %s: %s", name, type(exc).__name__, exc)
                self.failures += 1
                self.stop_event.set()
                if self.on_fatal is not None:
                    self.on_fatal(exc)
                return
            except Exception:
                log.exception("route %s: poll failed", name)
                self.failures += 1
                summary = None
            if summary is not None and sum(summary.counts.values()):
                log.info("route %s: %s", name, summary.line())
            if summary is None or summary.counts["failed"]:
                self.stop_event.wait(backoff)
                backoff = min(backoff * 2, 60.0)
            else:
                backoff = 1.0
                runner.wait(1.0)

    def stop(self) -> None:
        """Stop accepting first (nothing new is acknowledged), then let in-flight deliveries finish."""
        for _, source, _, _ in self.parts:
            source.close()
        self.stop_event.set()
        for _, _, pipeline, _ in self.parts:
            pipeline.stop()
        for runner in self.runners:
            runner.source.listener.arrived.set()
        for thread in self.threads:
            thread.join(10)

    def close(self) -> None:
        for _, source, pipeline, dests in self.parts:
            source.close()
            pipeline.close()
            for dest in dests:
                dest.close()
        self.ledger.close()
