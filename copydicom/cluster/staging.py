"""Listener routes in cluster mode: stage what a listener receives where every worker can read it.

A DIMSE listener (``type: dimse_listener``) is bound to its host and its spool is a
local directory: workers on other hosts cannot read it. With
``cluster: {staging: {LISTENER: STAGING}}`` (``STAGING`` an Orthanc endpoint, the
route's "first hop"), a route whose source is ``LISTENER`` becomes two routes:

``<route>.staging`` (the listener host, ``copydicom listen``)
    ``LISTENER`` -> ``STAGING``, the bytes as received (no de-identification,
    filters or indexes). The listener's own durability rules are unchanged: an
    instance is fsync'ed into the spool before the C-STORE response is Success,
    and its spool entry is removed only once ``STAGING`` stored it (or it was
    quarantined); the ledger dedupes a sender's retry.
``<route>`` (planned and executed like any changes route)
    ``STAGING`` (its change feed) -> the route's destinations, with the route's
    stages, filters and indexes: the elected planner publishes batches, any worker
    runs them, with planner failover, back-pressure and fencing. Once a batch is
    finished, the worker deletes from ``STAGING`` the instances every destination
    has (stored or already present) and those the route's filter excluded; a
    quarantined instance stays staged (``quarantine retry`` fetches it from there).

Why an Orthanc as the staging store (rather than S3 or a shared file system): it is
a change-feed source copydicom already plans with every guarantee of cluster mode
(low-watermark checkpoint, failover, poison handling), it dedupes by instance (a
resend of the same instance is one staged copy), and deleting a staged instance is
one request. The cost: every received instance crosses the network twice (listener
host -> staging -> worker), and the staging Orthanc must hold the backlog.

Delivery is exactly-once in effect: the staging store is idempotent (ledger, then
Orthanc's own dedupe by UIDs), and the deliver route is a normal cluster route. A
staged copy is deleted only after its batch is marked done (a worker that dies in
between leaves the copy staged: never a loss, at worst a copy to delete by hand,
which ``status`` does not count).

Without a staging endpoint, a listener route in cluster mode runs on its host only
(``copydicom listen`` drains the local spool into the destinations): it is not
planned and not part of planner failover.
"""

from __future__ import annotations

import dataclasses

from copydicom.config import AppConfig, Route, Trigger
from copydicom.errors import ConfigError

#: How often the planner reads the staging Orthanc's change feed (seconds).
POLL_SECONDS = 1.0
SUFFIX = ".staging"


def expand(config: AppConfig) -> AppConfig:
    """The configuration with every staged listener route split in two (see the module docstring)."""
    cluster = config.cluster
    staging = dict(getattr(cluster, "staging", None) or {})
    if not staging:
        return config
    for listener, target in staging.items():
        if config.endpoint_types.get(listener) != "dimse_listener":
            raise ConfigError(f"cluster.staging: {listener!r} is not a dimse_listener endpoint")
        if config.endpoint_types.get(target) != "orthanc":
            raise ConfigError(f"cluster.staging.{listener}: {target!r} is not an Orthanc endpoint (the staging "
                              "store must have a change feed the planner follows)")
    routes: list[Route] = []
    for route in config.routes:
        target = staging.get(route.source)
        if target is None:
            routes.append(route)
            continue
        if target in route.destinations:
            raise ConfigError(f"route {route.name}: the staging endpoint {target!r} cannot also be a destination")
        routes.append(dataclasses.replace(
            route, name=route.name + SUFFIX, destinations=(target,), indexes=(), profile=None, filter=None,
            window=None, max_rate=None, dose=False))
        routes.append(dataclasses.replace(route, source=target, trigger=Trigger("changes", POLL_SECONDS)))
    return dataclasses.replace(config, routes=tuple(routes))


def staged_routes(config: AppConfig) -> dict[str, str]:
    """``{deliver route name: staging endpoint}`` of an expanded configuration's configured listeners."""
    staging = dict(getattr(config.cluster, "staging", None) or {})
    targets = set(staging.values())
    receive = {r.name[: -len(SUFFIX)] for r in config.routes
               if r.name.endswith(SUFFIX) and r.destinations and r.destinations[0] in targets}
    return {r.name: r.source for r in config.routes if r.name in receive and r.source in targets}
