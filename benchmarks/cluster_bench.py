#!/usr/bin/env python3
"""Cluster benchmark: single-process mode against planner + workers, same data, same run.

Starts a private PostgreSQL, RabbitMQ and two Orthanc servers on loopback, loads N synthetic CT instances
into the source, then, each time into an emptied destination:

1. ``copydicom run`` (``--role all``: one process, SQLite state, no broker);
2. ``copydicom run --role planner`` + 2 ``--role worker`` processes (PostgreSQL state, RabbitMQ);
3. with ``--delay`` seconds added to every destination request by a small proxy (a distant PACS, so that
   latency and not the two cores is the limit): 1, 2 and 4 workers.

Each figure is instances/s from the start of the processes to the last instance at the destination
(process start-up included, as an operator sees it), and the steady rate from the first to the last
arrival. Overheads per instance, counted in the same run: broker messages (batches published, retries
included) and PostgreSQL transactions (``pg_stat_database.xact_commit`` of the run's database) and rows
written (``tup_inserted + tup_updated + tup_deleted``).

Usage (keep it small on a shared 2-core machine)::

    python benchmarks/cluster_bench.py --n 200 [--delay 0.05] [--batch-size 25] [--route-workers 4]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.cluster import ClusterBench, Proc  # noqa: E402
from tests.support.delay_proxy import DelayProxy  # noqa: E402
from tests.support.orthanc import OrthancServer  # noqa: E402
from tests.support.postgres import PostgresServer  # noqa: E402
from tests.support.rabbitmq import RabbitServer  # noqa: E402
from tests.support.synthetic import ct_study_files, upload_all  # noqa: E402


def _wait_for(dest: OrthancServer, n: int, started: float, timeout: float = 600) -> tuple[float, float]:
    """Seconds from ``started`` to the first and to the n-th instance at ``dest``."""
    first = None
    while time.monotonic() - started < timeout:
        count = int(dest.statistics()["CountInstances"])
        if count and first is None:
            first = time.monotonic() - started
        if count >= n:
            return first or 0.0, time.monotonic() - started
        time.sleep(0.05)
    raise RuntimeError(f"timed out: {dest.statistics()['CountInstances']} of {n}")


def _cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (``/proc/PID/stat``), in seconds."""
    import os

    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pg_counters(bench: ClusterBench) -> tuple[int, int]:
    row = bench.sql("SELECT xact_commit, tup_inserted + tup_updated + tup_deleted FROM pg_stat_database "
                    "WHERE datname = current_database()")[0]
    return int(row[0]), int(row[1])


def single_process(work: Path, bench: ClusterBench, n: int) -> dict[str, Any]:
    data = yaml.safe_load(bench.config.read_text())
    data.pop("cluster")
    data["state"] = str(bench.workdir / "single-state.db")  # a fresh ledger per run
    config = bench.workdir / "single.yaml"
    config.write_text(yaml.safe_dump(data))
    proc = Proc([sys.executable, "-m", "copydicom.cli", "run", "--config", str(config)], bench.env,
                bench.workdir / "single.log")
    started = time.monotonic()
    proc.start()
    try:
        first, last = _wait_for(bench.dest, n, started)
    finally:
        proc.terminate()
    return {"mode": "single process", "seconds": last, "rate": n / last, "steady": n / max(1e-6, last - first)}


def cluster_run(bench: ClusterBench, n: int, workers: int, label: str) -> dict[str, Any]:
    xact0, rows0 = _pg_counters(bench)
    started = time.monotonic()
    procs = [bench.start("planner")] + [bench.start("worker") for _ in range(workers)]
    try:
        first, last = _wait_for(bench.dest, n, started)
        time.sleep(0.5)
        cpu_workers = sum(_cpu_seconds(p.pid) for p in procs[1:])
        cpu_planner = _cpu_seconds(procs[0].pid)
    finally:
        for p in procs:
            p.terminate()
    xact1, rows1 = _pg_counters(bench)
    # batches executed (finished batches are pruned from cluster_batches; every worker counts its own)
    batches = bench.sql("SELECT coalesce(sum(batches), 0) FROM cluster_workers")[0][0]
    return {"mode": label, "seconds": last, "rate": n / last, "steady": n / max(1e-6, last - first),
            "messages_per_instance": batches / n, "pg_xact_per_instance": (xact1 - xact0) / n,
            "pg_rows_per_instance": (rows1 - rows0) / n, "worker_cpu_per_instance": cpu_workers / n,
            "planner_cpu_per_instance": cpu_planner / n}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rows", type=int, default=256, help="image rows/cols of the synthetic CT")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds added to each destination request")
    parser.add_argument("--batch-size", type=int, default=25)
    parser.add_argument("--route-workers", type=int, default=4, help="threads per process (route workers)")
    parser.add_argument("--scaling", default="1,2,4", help="worker counts of the latency run")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="copydicom-cluster-bench-"))
    pg, mq = PostgresServer(), RabbitServer()
    source = OrthancServer(name="SOURCE", workdir=work / "source")
    dest = OrthancServer(name="DEST", workdir=work / "dest")
    results: list[dict[str, Any]] = []
    try:
        pg.start()
        mq.start()
        source.start()
        dest.start()
        upload_all(lambda data: source.upload(data),
                   ct_study_files(args.n, series_per_study=4, rows=args.rows, cols=args.rows, seed="bench"))
        print(f"loaded {args.n} instances ({args.rows}x{args.rows}); route workers {args.route_workers}, "
              f"batch size {args.batch_size}")

        def fresh(dest_url: str | None = None, tag: str = "") -> ClusterBench:
            dest.clear()
            sub = work / f"run-{len(results)}{tag}"
            sub.mkdir()
            return ClusterBench(sub, pg, mq, source, dest, batch_size=args.batch_size, queue_bound=50,
                                workers=args.route_workers, dest_url=dest_url)

        results.append(single_process(work, fresh(), args.n))
        results.append(cluster_run(fresh(), args.n, 2, "planner + 2 workers"))
        proxy = DelayProxy(dest.url, args.delay).start()
        try:
            dest.clear()
            results.append(single_process(work, fresh(proxy.url, "d"), args.n) | {
                "mode": f"single process, +{args.delay * 1000:.0f} ms"})
            for w in [int(x) for x in args.scaling.split(",")]:
                results.append(cluster_run(fresh(proxy.url, "d"), args.n, w,
                                           f"planner + {w} worker(s), +{args.delay * 1000:.0f} ms"))
        finally:
            proxy.stop()
    finally:
        for server in (source, dest):
            server.cleanup()
        mq.cleanup()
        pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'mode':42} {'inst/s':>8} {'steady':>8} {'msgs/inst':>10} {'pg tx/inst':>11} {'pg rows/inst':>13} "
          f"{'worker cpu ms/inst':>19} {'planner cpu ms/inst':>20}")
    for r in results:
        extra = (f"{r['messages_per_instance']:10.3f} {r['pg_xact_per_instance']:11.2f} "
                 f"{r['pg_rows_per_instance']:13.2f} {r['worker_cpu_per_instance'] * 1000:19.2f} "
                 f"{r['planner_cpu_per_instance'] * 1000:20.2f}") if "messages_per_instance" in r else ""
        print(f"{r['mode']:42} {r['rate']:8.1f} {r['steady']:8.1f} {extra}")
    base = results[0]["rate"]
    print(f"cluster (planner + 2 workers) / single process, same host: {results[1]['rate'] / base:.2f}x "
          f"(target >= 0.8x)")
    scaled = [r for r in results if r["mode"].startswith("planner +") and "ms" in r["mode"]]
    if len(scaled) > 1:
        print("scaling against the delayed destination: " + ", ".join(
            f"{r['mode'].split(',')[0].replace('planner + ', '')}: {r['rate'] / scaled[0]['rate']:.2f}x"
            for r in scaled) + " (target >= 3x at 4 workers while the destination is not saturated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
