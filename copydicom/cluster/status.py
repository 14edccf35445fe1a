"""What ``copydicom status`` shows of a cluster: per route the planner and its open batches, the queue depth,
and every worker with its last heartbeat (read from PostgreSQL and a passive declare of the work queue)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from copydicom.cluster import cron
from copydicom.cluster.config import ClusterConfig


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def queue_depth(cfg: ClusterConfig) -> int | None:
    """Messages ready in the work queue, ``None`` if the broker cannot be reached."""
    from kombu import Connection

    from copydicom.cluster import broker

    try:
        with Connection(cfg.broker_url(), connect_timeout=5) as conn:
            return broker.depth(conn, cfg)
    except Exception:  # noqa: BLE001 - status reports the broker as unreachable, it does not fail
        return None


def cluster_status(store: Any, cfg: ClusterConfig, *, now: float | None = None) -> dict[str, Any]:
    """``{"queue": ..., "queue_depth": n|None, "routes": {...}, "workers": [...]}`` (plain values)."""
    now = time.time() if now is None else now

    def read(conn: Any) -> tuple[list[Any], list[Any], list[Any]]:
        routes = conn.execute(
            "SELECT r.route, r.published_upto, "
            "(SELECT count(*) FROM cluster_batches b WHERE b.route = r.route AND b.state = 'published'), "
            "f.generation, f.holder, f.since FROM cluster_routes r "
            "LEFT JOIN cluster_fence f ON f.name = r.route ORDER BY r.route").fetchall()
        workers = conn.execute("SELECT worker, host, pid, started, heartbeat, batches, instances, current "
                               "FROM cluster_workers ORDER BY heartbeat DESC").fetchall()
        has_cron = conn.execute("SELECT to_regclass('cluster_cron_runs')").fetchone()[0] is not None
        return routes, workers, [cron.last_runs(conn)] if has_cron else [{}]

    def read_safe(conn: Any) -> tuple[list[Any], list[Any], list[Any]]:
        has_fence = conn.execute("SELECT to_regclass('cluster_fence')").fetchone()[0] is not None
        if not has_fence:
            conn.execute("CREATE TABLE IF NOT EXISTS cluster_fence (name TEXT PRIMARY KEY, generation BIGINT "
                         "NOT NULL, holder TEXT NOT NULL, since DOUBLE PRECISION NOT NULL)")
        return read(conn)

    routes, workers, (runs,) = store.run("status", read_safe)
    stale_after = 3 * cfg.heartbeat
    return {
        "queue": cfg.queue,
        "queue_depth": queue_depth(cfg),
        "routes": {
            str(r[0]): {"published_upto": int(r[1]), "open_batches": int(r[2]), "cron": runs.get(str(r[0])),
                        "planner": None if r[3] is None else {"holder": r[4], "generation": int(r[3]),
                                                              "since": float(r[5])}}
            for r in routes
        },
        "workers": [
            {"worker": w[0], "host": w[1], "pid": int(w[2]), "heartbeat_age": round(now - float(w[4]), 1),
             "active": now - float(w[4]) <= stale_after, "batches": int(w[5]), "instances": int(w[6]),
             "busy": w[7] is not None}
            for w in workers
        ],
    }


def status_lines(info: dict[str, Any]) -> Iterator[str]:
    depth = info["queue_depth"]
    active = [w for w in info["workers"] if w["active"]]
    yield (f"cluster: queue {info['queue']}: {'unreachable' if depth is None else depth} batch(es) waiting; "
           f"{len(active)} active worker(s)")
    for route, r in sorted(info["routes"].items()):
        planner = r["planner"]
        lead = "no planner yet" if planner is None else (
            f"planner {planner['holder']} (generation {planner['generation']})")
        run = r.get("cron")
        if run is not None:
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(run["fire"]))
            progress = f"cron run of {when}Z {run['state']}, {run['instances']} instance(s) in {run['units']} unit(s)"
            if run["state"] == "failed" and run["reason"]:
                progress += f" ({run['reason']})"
            yield f"  route {route}: {progress}, {r['open_batches']} open batch(es), {lead}"
        elif r["published_upto"] < 0:
            yield f"  route {route}: cron schedule started, no run yet, {lead}"
        else:
            yield (f"  route {route}: published up to {r['published_upto']}, {r['open_batches']} open batch(es), "
                   f"{lead}")
    for w in info["workers"]:
        state = "active" if w["active"] else "silent"
        yield (f"  worker {w['worker']}: {state}, last heartbeat {_age(w['heartbeat_age'])} ago, "
               f"{w['batches']} batch(es), {w['instances']} instance(s){', busy' if w['busy'] else ''}")
