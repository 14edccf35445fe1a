"""Work units: what a batch message carries, and their life in PostgreSQL.

A batch message carries ``(route, batch_id, refs)`` where each ref is
``[source_id, seq, series_id]``: Orthanc IDs (SHA-1 digests) and sequence
numbers only, never identities (UIDs, patient IDs), so the broker holds no PHI.
A worker completes identities from the source's index when its route needs them.

``cluster_batches.state``:

- ``published``: recorded by the planner (before it publishes: a planner that
  dies in between leaves an open row, and its successor publishes it again);
- ``done``: every instance stored, already present, or quarantined;
- ``dead``: dead-lettered after ``delivery_limit`` deliveries and drained by the
  planner (split into single-instance batches, or quarantined when single);

The checkpoint is a low-watermark: ``min(published_upto, min(seq_min of open
batches) - 1)``. It never passes a change whose batch is not finished.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from copydicom.model import InstanceRef

TASK_NAME = "copydicom.batch"


def encode_refs(refs: Sequence[InstanceRef]) -> list[list[Any]]:
    return [[r.source_id, r.seq, r.series_id] for r in refs]


def decode_refs(rows: Sequence[Sequence[Any]]) -> list[InstanceRef]:
    return [InstanceRef(str(s), None if q is None else int(q), None, None if p is None else str(p))
            for s, q, p in rows]


@dataclass
class Batch:
    route: str
    batch_id: str
    refs: list[list[Any]]

    @property
    def seqs(self) -> list[int]:
        return [int(r[1]) for r in self.refs if r[1] is not None]

    @classmethod
    def new(cls, route: str, refs: Sequence[InstanceRef]) -> Batch:
        return cls(route, uuid.uuid4().hex, encode_refs(refs))


def record_published(conn: Any, lease: Any, route: str, batches: Sequence[Batch], published_upto: int | None) -> None:
    """In the caller's transaction: the batches as ``published`` and the route's feed progress (fenced)."""
    now = time.time()
    generation = lease.generation
    if published_upto is not None:
        conn.execute("INSERT INTO cluster_routes (route, published_upto, updated) VALUES (%s, %s, %s) "
                     "ON CONFLICT (route) DO NOTHING", (route, -1, now))
        lease.fenced_update(conn, "UPDATE cluster_routes SET published_upto = greatest(published_upto, %s), "
                            "updated = %s WHERE route = %s AND {fence}", (published_upto, now, route))
    if batches:
        with conn.cursor() as cur:
            cur.executemany(
                "INSERT INTO cluster_batches (route, batch_id, seq_min, seq_max, refs, size, state, published, "
                "generation) VALUES (%s,%s,%s,%s,%s,%s,'published',%s,%s) ON CONFLICT DO NOTHING",
                [(b.route, b.batch_id, min(b.seqs) if b.seqs else None, max(b.seqs) if b.seqs else None,
                  json.dumps(b.refs), len(b.refs), now, generation) for b in batches])


def published_upto(conn: Any, route: str) -> int | None:
    row = conn.execute("SELECT published_upto FROM cluster_routes WHERE route = %s", (route,)).fetchone()
    return None if row is None or int(row[0]) < 0 else int(row[0])


def open_batches(conn: Any, route: str) -> list[Batch]:
    rows = conn.execute("SELECT batch_id, refs FROM cluster_batches WHERE route = %s AND state = 'published' "
                        "ORDER BY seq_min NULLS LAST", (route,)).fetchall()
    return [Batch(route, str(b), json.loads(r)) for b, r in rows]


#: ``cluster_batches.reason`` of an open batch that a worker gave back because of its own configuration error
#: (refused credentials...): not the batch's fault, so a dead-lettered copy of it is published again, never
#: quarantined (a worker that stops may leave its prefetched copy to be redelivered, which counts toward the
#: delivery limit).
CONFIG_ERROR = "given back by a worker with a configuration error"


def note_config_error(conn: Any, route: str, batch_id: str) -> None:
    conn.execute("UPDATE cluster_batches SET reason = %s WHERE route = %s AND batch_id = %s AND state = 'published'",
                 (CONFIG_ERROR, route, batch_id))


def take_config_error(conn: Any, route: str, batch_id: str) -> bool:
    """Whether the open batch was given back for a worker's configuration error (the note is cleared)."""
    cur = conn.execute("UPDATE cluster_batches SET reason = NULL WHERE route = %s AND batch_id = %s "
                       "AND state = 'published' AND reason = %s", (route, batch_id, CONFIG_ERROR))
    return bool(cur.rowcount)


def mark(conn: Any, route: str, batch_id: str, state: str, *, worker: str | None = None,
         reason: str | None = None) -> bool:
    """Finish a batch (``done`` or ``dead``); ``False`` if it was already finished (a redelivery)."""
    cur = conn.execute(
        "UPDATE cluster_batches SET state = %s, finished = %s, worker = coalesce(%s, worker), reason = %s "
        "WHERE route = %s AND batch_id = %s AND state = 'published'",
        (state, time.time(), worker, reason, route, batch_id))
    return bool(cur.rowcount)


def watermark(conn: Any, route: str) -> int | None:
    """The newest sequence number below which every published change is finished (``None``: nothing yet)."""
    upto = published_upto(conn, route)
    if upto is None:
        return None
    row = conn.execute("SELECT min(seq_min) FROM cluster_batches WHERE route = %s AND state = 'published'",
                       (route,)).fetchone()
    if row is None or row[0] is None:
        return upto
    return min(upto, int(row[0]) - 1)


def prune(conn: Any, route: str, below: int) -> int:
    """Forget finished batches wholly below the checkpoint (the table stays small on a 10^8 migration)."""
    cur = conn.execute("DELETE FROM cluster_batches WHERE route = %s AND state <> 'published' AND seq_max <= %s",
                       (route, below))
    return int(cur.rowcount)


def heartbeat(conn: Any, worker: str, host: str, pid: int, started: float, *, batches: int, instances: int,
              current: str | None) -> None:
    conn.execute(
        "INSERT INTO cluster_workers (worker, host, pid, started, heartbeat, batches, instances, current) "
        "VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (worker) DO UPDATE SET heartbeat = EXCLUDED.heartbeat, "
        "batches = EXCLUDED.batches, instances = EXCLUDED.instances, current = EXCLUDED.current, "
        "pid = EXCLUDED.pid, started = EXCLUDED.started",
        (worker, host, pid, started, time.time(), batches, instances, current))
