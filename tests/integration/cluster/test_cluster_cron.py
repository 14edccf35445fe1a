"""Cron (index-query) routes in cluster mode: real RabbitMQ, PostgreSQL, two Orthanc servers, an SQLite index.

The elected planner runs the route's cron trigger (``* * * * *``: the test waits for the next minute) and
publishes the query's matches as work units; the active planner is SIGKILLed in the middle of the run (the queue
bound of 1 and a destination 50 ms away keep the run in its planning phase long enough). The standby takes over
and resumes the run from what PostgreSQL recorded: the destination ends with exactly the matched instances,
each stored once (``NewInstance`` changes at a destination with ``OverwriteInstances``), nothing of the other
series, one run for that fire time, ``done``. A query the index refuses marks its run ``failed`` with the
reason and the planner goes on.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.integration.conftest import changes_of, last_seq, load_ct, wait_until
from tests.support.cluster import ClusterBench, Proc
from tests.support.delay_proxy import DelayProxy
from tests.support.orthanc import OrthancServer
from tests.support.postgres import PostgresServer
from tests.support.rabbitmq import RabbitServer

pytestmark = pytest.mark.integration


def _leading(proc: Proc) -> bool:
    return "leading (generation" in proc.log()


def _cron_config(bench: ClusterBench, index: Path, query: str) -> None:
    data = yaml.safe_load(bench.config.read_text())
    data["endpoints"]["idx"] = {"type": "sqlite", "path": str(index)}
    data["routes"] = [{"name": bench.route, "source": "src", "destinations": ["dst"],
                       "trigger": {"cron": {"schedule": "* * * * *", "index": "idx", "query": query}}}]
    bench.config.write_text(yaml.safe_dump(data))


def _index(path: Path, ids: list[str]) -> Path:
    """An SQLite index naming instances by Orthanc ID (what the query returns)."""
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE picks (ID TEXT)")
        db.executemany("INSERT INTO picks VALUES (?)", [(i,) for i in ids])
    return path


def _runs(bench: ClusterBench) -> list[tuple[float, str, int, int]]:
    try:
        return [(float(f), str(s), int(p), int(n)) for f, s, p, n in bench.sql(
            "SELECT fire, state, planned, instances FROM cluster_cron_runs WHERE route = %s ORDER BY fire",
            (bench.route,))]
    except Exception:  # noqa: BLE001 - the table does not exist until the first process migrated
        return []


def test_a_cron_run_survives_the_loss_of_its_planner(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    source, dest = servers
    proxy = DelayProxy(dest.url, 0.05).start()
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest, dest_url=proxy.url, batch_size=4,
                         queue_bound=1, workers=2)
    try:
        load_ct(source, 160, seed="cron", rows=16, series=4)
        series = sorted(source.get("/series"))
        wanted: set[str] = set()
        for s in series[:3]:  # three of the four series match the query
            wanted.update(source.get(f"/series/{s}")["Instances"])
        _cron_config(bench, _index(tmp_path / "index.db", sorted(wanted)), "SELECT ID FROM picks")
        dest_start = last_seq(dest)
        active = bench.start("planner")
        wait_until(lambda: _leading(active), timeout=60, what="the first planner to lead\n" + bench.logs())
        standby = bench.start("planner")
        for _ in range(3):
            bench.start("worker")
        # The next minute's fire time; then the active planner dies while it is publishing the run.
        wait_until(lambda: any(p >= 6 for _f, _s, p, _n in _runs(bench)), timeout=90, interval=0.1,
                   what="the cron run to be planned\n" + bench.logs())
        ((fire, state, planned, _n),) = _runs(bench)
        active.kill()
        assert state == "planning", (state, planned)  # the kill lands in the planning phase
        wait_until(lambda: _runs(bench)[0][1] == "done", timeout=120, interval=0.3,
                   what="the standby to finish the run\n" + bench.logs())
        assert _leading(standby), bench.logs()
        assert "resuming the cron run" in standby.log(), standby.log()[-3000:]
        runs = _runs(bench)
        assert runs[0][0] == fire and runs[0][2] == len(wanted) // 4 and runs[0][3] == len(wanted), runs
        assert set(dest.instance_ids()) == wanted
        stored = changes_of(dest, "NewInstance", since=dest_start)
        assert len(stored) == len(wanted), f"{len(stored) - len(wanted)} instance(s) stored more than once"
        generation = bench.sql("SELECT generation FROM cluster_fence WHERE name = %s", (bench.route,))[0][0]
        assert generation >= 2
        assert bench.sql("SELECT count(*) FROM quarantine") == [(0,)]
        # status shows the run
        done = subprocess.run([sys.executable, "-m", "copydicom.cli", "status", "--config", str(bench.config)],
                              env=bench.env, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(fire))
        assert f"route {bench.route}: cron run of {when}Z done, {len(wanted)} instance(s) in " in done.stdout, \
            done.stdout
    finally:
        bench.stop_all()
        proxy.stop()


def test_a_refused_query_fails_its_run_and_the_planner_goes_on(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    source, dest = servers
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest)
    try:
        _cron_config(bench, _index(tmp_path / "index.db", []), "SELECT ID FROM no_such_table")
        planner = bench.start("planner")
        wait_until(lambda: any(s == "failed" for _f, s, _p, _n in _runs(bench)), timeout=90, interval=0.3,
                   what="the run to fail\n" + bench.logs())
        reason = bench.sql("SELECT reason FROM cluster_cron_runs WHERE route = %s", (bench.route,))[0][0]
        assert "no_such_table" in reason
        assert planner.running()
        assert bench.sql("SELECT count(*) FROM cluster_batches") == [(0,)]
    finally:
        bench.stop_all()
