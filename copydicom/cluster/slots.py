"""A destination's ``max_concurrency`` across the whole cluster: PostgreSQL advisory locks as slots.

A clinical PACS must not receive 40 parallel uploads because 20 workers
started. Before a worker runs a batch it takes up to ``want`` of the
destination's ``max_concurrency`` slots (session advisory locks
``(destination key, slot number)`` on its own connection), runs the batch with
as many threads as slots it holds, and gives them back. Why this mechanism:

- the bound holds whatever the number of workers and hosts, and needs no
  counter to repair: a worker that dies, or whose host vanishes, loses its
  session and the server releases its slots (the same keepalive and
  ``idle_session_timeout`` settings as the planner lock);
- it costs one round trip per slot per batch (a batch is a series or a few
  hundred instances), not per instance;
- the broker cannot express it: RabbitMQ limits what one consumer takes
  (prefetch), not what all consumers do at once.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any


def _key(destination: str) -> int:
    digest = hashlib.sha256(f"copydicom-slots:{destination}".encode()).digest()
    return int.from_bytes(digest[:4], "big", signed=True)


class DestinationSlots:
    """Slots of one destination, taken on a connection owned by this object (one per worker process).

    Parameters
    ----------
    connect
        Opens the dedicated connection (autocommit, keepalives: see :mod:`.election`).
    destination
        The destination's name (the same on every host).
    limit
        ``max_concurrency`` of that destination.
    """

    def __init__(self, connect: Callable[[], Any], destination: str, limit: int) -> None:
        self._connect = connect
        self.destination = destination
        self.limit = max(1, limit)
        self._conn: Any = None
        self._lock = threading.Lock()

    def _conn_ok(self) -> Any:
        if self._conn is None or self._conn.closed:
            self._conn = self._connect()
        return self._conn

    def try_take(self, want: int) -> list[int]:
        """Take up to ``want`` free slots now; return their numbers (maybe none).

        The connection may have been ended by the server while idle (``idle_session_timeout``):
        one new connection is tried before giving up (slots of an ended session are free again).
        """
        for attempt in (1, 2):
            try:
                return self._take(want)
            except Exception:  # noqa: BLE001 - a dead session: its locks are gone with it
                self._drop()
                if attempt == 2:
                    raise
        return []

    def _take(self, want: int) -> list[int]:
        key = _key(self.destination)
        taken: list[int] = []
        with self._lock:
            conn = self._conn_ok()
            for slot in range(self.limit):
                if len(taken) >= want:
                    break
                if conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (key, slot)).fetchone()[0]:
                    taken.append(slot)
        return taken

    def give_back(self, slots: list[int]) -> None:
        key = _key(self.destination)
        try:
            with self._lock:
                if self._conn is None or self._conn.closed:
                    return  # the session is gone, and its locks with it
                for slot in slots:
                    self._conn.execute("SELECT pg_advisory_unlock(%s, %s)", (key, slot))
        except Exception:  # noqa: BLE001 - a dead session has released them already
            self._drop()

    def _drop(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:  # noqa: BLE001 - it is gone either way
                pass

    @contextmanager
    def hold(self, want: int, stop: threading.Event, *, poll: float = 0.2) -> Iterator[int]:
        """Wait for at least one slot (up to ``want``); yield how many are held; give them back after."""
        taken: list[int] = []
        while not stop.is_set():
            taken = self.try_take(want)
            if taken:
                break
            stop.wait(poll)
        try:
            yield len(taken)
        finally:
            if taken:
                self.give_back(taken)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
