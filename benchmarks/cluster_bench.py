#!/usr/bin/env python3
"""Cluster benchmark: single-process mode against planner + workers, same data, same run.

Starts a private PostgreSQL, RabbitMQ and two Orthanc servers on loopback, loads N synthetic CT instances
into the source, then, each time into an emptied destination:

1. ``copydicom run`` (``--role all``: one process, SQLite state, no broker);
2. ``copydicom run --role planner`` + 2 ``--role worker`` processes (PostgreSQL state, RabbitMQ);
3. with ``--delay`` seconds added to every destination request by a small proxy (a distant PACS, so that
   latency and not the two cores is the limit): 1, 2 and 4 workers.

Three figures per run (``--modes cold,warm``):

- **cold** ``inst/s``: the N instances are at the source before the processes start; from the start of
  the processes to the last instance at the destination (process start-up included: a Celery worker
  takes ~1-1.5 s);
- **cold** ``steady``: the same run, from the first to the last arrival at the destination;
- **warm** (how the service runs: daemons up and idle, then the load arrives): the source is emptied,
  the processes are started with ``start_from: now`` and the bench waits until they are ready (single
  process: its checkpoint written; cluster: the planner's checkpoint written and every worker consuming
  the queue, RabbitMQ's consumer count), then uploads the N instances (pre-built in memory, 4 upload
  threads) and times from the first upload to the last instance at the destination. The source's own
  ingest time of the N uploads is printed beside it (``upload s``): the warm figure cannot be faster; ``lag s``
  is the time from the last upload to the last arrival (how far the route was behind its source).

Overheads per instance, counted in the cold cluster runs: broker messages (batches published, retries
included) and PostgreSQL transactions (``pg_stat_database.xact_commit`` of the run's database) and rows
written (``tup_inserted + tup_updated + tup_deleted``).

Usage (keep it small on a shared 2-core machine)::

    python benchmarks/cluster_bench.py --n 200 [--rows 512] [--modes cold,warm] [--delay 0.05]
        [--batch-size 25] [--route-workers 4] [--scaling 1,2,4] [--no-delay-single]
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


def _start_now(bench: ClusterBench) -> None:
    """Rewrite the bench's configuration so that its route follows only new changes (warm runs)."""
    data = yaml.safe_load(bench.config.read_text())
    for route in data["routes"]:
        route["trigger"]["changes"]["start_from"] = "now"
    bench.config.write_text(yaml.safe_dump(data))


def _single_config(bench: ClusterBench) -> Path:
    data = yaml.safe_load(bench.config.read_text())
    data.pop("cluster")
    data["state"] = str(bench.workdir / "single-state.db")  # a fresh ledger per run
    config = bench.workdir / "single.yaml"
    config.write_text(yaml.safe_dump(data))
    return config


def _until(ready: Any, what: str, proc_alive: Any, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        if not proc_alive():
            raise RuntimeError(f"a process ended while waiting for {what}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"timed out waiting for {what}")
        time.sleep(0.1)


def _upload(source: OrthancServer, files: list[bytes]) -> float:
    began = time.monotonic()
    upload_all(lambda data: source.upload(data), iter(files))
    return time.monotonic() - began


def single_warm(bench: ClusterBench, files: list[bytes], label: str = "single process") -> dict[str, Any]:
    import sqlite3

    bench.source.clear()
    _start_now(bench)
    config = _single_config(bench)
    state = bench.workdir / "single-state.db"
    proc = Proc([sys.executable, "-m", "copydicom.cli", "run", "--config", str(config)], bench.env,
                bench.workdir / "single.log")
    proc.start()

    def ready() -> bool:
        if not state.exists():
            return False
        try:
            with sqlite3.connect(f"file:{state}?mode=ro", uri=True) as db:
                return bool(db.execute("SELECT count(*) FROM checkpoints").fetchone()[0])
        except sqlite3.Error:
            return False

    try:
        _until(ready, "the daemon's first checkpoint", proc.running)
        time.sleep(0.5)
        started = time.monotonic()
        uploaded = _upload(bench.source, files)
        _first, last = _wait_for(bench.dest, len(files), started)
    finally:
        proc.terminate()
    return {"mode": f"{label}, warm", "seconds": last, "rate": len(files) / last, "upload": uploaded}


def cluster_warm(bench: ClusterBench, files: list[bytes], workers: int, label: str) -> dict[str, Any]:
    from kombu import Connection

    bench.source.clear()
    _start_now(bench)
    procs = [bench.start("planner")] + [bench.start("worker") for _ in range(workers)]
    mq = yaml.safe_load(bench.config.read_text())["cluster"]

    def consumers() -> int:
        try:
            with Connection(_broker_url(bench)) as conn:
                return int(conn.default_channel.queue_declare(queue=mq["queue"], passive=True).consumer_count)
        except Exception:  # noqa: BLE001 - not declared yet
            return 0

    try:
        alive = lambda: all(p.running() for p in procs)  # noqa: E731
        _until(lambda: bench.checkpoint() is not None, "the planner's checkpoint", alive)
        _until(lambda: consumers() >= workers, f"{workers} worker(s) consuming", alive)
        time.sleep(0.5)
        started = time.monotonic()
        uploaded = _upload(bench.source, files)
        _first, last = _wait_for(bench.dest, len(files), started)
    finally:
        for p in procs:
            p.terminate()
    return {"mode": f"{label}, warm", "seconds": last, "rate": len(files) / last, "upload": uploaded}


def _broker_url(bench: ClusterBench) -> str:
    from urllib.parse import quote

    mq = yaml.safe_load(bench.config.read_text())["cluster"]
    user, rest = mq["broker"].split("//", 1)[1].split("@", 1)
    return f"amqp://{user}:{quote(bench.env['CD_TEST_MQ_PW'], safe='')}@{rest}"


def single_process(work: Path, bench: ClusterBench, n: int) -> dict[str, Any]:
    config = _single_config(bench)
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
    parser.add_argument("--scaling", default="1,2,4", help="worker counts of the latency run ('' for none)")
    parser.add_argument("--modes", default="cold,warm", help="cold, warm or both (see the module docstring)")
    parser.add_argument("--parts", default="same-host,scaling",
                        help="same-host (single vs planner + 2 workers) and/or scaling (delayed destination)")
    parser.add_argument("--no-delay-single", action="store_true",
                        help="skip the single process against the delayed destination (the scaling run's "
                        "reference is 1 worker)")
    args = parser.parse_args()
    modes = {m.strip() for m in args.modes.split(",") if m.strip()}
    parts = {m.strip() for m in args.parts.split(",") if m.strip()}
    scaling = [int(x) for x in args.scaling.split(",") if x.strip()] if "scaling" in parts else []

    work = Path(tempfile.mkdtemp(prefix="copydicom-cluster-bench-"))
    pg, mq = PostgresServer(), RabbitServer()
    source = OrthancServer(name="SOURCE", workdir=work / "source")
    dest = OrthancServer(name="DEST", workdir=work / "dest")
    results: list[dict[str, Any]] = []
    ms = f"+{args.delay * 1000:.0f} ms"
    try:
        pg.start()
        mq.start()
        source.start()
        dest.start()
        files = list(ct_study_files(args.n, series_per_study=4, rows=args.rows, cols=args.rows, seed="bench"))
        print(f"{args.n} instances ({args.rows}x{args.rows}, {sum(map(len, files)) / len(files) / 1e6:.2f} MB "
              f"each); route workers {args.route_workers}, batch size {args.batch_size}", flush=True)

        def fresh(dest_url: str | None = None, tag: str = "") -> ClusterBench:
            dest.clear()
            sub = work / f"run-{len(results)}{tag}"
            sub.mkdir()
            return ClusterBench(sub, pg, mq, source, dest, batch_size=args.batch_size, queue_bound=50,
                                workers=args.route_workers, dest_url=dest_url)

        def done(result: dict[str, Any]) -> None:
            results.append(result)
            print(f"  {result['mode']}: {result['rate']:.1f} inst/s", flush=True)

        if "cold" in modes:
            upload_all(lambda data: source.upload(data), iter(files))
            if "same-host" in parts:
                done(single_process(work, fresh(), args.n) | {"mode": "single process, cold"})
                done(cluster_run(fresh(), args.n, 2, "planner + 2 workers, cold"))
            if scaling:
                proxy = DelayProxy(dest.url, args.delay).start()
                try:
                    if not args.no_delay_single:
                        done(single_process(work, fresh(proxy.url, "d"), args.n) | {
                            "mode": f"single process, {ms}, cold"})
                    for w in scaling:
                        done(cluster_run(fresh(proxy.url, "d"), args.n, w, f"planner + {w} worker(s), {ms}, cold"))
                finally:
                    proxy.stop()
        if "warm" in modes:
            if "same-host" in parts:
                done(single_warm(fresh(), files))
                done(cluster_warm(fresh(), files, 2, "planner + 2 workers"))
            if scaling:
                proxy = DelayProxy(dest.url, args.delay).start()
                try:
                    if not args.no_delay_single:
                        done(single_warm(fresh(proxy.url, "d"), files, f"single process, {ms}"))
                    for w in scaling:
                        done(cluster_warm(fresh(proxy.url, "d"), files, w, f"planner + {w} worker(s), {ms}"))
                finally:
                    proxy.stop()
    finally:
        for server in (source, dest):
            server.cleanup()
        mq.cleanup()
        pg.cleanup()
        shutil.rmtree(work, ignore_errors=True)

    print(f"{'mode':42} {'inst/s':>8} {'steady':>8} {'upload s':>9} {'lag s':>6} {'msgs/inst':>10} {'pg tx/inst':>11} "
          f"{'pg rows/inst':>13} {'worker cpu ms/inst':>19} {'planner cpu ms/inst':>20}")
    for r in results:
        extra = (f"{r['messages_per_instance']:10.3f} {r['pg_xact_per_instance']:11.2f} "
                 f"{r['pg_rows_per_instance']:13.2f} {r['worker_cpu_per_instance'] * 1000:19.2f} "
                 f"{r['planner_cpu_per_instance'] * 1000:20.2f}") if "messages_per_instance" in r else ""
        steady = f"{r['steady']:8.1f}" if "steady" in r else f"{'':8}"
        upload = f"{r['upload']:9.1f}" if "upload" in r else f"{'':9}"
        lag = f"{r['seconds'] - r['upload']:6.1f}" if "upload" in r else f"{'':6}"
        print(f"{r['mode']:42} {r['rate']:8.1f} {steady} {upload} {lag} {extra}")
    by = {r["mode"]: r for r in results}
    for mode in ("cold", "warm"):
        single, cluster = by.get(f"single process, {mode}"), by.get(f"planner + 2 workers, {mode}")
        if single and cluster:
            line = f"{mode}: cluster (planner + 2 workers) / single process, same host: " \
                   f"{cluster['rate'] / single['rate']:.2f}x"
            if mode == "cold":
                line += f" (steady {cluster['steady'] / single['steady']:.2f}x)"
            print(line + " (target >= 0.8x)")
        scaled = [by[k] for k in (f"planner + {w} worker(s), {ms}, {mode}" for w in scaling) if k in by]
        if len(scaled) > 1:
            print(f"{mode}: scaling against the delayed destination: " + ", ".join(
                f"{w}: {r['rate'] / scaled[0]['rate']:.2f}x"
                + (f" (steady {r['steady'] / scaled[0]['steady']:.2f}x)" if mode == "cold" else "")
                for w, r in zip(scaling, scaled)) + " (target >= 3x at 4 workers while the destination is "
                "not saturated)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
