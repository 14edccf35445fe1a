"""Cron (index-query) routes in cluster mode: runs recorded in PostgreSQL, planned by the elected planner.

A cron route's trigger (``trigger: {cron: {schedule, query, index}}``) runs on the
planner that holds the route's lease (:mod:`.election`), never on two planners at
once. Each fire time is one **run**, a row of ``cluster_cron_runs`` keyed by
``(route, fire)``:

``planning``
    The planner runs the query and records the matching instances as work units
    (the change-feed routes' batches: ``cluster_batches``, same queue, same
    back-pressure) under deterministic IDs ``cron-<fire>-<n>`` (the ``n``-th unit
    of the query's result); ``planned`` counts the units recorded. Each unit is
    recorded together with ``planned`` in one fenced transaction, then published.
``published``
    Every unit of the result is recorded and published; the run waits for its
    batches to finish (done or quarantined through the dead-letter queue).
``done``
    Every batch of the run is finished; ``instances`` is how many were planned.
``failed``
    The index refused the query (a configuration error): logged, kept with its
    reason, and the schedule goes on (as the single-process daemon does).

**Failover.** A planner that takes a route over publishes its open batches again
(dedupe and the workers' per-batch claim make a second copy harmless), then
resumes an unfinished run: a ``planning`` run is planned again from the start of
the query's result, skipping the first ``planned`` units, which are recorded
already (same IDs: ``ON CONFLICT DO NOTHING``); a ``published`` run is only waited
for. So an interrupted run is neither lost nor doubled: every unit is recorded
once, and if the index changed between the two passes, an instance that moved to
another unit is delivered once all the same (the ledger and the destination's
look-up make a second delivery a ``skipped_existing``).

**Schedule.** ``cluster_routes.schedule_from`` is written when a planner first
leads the route (the schedule starts there). The next run is the latest fire time
after the last run's (or ``schedule_from``) that has passed: fire times missed
while no planner led are coalesced into one run, like the daemon's
``coalesce=True``, but never dropped.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

#: Fire times examined at most when coalescing missed runs (a per-minute schedule: 69 days).
_MAX_STEPS = 100_000
_WEEK = 7 * 86400.0


def next_after(trigger: Any, after: float) -> float | None:
    """The first fire time of an APScheduler ``CronTrigger`` strictly after ``after`` (epoch seconds)."""
    start = datetime.fromtimestamp(after, trigger.timezone) + timedelta(microseconds=1)
    fire = trigger.get_next_fire_time(None, start)
    return None if fire is None else fire.timestamp()


def due(trigger: Any, after: float, now: float) -> tuple[float | None, float | None]:
    """``(fire, next)``: the latest fire time in ``(after, now]`` (``None``: none has passed) and the first
    fire time after ``now`` (when to look again)."""
    fire = next_after(trigger, after)
    latest: float | None = None
    steps = 0
    while fire is not None and fire <= now:
        latest = fire
        steps += 1
        if steps >= _MAX_STEPS:  # a long outage of a frequent schedule: scan again from a week before now
            steps = 0
            if fire < now - _WEEK:
                fire = next_after(trigger, now - _WEEK)
                continue
        fire = next_after(trigger, fire)
    return latest, fire


def batch_prefix(fire: float) -> str:
    """The batch-ID prefix of one run's work units (dead-letter splits append ``.i``)."""
    return f"cron-{int(fire)}-"


def batch_id(fire: float, n: int) -> str:
    return f"{batch_prefix(fire)}{n:07d}"


@dataclass
class Run:
    route: str
    fire: float
    state: str
    planned: int
    instances: int


# -- PostgreSQL (each in the caller's transaction) ----------------------------------------------------------


def schedule_from(conn: Any, lease: Any, route: str, now: float) -> float:
    """Where the route's schedule starts (written on the first lead, fenced)."""
    conn.execute("INSERT INTO cluster_routes (route, published_upto, updated) VALUES (%s, -1, %s) "
                 "ON CONFLICT (route) DO NOTHING", (route, now))
    lease.fenced_update(conn, "UPDATE cluster_routes SET schedule_from = %s WHERE route = %s "
                        "AND schedule_from IS NULL AND {fence}", (now, route))
    row = conn.execute("SELECT schedule_from FROM cluster_routes WHERE route = %s", (route,)).fetchone()
    return float(row[0]) if row is not None and row[0] is not None else now


def unfinished(conn: Any, route: str) -> Run | None:
    """The oldest run still ``planning`` or ``published``."""
    row = conn.execute("SELECT fire, state, planned, instances FROM cluster_cron_runs WHERE route = %s "
                       "AND state IN ('planning', 'published') ORDER BY fire LIMIT 1", (route,)).fetchone()
    return None if row is None else Run(route, float(row[0]), str(row[1]), int(row[2]), int(row[3]))


def last_fire(conn: Any, route: str) -> float | None:
    row = conn.execute("SELECT max(fire) FROM cluster_cron_runs WHERE route = %s", (route,)).fetchone()
    return None if row is None or row[0] is None else float(row[0])


def begin(conn: Any, lease: Any, route: str, fire: float) -> Run:
    """Record a new run (``planning``), fenced; an existing row for this fire time is kept."""
    lease.fenced_update(
        conn, "INSERT INTO cluster_cron_runs (route, fire, state, started, generation) "
        "SELECT %s, %s, 'planning', %s, %s WHERE {fence} ON CONFLICT (route, fire) DO NOTHING",
        (route, fire, time.time(), lease.generation))
    row = conn.execute("SELECT state, planned, instances FROM cluster_cron_runs WHERE route = %s AND fire = %s",
                       (route, fire)).fetchone()
    return Run(route, fire, str(row[0]), int(row[1]), int(row[2]))


def planned(conn: Any, lease: Any, run: Run, n: int, instances: int) -> None:
    """``n`` units recorded so far (with the unit just recorded in the same transaction)."""
    lease.fenced_update(conn, "UPDATE cluster_cron_runs SET planned = %s, instances = instances + %s "
                        "WHERE route = %s AND fire = %s AND state = 'planning' AND {fence}",
                        (n, instances, run.route, run.fire))


def finish_planning(conn: Any, lease: Any, run: Run) -> None:
    lease.fenced_update(conn, "UPDATE cluster_cron_runs SET state = 'published', published = %s "
                        "WHERE route = %s AND fire = %s AND state = 'planning' AND {fence}",
                        (time.time(), run.route, run.fire))


def fail(conn: Any, lease: Any, run: Run, reason: str) -> None:
    lease.fenced_update(conn, "UPDATE cluster_cron_runs SET state = 'failed', finished = %s, reason = %s "
                        "WHERE route = %s AND fire = %s AND state IN ('planning', 'published') AND {fence}",
                        (time.time(), reason, run.route, run.fire))


def open_units(conn: Any, run: Run) -> int:
    """Batches of the run not finished yet."""
    row = conn.execute("SELECT count(*) FROM cluster_batches WHERE route = %s AND state = 'published' "
                       "AND batch_id LIKE %s", (run.route, batch_prefix(run.fire) + "%")).fetchone()
    return int(row[0])


def complete(conn: Any, lease: Any, run: Run) -> bool:
    """Mark a ``published`` run whose batches are all finished ``done`` and forget its batch rows."""
    if open_units(conn, run):
        return False
    changed = lease.fenced_update(
        conn, "UPDATE cluster_cron_runs SET state = 'done', finished = %s WHERE route = %s AND fire = %s "
        "AND state = 'published' AND {fence}", (time.time(), run.route, run.fire))
    conn.execute("DELETE FROM cluster_batches WHERE route = %s AND state <> 'published' AND batch_id LIKE %s",
                 (run.route, batch_prefix(run.fire) + "%"))
    return bool(changed)


def last_runs(conn: Any) -> dict[str, dict[str, Any]]:
    """Per cron route, its newest run (for ``status``)."""
    rows = conn.execute(
        "SELECT DISTINCT ON (route) route, fire, state, planned, instances, finished, reason "
        "FROM cluster_cron_runs ORDER BY route, fire DESC").fetchall()
    return {str(r[0]): {"fire": float(r[1]), "state": str(r[2]), "units": int(r[3]), "instances": int(r[4]),
                        "finished": None if r[5] is None else float(r[5]), "reason": r[6]} for r in rows}
