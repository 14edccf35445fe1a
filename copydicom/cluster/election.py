"""One planner per route: a PostgreSQL session advisory lock on a dedicated connection, and a fencing token.

Why PostgreSQL and not the broker: the planner's checkpoint lives in PostgreSQL,
so the same server that stores it decides who may write it, and the fencing
check is in the same statement as the write (no clock, no lease to renew).

- **Lock.** ``pg_try_advisory_lock(k1, k2)`` on a connection used for nothing
  else (a pooled connection could be handed to another thread, or recycled,
  and the lock with it). A session lock is released by the server when the
  session ends, so a planner that dies or loses its host releases it as soon
  as PostgreSQL notices the session is gone. To notice in seconds, not when
  TCP gives up (hours), the session sets ``idle_session_timeout`` (the server
  ends a session idle for that long: the planner's heartbeat keeps a live one
  busy), server-side TCP keepalives and ``tcp_user_timeout``; the client sets
  libpq keepalives too.
- **Fencing token.** Each takeover bumps ``cluster_fence.generation`` for the
  route. Every checkpoint write is conditional on the generation still being
  the writer's (:meth:`PlannerLease.fenced_update`): a planner that lost its
  lock (paused for a minute by a GC or a VM migration, its session killed
  meanwhile) cannot move the checkpoint that its successor now owns.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from copydicom.errors import FatalError, RetryableError

log = logging.getLogger(__name__)

#: Server-side settings of the lock session (seconds unless said): see the module docstring.
SESSION_OPTIONS = (
    "-c idle_session_timeout=10000 -c tcp_keepalives_idle=5 -c tcp_keepalives_interval=2 "
    "-c tcp_keepalives_count=3 -c tcp_user_timeout=10000 -c application_name=copydicom-planner"
)
CLIENT_KEEPALIVES: dict[str, Any] = {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
                     "tcp_user_timeout": 10000, "connect_timeout": 5}

FENCE_SCHEMA = """
CREATE TABLE IF NOT EXISTS cluster_fence (
    name TEXT PRIMARY KEY, generation BIGINT NOT NULL, holder TEXT NOT NULL, since DOUBLE PRECISION NOT NULL)
"""


class FencedOff(FatalError):
    """This planner lost its lock: another one took over; stop planning (never write the checkpoint)."""


def lock_keys(name: str) -> tuple[int, int]:
    """Two signed 32-bit advisory-lock keys for a name (a digest: names are not secret, but fixed width)."""
    digest = hashlib.sha256(f"copydicom-planner:{name}".encode()).digest()
    return (int.from_bytes(digest[:4], "big", signed=True), int.from_bytes(digest[4:8], "big", signed=True))


def connect_dedicated(dsn: str, *, password: str | None = None) -> Any:
    """A connection used only for the lock (autocommit; keepalives on both sides)."""
    import psycopg

    try:
        return psycopg.connect(dsn, password=password, autocommit=True, options=SESSION_OPTIONS,
                               **CLIENT_KEEPALIVES)
    except psycopg.OperationalError as exc:
        raise RetryableError(f"planner lock: cannot connect to PostgreSQL: {type(exc).__name__}") from None


class PlannerLease:
    """Holds (or waits for) the planner role of ``name`` (a route, or ``*`` for all routes).

    Parameters
    ----------
    connect
        Opens a new dedicated connection (:func:`connect_dedicated` with the state's DSN).
    name
        What is being led.
    holder
        A description of this process for ``status`` (host and PID; no secrets).
    heartbeat
        Seconds between heartbeats on the lock connection (must stay well below
        ``idle_session_timeout``: 10 s).
    """

    def __init__(self, connect: Callable[[], Any], name: str, *, holder: str, heartbeat: float = 2.0) -> None:
        self._connect = connect
        self.name = name
        self.holder = holder
        self.heartbeat = heartbeat
        self.generation: int | None = None
        self._conn: Any = None
        self._lock = threading.Lock()
        self._beat: threading.Thread | None = None
        self._stop = threading.Event()
        self.lost = threading.Event()

    # -- acquiring -------------------------------------------------------------------------

    def try_acquire(self) -> int | None:
        """Take the lock if free; return the new fencing generation, or ``None`` (someone else leads)."""
        with self._lock:
            if self._conn is None or self._conn.closed:
                self._conn = self._connect()
            k1, k2 = lock_keys(self.name)
            got = self._conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (k1, k2)).fetchone()[0]
            if not got:
                return None
            self._conn.execute(FENCE_SCHEMA)
            row = self._conn.execute(
                "INSERT INTO cluster_fence (name, generation, holder, since) VALUES (%s, 1, %s, %s) "
                "ON CONFLICT (name) DO UPDATE SET generation = cluster_fence.generation + 1, "
                "holder = EXCLUDED.holder, since = EXCLUDED.since RETURNING generation",
                (self.name, self.holder, time.time())).fetchone()
            self.generation = int(row[0])
            self.lost.clear()
            self._start_heartbeat()
            log.info("planner %s: leading (generation %d)", self.name, self.generation)
            return self.generation

    def acquire(self, stop: threading.Event, *, poll: float = 1.0) -> int | None:
        """Wait as a standby until the lock is ours or ``stop`` is set."""
        announced = False
        while not stop.is_set():
            try:
                generation = self.try_acquire()
            except RetryableError as exc:
                log.warning("planner %s: %s; trying again", self.name, exc)
                generation = None
                self._drop()
            if generation is not None:
                return generation
            if not announced:
                log.info("planner %s: another planner leads; standing by", self.name)
                announced = True
            stop.wait(poll)
        return None

    # -- holding ---------------------------------------------------------------------------

    def _start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._heartbeat, name=f"copydicom-lease-{self.name}", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(self.heartbeat):
            try:
                with self._lock:
                    self._conn.execute("SELECT 1")
            except Exception as exc:  # noqa: BLE001 - any failure of the lock session means the lock is gone
                log.error("planner %s: lock session lost (%s): stepping down", self.name, type(exc).__name__)
                self.lost.set()
                self._drop()
                return

    def fenced_update(self, conn: Any, sql: str, params: Sequence[Any]) -> int:
        """Run a write only while this planner's generation is current; raise :class:`FencedOff` otherwise.

        ``sql`` must contain ``{fence}``, replaced by a condition on the generation, e.g.
        ``UPDATE checkpoints SET seq = %s WHERE route = %s AND {fence}``.
        """
        if self.generation is None or self.lost.is_set():
            raise FencedOff(f"planner {self.name}: not leading")
        statement = sql.replace(
            "{fence}", "(SELECT generation FROM cluster_fence WHERE name = %s) = %s")
        cursor = conn.execute(statement, (*params, self.name, self.generation))
        if cursor.rowcount == 0:
            current = conn.execute("SELECT generation FROM cluster_fence WHERE name = %s", (self.name,)).fetchone()
            if current is None or int(current[0]) != self.generation:
                self.lost.set()
                raise FencedOff(f"planner {self.name}: generation {self.generation} was superseded")
        return int(cursor.rowcount)

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - closing a broken connection may fail; it is gone either way
                pass

    def __enter__(self) -> PlannerLease:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def release(self) -> None:
        """Give the role up (the session ends: the lock goes with it)."""
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(5)
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                try:  # at once: a closed session's locks go only when its backend has finished exiting
                    self._conn.execute("SELECT pg_advisory_unlock_all()")
                except Exception:  # noqa: BLE001 - the session is being dropped anyway
                    pass
            self._drop()
        self.generation = None
