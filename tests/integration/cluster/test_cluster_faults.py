"""Cluster mode under faults: real RabbitMQ, PostgreSQL, two Orthanc servers, ``copydicom run --role ...``.

- One planner, a standby planner and three workers replicate ``CLUSTER_N`` instances (600 by default, to keep CI
  time reasonable; the issue's figure is 2,000: ``CLUSTER_N=2000``) while a worker is SIGKILLed several times (and
  restarted) and the active planner once. The destination ends with exactly the source's set, no instance was
  stored twice (the destination has ``OverwriteInstances``: a second POST of an instance would be a second
  ``NewInstance`` change), the checkpoint never moved back, and the standby took over.
- A batch whose instance kills its worker every time ends in quarantine after the delivery limit, and its
  neighbours are delivered.
"""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.integration.conftest import changes_of, last_seq, load_ct, wait_until
from tests.support.cluster import ClusterBench, Proc
from tests.support.delay_proxy import DelayProxy
from tests.support.orthanc import OrthancServer, free_port
from tests.support.postgres import PostgresServer
from tests.support.rabbitmq import RabbitServer

pytestmark = pytest.mark.integration

N = int(os.environ.get("CLUSTER_N", "600"))
WORKER_KILLS = int(os.environ.get("CLUSTER_WORKER_KILLS", "5"))


@pytest.fixture
def bench(servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer,
          tmp_path: Path) -> Iterator[ClusterBench]:
    """A cluster whose destination answers through a proxy adding 50 ms per request (a distant PACS), with
    two threads per worker: the run lasts long enough for every kill to land mid-run."""
    source, dest = servers
    proxy = DelayProxy(dest.url, 0.05).start()
    made = ClusterBench(tmp_path, postgres, rabbit, source, dest, dest_url=proxy.url, workers=2)
    yield made
    made.stop_all()
    proxy.stop()


def _free_run(count: int) -> int:
    """A port ``p`` with ``p .. p+count`` free now (the planner serves its metrics on ``p``, worker i on
    ``p + i``)."""
    import socket

    for _ in range(50):
        base = free_port()
        try:
            for i in range(0, count + 1):
                with socket.socket() as sock:
                    sock.bind(("127.0.0.1", base + i))
        except OSError:
            continue
        return base
    raise RuntimeError("no run of free ports")


def _leading(proc: Proc) -> bool:
    return "leading (generation" in proc.log()


def _sampler(bench: ClusterBench, seen: list[int], stop: threading.Event) -> threading.Thread:
    def run() -> None:
        while not stop.wait(0.2):
            cp = bench.checkpoint()
            if cp is not None:
                seen.append(cp)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_workers_and_the_planner_killed_nothing_lost_nothing_twice(bench: ClusterBench) -> None:
    source, dest = bench.source, bench.dest
    expected = load_ct(source, N, seed="cluster", rows=16, series=6)
    dest_start = last_seq(dest)
    active = bench.start("planner")
    wait_until(lambda: _leading(active), timeout=60, what="the first planner to lead\n" + bench.logs())
    standby = bench.start("planner")
    workers = [bench.start("worker") for _ in range(3)]
    seen: list[int] = []
    stop = threading.Event()
    sampler = _sampler(bench, seen, stop)
    rng = random.Random(7)
    kills = 0
    planner_killed = False
    deadline = time.monotonic() + 180
    try:
        while time.monotonic() < deadline:
            count = int(dest.statistics()["CountInstances"])
            if count >= N and bench.checkpoint() == last_seq(source):
                break
            if not planner_killed and count >= N // 3:
                active.kill()  # the active planner dies once; the standby must take over
                planner_killed = True
            elif kills < WORKER_KILLS and count >= (kills + 1) * N // (WORKER_KILLS + 2):
                i = rng.randrange(len(workers))
                workers[i].kill()
                kills += 1
                workers[i] = bench.start("worker")
            time.sleep(0.3)
        else:
            raise AssertionError("the cluster did not finish in 180 s\n" + bench.logs())
        wait_until(lambda: set(dest.instance_ids()) == expected, timeout=30, what="the exact set")
    finally:
        stop.set()
        sampler.join(5)
    assert planner_killed and kills == WORKER_KILLS
    assert set(dest.instance_ids()) == expected
    stored = changes_of(dest, "NewInstance", since=dest_start)
    assert len(stored) == N, f"{len(stored) - N} instance(s) stored more than once"
    assert seen == sorted(seen), "the checkpoint moved back"
    assert _leading(standby), "the standby never took over\n" + bench.logs()
    generation, holder = bench.sql("SELECT generation, holder FROM cluster_fence WHERE name = %s", (bench.route,))[0]
    assert generation >= 2 and holder.endswith(f":{standby.pid}")
    assert bench.sql("SELECT count(*) FROM quarantine") == [(0,)]
    workers_seen = bench.sql("SELECT count(*) FROM cluster_workers")[0][0]
    assert workers_seen >= 3  # worker processes upsert heartbeat rows (status shows them)
    print(f"cluster: N={N}, worker kills={kills}, planner kills=1, checkpoint samples={len(seen)}")


def test_a_batch_that_kills_every_worker_ends_in_quarantine(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    source, dest = servers
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest, delivery_limit=2)
    try:
        _poison_run(bench)
    finally:
        bench.stop_all()


def _poison_run(bench: ClusterBench) -> None:
    source, dest = bench.source, bench.dest
    ids = sorted(load_ct(source, 12, seed="poison", rows=16, series=1))
    poison = ids[5]
    planner = bench.start("planner")
    workers = [bench.start("worker", poison={poison}) for _ in range(2)]

    def quarantined() -> bool:
        for i, w in enumerate(workers):
            if not w.running():  # a worker killed by the poison instance is restarted (systemd would)
                workers[i] = bench.start("worker", poison={poison})
        return bench.quarantined() == 1 and bench.checkpoint() == last_seq(source)

    wait_until(quarantined, timeout=120, interval=0.3, what="the poison instance in quarantine\n" + bench.logs())
    ((source_id, code, reason),) = bench.sql("SELECT source_id, code, reason FROM quarantine")
    assert (source_id, code) == (poison, "poison") and "delivered 2 times" in reason
    assert set(dest.instance_ids()) == set(ids) - {poison}
    assert planner.running()
    # status against the PostgreSQL state: checkpoint, queue depth, workers and their heartbeats
    done = subprocess.run([sys.executable, "-m", "copydicom.cli", "status", "--config", str(bench.config)],
                          env=bench.env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert f"checkpoint: {last_seq(source)}" in out and "quarantine poison: 1" in out, out
    assert f"cluster: queue {bench.queue}: 0 batch(es) waiting;" in out, out
    assert "(generation 1)" in out and ": active, last heartbeat" in out, out
    for secret in (bench.postgres.password, bench.env["CD_TEST_MQ_PW"]):
        assert secret not in out


def test_max_concurrency_holds_across_workers(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    """Three workers of four threads each, a destination limited to 2 uploads at once: never more than 2 POSTs
    in flight at the destination (counted by the proxy in front of it), and everything delivered. Each worker
    serves its own metrics (port + its index): together they count every instance once."""
    source, dest = servers
    proxy = DelayProxy(dest.url, 0.05).start()
    port = _free_run(3)
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest, dest_url=proxy.url, batch_size=10,
                         max_concurrency={"dst": 2}, metrics_port=port)
    try:
        ids = load_ct(source, 60, seed="slots", rows=16, series=3)
        bench.start("planner")
        for _ in range(3):
            bench.start("worker")
        wait_until(lambda: set(dest.instance_ids()) == ids, timeout=120, interval=0.3,
                   what="every instance\n" + bench.logs())
        assert 0 < proxy.peak_posts <= 2, proxy.peak_posts

        def stored() -> float:
            total = 0.0
            for i in (1, 2, 3):
                text = requests.get(f"http://127.0.0.1:{port + i}/metrics", timeout=10).text
                total += sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                             if line.startswith('copydicom_route_instances_total{') and 'outcome="stored"' in line)
            return total

        wait_until(lambda: stored() == 60, timeout=30, what="the workers' metrics to count 60 stored")
        # The planner's own metrics: every instance published once (no redelivery here), the lease held.
        text = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
        samples = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("copydicom_planner_")}
        assert samples['copydicom_planner_instances_published_total{route="copy"}'] == 60, samples
        assert samples['copydicom_planner_batches_published_total{route="copy"}'] >= 6, samples
        assert samples['copydicom_planner_leading{route="copy"}'] == 1
        assert samples['copydicom_planner_generation{route="copy"}'] >= 1
        assert "copydicom_planner_queue_depth" in samples and "copydicom_planner_backpressure_waits_total" in samples
    finally:
        bench.stop_all()
        proxy.stop()


def test_the_planner_detects_a_feed_reset_and_publishes_nothing(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    """A checkpoint 5,000 above the source's feed (a rebuilt source): the planner reports the reset, publishes
    nothing and keeps the checkpoint (the single-process runner's check, issue 11 item 2)."""
    from copydicom.model import FeedPosition
    from copydicom.state import PostgresStore

    source, dest = servers
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest)
    store = PostgresStore(bench.db_url, password=postgres.password)
    try:
        load_ct(source, 5, seed="reset", rows=16, series=1)
        raised = last_seq(source) + 5000
        store.write_batch(checkpoint=(bench.route, FeedPosition(raised, "gone")))
        planner = bench.start("planner")
        bench.start("worker")
        wait_until(lambda: "change feed reset detected" in planner.log(), timeout=60, interval=0.3,
                   what="the feed reset\n" + bench.logs())
        assert bench.checkpoint() == raised
        assert set(store.feed_resets()) == {bench.route}
        assert bench.sql("SELECT count(*) FROM cluster_batches") == [(0,)]
        assert dest.instance_ids() == []
    finally:
        store.close()
        bench.stop_all()


def test_refused_destination_credentials_stop_the_worker_and_quarantine_nothing(
    servers: tuple[OrthancServer, OrthancServer], postgres: PostgresServer, rabbit: RabbitServer, tmp_path: Path,
) -> None:
    """A configuration error on a worker (the destination refuses its password) is not the batch's fault: the
    batch is queued again (not toward the delivery limit), the worker exits 2, nothing is quarantined; a
    worker with the right password then delivers everything."""
    source, dest = servers
    bench = ClusterBench(tmp_path, postgres, rabbit, source, dest, delivery_limit=2)
    try:
        ids = load_ct(source, 8, seed="authfail", rows=16, series=1)
        bench.start("planner")
        good = bench.env["CD_TEST_DST_PW"]
        bench.env["CD_TEST_DST_PW"] = "wrong-password"
        bad = [bench.start("worker") for _ in range(2)]
        for proc in bad:
            wait_until(lambda: not proc.running(), timeout=60, interval=0.3, what="the worker to stop\n" + bench.logs())
            assert proc.proc is not None and proc.proc.returncode == 2, bench.logs()
        assert bench.quarantined() == 0 and dest.instance_ids() == []
        bench.env["CD_TEST_DST_PW"] = good
        bench.start("worker")
        wait_until(lambda: set(dest.instance_ids()) == ids, timeout=60, interval=0.3, what="delivery")
        assert bench.quarantined() == 0
    finally:
        bench.stop_all()
