"""Planner election on a real PostgreSQL: one leader, a standby that takes over, a fenced-off old leader."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import psycopg
import pytest

from copydicom.cluster.election import FencedOff, PlannerLease, connect_dedicated
from tests.support.postgres import PostgresServer

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[3]


def _lease(pg: PostgresServer, name: str = "route-a", holder: str = "test") -> PlannerLease:
    return PlannerLease(lambda: connect_dedicated(pg.url, password=pg.password), name, holder=holder, heartbeat=0.5)


def _table(pg: PostgresServer) -> psycopg.Connection:
    conn = psycopg.connect(pg.url, password=pg.password, autocommit=True)
    conn.execute("CREATE TABLE IF NOT EXISTS cp (route TEXT PRIMARY KEY, seq BIGINT)")
    conn.execute("INSERT INTO cp VALUES ('route-a', 0) ON CONFLICT DO NOTHING")
    return conn


def test_one_leader_and_fenced_writes(postgres: PostgresServer) -> None:
    conn = _table(postgres)
    first, second = _lease(postgres), _lease(postgres)
    gen = first.try_acquire()
    assert gen is not None
    assert second.try_acquire() is None
    assert first.fenced_update(conn, "UPDATE cp SET seq = %s WHERE route = %s AND {fence}", (10, "route-a")) == 1
    first.release()
    gen2 = second.try_acquire()
    assert gen2 == gen + 1
    with pytest.raises(FencedOff):
        first.generation = gen  # a planner that believes it still leads
        first.lost.clear()
        first.fenced_update(conn, "UPDATE cp SET seq = %s WHERE route = %s AND {fence}", (99, "route-a"))
    assert conn.execute("SELECT seq FROM cp").fetchone()[0] == 10
    second.release()
    conn.close()


LEADER = textwrap.dedent("""
    import sys, time, psycopg
    from copydicom.cluster.election import PlannerLease, connect_dedicated
    url, password = sys.argv[1], sys.argv[2]
    lease = PlannerLease(lambda: connect_dedicated(url, password=password), "route-a", holder="frozen",
                         heartbeat=0.5)
    assert lease.try_acquire() is not None
    conn = psycopg.connect(url, password=password, autocommit=True)
    print("LEADING", lease.generation, flush=True)
    sys.stdin.readline()   # resumed after SIGCONT: try to move the checkpoint
    try:
        lease.fenced_update(conn, "UPDATE cp SET seq = %s WHERE route = %s AND {fence}", (666, "route-a"))
        print("WROTE", flush=True)
    except Exception as exc:
        print("REFUSED", type(exc).__name__, flush=True)
""")


def test_a_frozen_leader_loses_its_lock_in_seconds_and_cannot_write(postgres: PostgresServer) -> None:
    """A leader frozen with SIGSTOP (a lost host: no FIN, no RST) is replaced by the standby; once thawed,
    its checkpoint write is refused by the fencing token."""
    conn = _table(postgres)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-c", LEADER, postgres.url, postgres.password], env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = proc.stdout.readline()
        assert line.startswith("LEADING"), line
        old_generation = int(line.split()[1])
        standby = _lease(postgres, holder="standby")
        assert standby.try_acquire() is None
        os.kill(proc.pid, signal.SIGSTOP)
        frozen_at = time.monotonic()
        stop = threading.Event()
        timer = threading.Timer(60, stop.set)
        timer.start()
        generation = standby.acquire(stop, poll=0.25)
        timer.cancel()
        took = time.monotonic() - frozen_at
        assert generation == old_generation + 1, "the standby did not take over within 60 s"
        print(f"standby took over {took:.1f} s after the leader froze (idle_session_timeout 10 s)")
        standby.fenced_update(conn, "UPDATE cp SET seq = %s WHERE route = %s AND {fence}", (20, "route-a"))
        os.kill(proc.pid, signal.SIGCONT)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        verdict = proc.stdout.readline()
        assert verdict.startswith("REFUSED"), verdict
        assert conn.execute("SELECT seq FROM cp").fetchone()[0] == 20
        standby.release()
    finally:
        os.kill(proc.pid, signal.SIGCONT)
        proc.kill()
        proc.wait(10)
        conn.close()
