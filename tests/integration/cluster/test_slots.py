"""Destination slots on a real PostgreSQL: never more holders than max_concurrency, released on death."""

from __future__ import annotations

import threading
import time

import pytest

from copydicom.cluster.election import connect_dedicated
from copydicom.cluster.slots import DestinationSlots
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration


def test_twenty_workers_never_exceed_the_limit(postgres: PostgresServer) -> None:
    limit, peak, current = 3, [0], [0]
    guard = threading.Lock()
    stop = threading.Event()

    def worker() -> None:
        slots = DestinationSlots(lambda: connect_dedicated(postgres.url, password=postgres.password), "pacs", limit)
        for _ in range(3):
            with slots.hold(2, stop, poll=0.01) as n:
                with guard:
                    current[0] += n
                    peak[0] = max(peak[0], current[0])
                time.sleep(0.02)
                with guard:
                    current[0] -= n
        slots.close()

    threads = [threading.Thread(target=worker) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert peak[0] == limit  # reached, never passed


def test_a_dead_workers_slots_come_back(postgres: PostgresServer) -> None:
    connect = lambda: connect_dedicated(postgres.url, password=postgres.password)  # noqa: E731
    first, second = DestinationSlots(connect, "pacs2", 2), DestinationSlots(connect, "pacs2", 2)
    assert first.try_take(2) == [0, 1]
    assert second.try_take(1) == []
    first._conn.close()  # the worker's session ends (process death closes it the same way)
    deadline = time.monotonic() + 10
    got: list[int] = []
    while not got and time.monotonic() < deadline:
        got = second.try_take(2)
        time.sleep(0.05)
    assert got == [0, 1]
    second.close()
