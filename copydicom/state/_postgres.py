"""The PostgreSQL state store (``state: postgresql://user@host/db``): the cluster's one source of truth.

Same interface as :class:`~copydicom.state.SqliteStore` (:class:`~copydicom.state.Store`),
so the ledger, the index spool and the mapping store run unchanged on it.

Connection policy: a :class:`psycopg_pool.ConnectionPool` (psycopg 3) shared by the
threads of a process; every method is one transaction on one pooled connection
(``with pool.connection()`` commits on success and rolls back on error). Batched
writes use ``executemany``, which psycopg 3 sends in pipeline mode (one round trip
per batch, not per row): a worker records a whole work unit's deliveries at once.
Client-side TCP keepalives are on for pooled connections too, so a lost server is
noticed in seconds. Route locks (one process per route feed, single-process role)
are advisory locks on a dedicated connection, through
:class:`~copydicom.cluster.election.PlannerLease`: the lock the cluster's planner
election uses, so a ``--role all`` process and a planner exclude each other too.

Why PostgreSQL and not SQLite for a cluster: SQLite's file lock cannot be shared
across hosts; PostgreSQL serves concurrent writers from many hosts, and its advisory
locks give the planner election and the destination slots without another service.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from copydicom.errors import LedgerError
from copydicom.model import FeedPosition
from copydicom.state._errors import RouteLocked
from copydicom.state._protocol import (
    Audit,
    Delivery,
    DeliveryCount,
    FeedReset,
    QuarantineEntry,
    ReconcileRunRow,
    SpoolRow,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMES = ("postgresql://", "postgres://")
#: Client-side keepalives for pooled connections (the lock sessions add server-side limits).
POOL_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 10, "keepalives_interval": 3,
                                   "keepalives_count": 3, "connect_timeout": 10}


class PostgresTarget(str):
    """A PostgreSQL state URL (``postgresql://user@host:port/db``) and its password, kept apart.

    A ``str`` (so the views that take "a path or a store" pass it on to
    :func:`copydicom.state.open_store` unchanged); the password is never part of
    the string, so it is never in a log line or ``status``.
    """

    password: str | None

    def __new__(cls, url: str, password: str | None = None) -> PostgresTarget:
        self = super().__new__(cls, url)
        self.password = password
        return self


def is_postgres(location: object) -> bool:
    return isinstance(location, str) and location.startswith(SCHEMES)


def _entry(row: Any) -> QuarantineEntry:
    route, source_id, code, reason, path, at, files = row
    return QuarantineEntry(route, source_id, code, reason, path, float(at), tuple(json.loads(files or "[]")))


_Q_COLUMNS = "route, source_id, code, reason, path, at, files"


class PostgresStore:
    """The :class:`~copydicom.state.Store` in one PostgreSQL database (see the module docstring).

    Parameters
    ----------
    url
        ``postgresql://user@host:port/db`` (no password in it; libpq's ``PGPASSWORD``/``.pgpass``
        work too when ``password`` is ``None``).
    password
        The role's password (from ``${ENV}`` or a ``*_file``).
    pool_size
        Most connections this process opens (threads wait for one beyond that).
    """

    def __init__(self, url: str, *, password: str | None = None, pool_size: int = 8) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        from copydicom.state._pgschema import migrate

        self.url = str(url)
        self.location = self.url
        self.password = password
        self._index_names: set[str] = set()
        self._refs = 0
        kwargs: dict[str, Any] = {"password": password, **POOL_KEEPALIVES} if password else dict(POOL_KEEPALIVES)
        self._pool = ConnectionPool(self.url, min_size=1, max_size=max(2, pool_size), kwargs=kwargs, open=False,
                                    name="copydicom-state", timeout=60)
        try:
            self._pool.open(wait=True, timeout=10)
            with self._pool.connection() as conn:
                migrate(conn, self.url)
        except (psycopg.Error, Exception) as exc:
            self._pool.close()
            if isinstance(exc, LedgerError):
                raise
            raise LedgerError(f"cannot open the state {self.url}: {type(exc).__name__}: {exc}") from None

    # -- connections -------------------------------------------------------------------------

    def _tx(self, what: str, body: Callable[[Any], T]) -> T:
        """Run ``body(conn)`` in one transaction on a pooled connection."""
        import psycopg

        try:
            with self._pool.connection() as conn:
                with conn.transaction():
                    return body(conn)
        except psycopg.Error as exc:
            raise LedgerError(f"state {what} failed: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None

    def _read(self, sql: str, params: Any = ()) -> list[Any]:
        return self._tx("read", lambda conn: conn.execute(sql, params).fetchall())

    def connect_dedicated(self) -> Any:
        """A new connection outside the pool for a session lock (planner lease, slots, route lock)."""
        from copydicom.cluster.election import connect_dedicated

        return connect_dedicated(self.url, password=self.password)

    def schema_version(self) -> int:
        from copydicom.state._pgschema import current_version

        return self._tx("read", current_version)

    def probe_write(self) -> None:
        self._tx("probe", lambda conn: conn.execute("SELECT pg_current_xact_id()"))

    def lock_route(self, route: str) -> Any:
        from copydicom.cluster.election import PlannerLease

        lease = PlannerLease(self.connect_dedicated, route, holder=f"{socket.gethostname()}:{os.getpid()}")
        if lease.try_acquire() is None:
            lease.release()
            raise RouteLocked(
                f"route {route}: another copydicom process already follows this route with the state "
                f"{self.url} (a planner or a single-process daemon); refusing to start a second one "
                "(it would send every instance twice)."
            )
        return lease

    def close(self) -> None:
        with _STORES_LOCK:
            self._refs -= 1
            if self._refs > 0:
                return
            if _STORES.get(self.url) is self:
                del _STORES[self.url]
        self._pool.close()

    # -- ledger ------------------------------------------------------------------------------

    def register_index(self, destination: str) -> None:
        self._index_names.add(destination)

    def write_batch(
        self,
        *,
        deliveries: list[Delivery] | None = None,
        audits: list[Audit] | None = None,
        checkpoint: tuple[str, FeedPosition] | None = None,
        settled: list[tuple[str, str]] | None = None,
    ) -> list[QuarantineEntry]:
        if not (deliveries or audits or checkpoint or settled):
            return []

        def body(conn: Any) -> list[QuarantineEntry]:
            released: list[QuarantineEntry] = []
            if deliveries:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO delivered (destination, target_id, source_id, route, outcome, at, source_md5, "
                        "kind) VALUES (%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (destination, target_id) DO UPDATE SET "
                        "source_id = EXCLUDED.source_id, route = EXCLUDED.route, outcome = EXCLUDED.outcome, "
                        "at = EXCLUDED.at, source_md5 = EXCLUDED.source_md5, kind = EXCLUDED.kind",
                        [(*row, "index" if row[0] in self._index_names else "image") for row in deliveries],
                    )
            if audits:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO audit VALUES (%s,%s,%s,%s,%s) ON CONFLICT (route, target_id, stage) "
                        "DO UPDATE SET actions = EXCLUDED.actions, at = EXCLUDED.at", audits)
            if checkpoint is not None:
                route, pos = checkpoint
                conn.execute(
                    "INSERT INTO checkpoints AS c (route, seq, updated, resource) VALUES (%s,%s,%s,%s) "
                    "ON CONFLICT (route) DO UPDATE SET seq = greatest(c.seq, EXCLUDED.seq), "
                    "updated = EXCLUDED.updated, resource = CASE WHEN EXCLUDED.seq > c.seq OR "
                    "(EXCLUDED.seq = c.seq AND EXCLUDED.resource IS NOT NULL) THEN EXCLUDED.resource "
                    "ELSE c.resource END",
                    (route, pos.seq, time.time(), pos.resource),
                )
            if settled and conn.execute("SELECT 1 FROM quarantine LIMIT 1").fetchone():
                for route, source_id in settled:
                    row = conn.execute(
                        f"DELETE FROM quarantine WHERE route=%s AND source_id=%s RETURNING {_Q_COLUMNS}",
                        (route, source_id)).fetchone()
                    if row is not None:
                        released.append(_entry(row))
            return released

        return self._tx("write", body)

    def deliveries_among(self, destination: str, target_ids: list[str]) -> set[str]:
        if not target_ids:
            return set()
        rows = self._read("SELECT target_id FROM delivered WHERE destination=%s AND target_id = ANY(%s)",
                          (destination, list(target_ids)))
        return {r[0] for r in rows}

    def deliveries_md5(self, destination: str, target_ids: list[str]) -> dict[str, str]:
        if not target_ids:
            return {}
        rows = self._read(
            "SELECT target_id, source_md5 FROM delivered WHERE destination=%s AND target_id = ANY(%s) "
            "AND source_md5 IS NOT NULL", (destination, list(target_ids)))
        return {r[0]: r[1] for r in rows}

    def iter_deliveries(self, destination: str) -> Iterator[tuple[str, str]]:
        for row in self._read("SELECT target_id, source_id FROM delivered WHERE destination=%s", (destination,)):
            yield row[0], row[1]

    def delivery_counts(self) -> list[DeliveryCount]:
        rows = self._read(
            "SELECT route, destination, kind, outcome, count(*) FROM delivered "
            "GROUP BY route, destination, kind, outcome ORDER BY route, kind, destination, outcome")
        return [DeliveryCount(r[0], r[1], r[2], r[3], int(r[4])) for r in rows]

    def checkpoint(self, route: str) -> FeedPosition | None:
        rows = self._read("SELECT seq, resource FROM checkpoints WHERE route=%s", (route,))
        return FeedPosition(int(rows[0][0]), rows[0][1]) if rows else None

    def rebase_checkpoint(self, route: str, position: FeedPosition) -> None:
        def body(conn: Any) -> None:
            conn.execute(
                "INSERT INTO checkpoints (route, seq, updated, resource) VALUES (%s,%s,%s,%s) ON CONFLICT (route) "
                "DO UPDATE SET seq = EXCLUDED.seq, updated = EXCLUDED.updated, resource = EXCLUDED.resource",
                (route, position.seq, time.time(), position.resource))
            conn.execute("DELETE FROM feed_resets WHERE route=%s", (route,))

        self._tx("rebase", body)

    def audit_of(self, route: str, target_id: str) -> dict[str, Any]:
        rows = self._read("SELECT stage, actions FROM audit WHERE route=%s AND target_id=%s", (route, target_id))
        return {stage: json.loads(actions) for stage, actions in rows}

    # -- quarantine ----------------------------------------------------------------------------

    def quarantine_put(self, route: str, source_id: str, code: str, reason: str, path: str | None) -> None:
        def body(conn: Any) -> None:
            row = conn.execute("SELECT path, files FROM quarantine WHERE route=%s AND source_id=%s FOR UPDATE",
                               (route, source_id)).fetchone()
            files: list[str] = json.loads(row[1] or "[]") if row else []
            kept = path if path is not None or row is None else row[0]
            if kept and kept not in files:
                files.append(kept)
            conn.execute(
                f"INSERT INTO quarantine ({_Q_COLUMNS}) VALUES (%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (route, source_id) "
                "DO UPDATE SET code = EXCLUDED.code, reason = EXCLUDED.reason, path = EXCLUDED.path, "
                "at = EXCLUDED.at, files = EXCLUDED.files",
                (route, source_id, code, reason, kept, time.time(), json.dumps(files)))

        self._tx("quarantine", body)

    def quarantine_release(self, route: str, source_id: str) -> QuarantineEntry | None:
        rows = self._tx("release", lambda conn: conn.execute(
            f"DELETE FROM quarantine WHERE route=%s AND source_id=%s RETURNING {_Q_COLUMNS}",
            (route, source_id)).fetchall())
        return _entry(rows[0]) if rows else None

    def quarantine_entries(self, route: str | None = None) -> list[QuarantineEntry]:
        sql = f"SELECT {_Q_COLUMNS} FROM quarantine"
        rows = self._read(sql + (" WHERE route=%s" if route else "") + " ORDER BY at", (route,) if route else ())
        return [_entry(row) for row in rows]

    def quarantine_older_than(self, when: float) -> list[QuarantineEntry]:
        rows = self._read(f"SELECT {_Q_COLUMNS} FROM quarantine WHERE at < %s ORDER BY at", (when,))
        return [_entry(row) for row in rows]

    def quarantine_oldest(self) -> float | None:
        rows = self._read("SELECT min(at) FROM quarantine")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- feed resets ---------------------------------------------------------------------------

    def feed_reset_put(self, reset: FeedReset) -> None:
        self._tx("feed reset", lambda conn: conn.execute(
            "INSERT INTO feed_resets VALUES (%s,%s,%s,%s,%s,%s) ON CONFLICT (route) DO UPDATE SET "
            "checkpoint = EXCLUDED.checkpoint, resource = EXCLUDED.resource, "
            "source_last = EXCLUDED.source_last, reason = EXCLUDED.reason",
            (reset.route, reset.detected, reset.checkpoint, reset.resource, reset.source_last, reset.reason)))

    def feed_reset_clear(self, route: str) -> None:
        self._tx("feed reset", lambda conn: conn.execute("DELETE FROM feed_resets WHERE route=%s", (route,)))

    def feed_resets(self) -> dict[str, FeedReset]:
        rows = self._read("SELECT route, detected, checkpoint, resource, source_last, reason FROM feed_resets")
        return {r[0]: FeedReset(r[0], float(r[1]), int(r[2]), r[3], None if r[4] is None else int(r[4]), r[5])
                for r in rows}

    # -- index spool ---------------------------------------------------------------------------

    def spool_enqueue(self, sink: str, documents: Iterable[tuple[str, str, str]]) -> int:
        docs = list(documents)
        if not docs:
            return 0
        now = time.time()

        def body(conn: Any) -> int:
            delivered = dict(conn.execute(
                "SELECT doc_id, doc_hash FROM spool_delivered WHERE sink=%s AND doc_id = ANY(%s)",
                (sink, [d[0] for d in docs])).fetchall())
            fresh = [(sink, d, h, b, now) for d, h, b in docs if delivered.get(d) != h]
            if fresh:
                with conn.cursor() as cur:
                    cur.executemany(
                        "INSERT INTO spool_pending (sink, doc_id, doc_hash, body, queued_at) VALUES (%s,%s,%s,%s,%s) "
                        "ON CONFLICT (sink, doc_id) DO UPDATE SET doc_hash = EXCLUDED.doc_hash, body = EXCLUDED.body",
                        fresh)
            return len(fresh)

        return self._tx("spool enqueue", body)

    def spool_next(self, sink: str, limit: int) -> list[SpoolRow]:
        rows = self._read("SELECT seq, doc_hash, body FROM spool_pending WHERE sink=%s ORDER BY seq LIMIT %s",
                          (sink, limit))
        return [(int(seq), str(h), str(body)) for seq, h, body in rows]

    def spool_mark_delivered(self, sink: str, rows: list[tuple[int, str, str]]) -> None:
        now = time.time()

        def body(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany("DELETE FROM spool_pending WHERE seq=%s AND doc_hash=%s",
                                [(seq, digest) for seq, digest, _ in rows])
                cur.executemany(
                    "INSERT INTO spool_delivered VALUES (%s,%s,%s,%s) ON CONFLICT (sink, doc_id) DO UPDATE SET "
                    "doc_hash = EXCLUDED.doc_hash, delivered_at = EXCLUDED.delivered_at",
                    [(sink, doc_id, digest, now) for _, digest, doc_id in rows])

        if rows:
            self._tx("spool delivered", body)

    def spool_mark_rejected(self, sink: str, rows: list[tuple[int, str, str]], reasons: dict[str, str]) -> int:
        now = time.time()
        chosen = [(seq, doc_id, body) for seq, doc_id, body in rows if doc_id in reasons]

        def body(conn: Any) -> int:
            for seq, doc_id, text in chosen:
                conn.execute("DELETE FROM spool_pending WHERE seq=%s", (seq,))
                conn.execute(
                    "INSERT INTO spool_rejected VALUES (%s,%s,%s,%s,%s) ON CONFLICT (sink, doc_id) DO UPDATE SET "
                    "reason = EXCLUDED.reason, body = EXCLUDED.body, rejected_at = EXCLUDED.rejected_at",
                    (sink, doc_id, reasons[doc_id], text, now))
            return len(chosen)

        return self._tx("spool rejected", body) if chosen else 0

    def spool_mark_failed(self, sink: str, seqs: list[int], error: str) -> None:
        if seqs:
            self._tx("spool failed", lambda conn: conn.execute(
                "UPDATE spool_pending SET attempts = attempts + 1, last_error = %s WHERE seq = ANY(%s)",
                (error[:500], list(seqs))))

    def spool_pending(self, sink: str) -> int:
        return int(self._read("SELECT count(*) FROM spool_pending WHERE sink=%s", (sink,))[0][0])

    def spool_delivered_among(self, sink: str, doc_ids: list[str]) -> set[str]:
        if not doc_ids:
            return set()
        rows = self._read("SELECT doc_id FROM spool_delivered WHERE sink=%s AND doc_id = ANY(%s)",
                          (sink, list(doc_ids)))
        return {r[0] for r in rows}

    def spool_forget_delivered(self, sink: str, doc_ids: list[str]) -> None:
        self._tx("spool forget", lambda conn: conn.execute(
            "DELETE FROM spool_delivered WHERE sink=%s AND doc_id = ANY(%s)", (sink, list(doc_ids))))

    def spool_rejected(self, sink: str) -> dict[str, str]:
        rows = self._read("SELECT doc_id, reason FROM spool_rejected WHERE sink=%s ORDER BY rejected_at", (sink,))
        return {r[0]: r[1] for r in rows}

    def spool_sizes(self) -> dict[str, int]:
        rows = self._read("SELECT sink, count(*) FROM spool_pending GROUP BY sink ORDER BY sink")
        return {str(sink): int(n) for sink, n in rows}

    def spool_rejected_older_than(self, when: float) -> list[tuple[str, str, float]]:
        rows = self._read("SELECT sink, doc_id, rejected_at FROM spool_rejected WHERE rejected_at < %s", (when,))
        return [(str(s), str(d), float(t)) for s, d, t in rows]

    def spool_drop_rejected(self, sink: str, doc_id: str) -> None:
        self._tx("spool purge", lambda conn: conn.execute(
            "DELETE FROM spool_rejected WHERE sink=%s AND doc_id=%s", (sink, doc_id)))

    def spool_rejected_oldest(self) -> float | None:
        rows = self._read("SELECT min(rejected_at) FROM spool_rejected")
        return None if not rows or rows[0][0] is None else float(rows[0][0])

    # -- de-identification mapping ---------------------------------------------------------------

    def mapping_add(self, rows: Iterable[tuple[str, str, str]]) -> None:
        items = list(rows)

        def body(conn: Any) -> None:
            with conn.cursor() as cur:
                cur.executemany("INSERT INTO deid_map (kind, id_old, id_new) VALUES (%s,%s,%s) "
                                "ON CONFLICT DO NOTHING", items)

        if items:
            self._tx("mapping", body)

    def mapping_pairs(self, kind: str) -> list[tuple[str, str]]:
        rows = self._read("SELECT id_old, id_new FROM deid_map WHERE kind=%s ORDER BY id_old", (kind,))
        return [(str(a), str(b)) for a, b in rows]

    # -- reconcile and the console ----------------------------------------------------------

    def routed_among(self, destination: str, route: str, target_ids: list[str]) -> set[str]:
        if not target_ids:
            return set()
        rows = self._read("SELECT target_id FROM delivered WHERE destination=%s AND route=%s AND target_id = ANY(%s)",
                          (destination, route, list(target_ids)))
        return {r[0] for r in rows}

    def forget_deliveries(self, destination: str, target_ids: list[str]) -> None:
        if target_ids:
            self._tx("forget", lambda conn: conn.execute(
                "DELETE FROM delivered WHERE destination=%s AND target_id = ANY(%s)", (destination, list(target_ids))))

    def delivered_per_slot(self, since: float, slot_seconds: float) -> list[tuple[str, int, int]]:
        rows = self._read(
            "SELECT route, CAST(floor((at - %s) / %s) AS INTEGER) AS slot, count(*) FROM delivered "
            "WHERE at >= %s AND kind = 'image' GROUP BY route, slot", (since, slot_seconds, since))
        return [(str(r), int(slot), int(n)) for r, slot, n in rows]

    def reconcile_run_put(self, row: ReconcileRunRow) -> None:
        self._tx("reconcile run", lambda conn: conn.execute(
            "INSERT INTO reconcile_runs (route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run) "
            "VALUES (%s,%s,%s,%s,%s,%s,%s,%s,%s) ON CONFLICT (route) DO UPDATE SET at = EXCLUDED.at, "
            "seconds = EXCLUDED.seconds, missing = EXCLUDED.missing, repaired = EXCLUDED.repaired, "
            "extra = EXCLUDED.extra, deleted = EXCLUDED.deleted, mismatched = EXCLUDED.mismatched, "
            "dry_run = EXCLUDED.dry_run", row))

    def reconcile_runs(self) -> list[ReconcileRunRow]:
        rows = self._read("SELECT route, at, seconds, missing, repaired, extra, deleted, mismatched, dry_run "
                          "FROM reconcile_runs ORDER BY route")
        return [(r[0], float(r[1]), float(r[2]), int(r[3]), int(r[4]), int(r[5]), int(r[6]), int(r[7]), bool(r[8]))
                for r in rows]

    # -- cluster (not part of the Store protocol: planner, workers and status use these) ----------

    def run(self, what: str, body: Callable[[Any], T]) -> T:
        """One transaction of the cluster's own tables (batches, heartbeats)."""
        return self._tx(what, body)


_STORES: dict[str, PostgresStore] = {}
_STORES_LOCK = threading.Lock()


def open_postgres(url: str, password: str | None = None) -> PostgresStore:
    """The process's store for a PostgreSQL URL (shared; each caller calls ``close()`` once)."""
    key = str(url)
    with _STORES_LOCK:
        store = _STORES.get(key)
        if store is None:
            store = PostgresStore(key, password=password if password is not None else getattr(url, "password", None))
            _STORES[key] = store
        store._refs += 1
        return store
