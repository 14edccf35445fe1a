#!/usr/bin/env python3
"""Predict cluster throughput for N workers on M hosts against a destination ceiling (a model, not a run).

Throughput is the smallest of five limits (each printed, the binding one marked):

- **CPU of the worker hosts**: ``M * cores * utilisation / cpu_per_instance``;
- **latency x concurrency**: ``N * threads / (requests_per_instance * latency + cpu_per_instance)``
  (each worker process runs ``threads`` instances at once; each instance waits on the destination);
- **the destination's ingest ceiling** (the real ceiling of a migration: a PACS, an object store);
- **PostgreSQL**: ``pg_rows_per_second / pg_rows_per_instance`` (batched inserts: one transaction per flush);
- **the broker**: ``broker_messages_per_second * batch_size`` (one message per batch).

Defaults: the figures marked MEASURED come from ``benchmarks/cluster_bench.py --n 200`` on this 2-core
machine (notes/cluster2.md has the run); those marked MODELLED are assumptions to replace with your own
(the PACS ceiling above all). Override any of them on the command line.

Usage::

    python benchmarks/cluster_sim.py [--hosts 1,2,4,8] [--workers-per-host 2] [--dest-ceiling 800] [--total 1e8]
"""

from __future__ import annotations

import argparse
import math
import sys

#: name -> (default, MEASURED|MODELLED, meaning)
PARAMETERS: dict[str, tuple[float, str, str]] = {
    "cpu_per_instance": (0.0060, "MEASURED", "worker CPU seconds per instance, 256x256 CT, no de-identification "
                                             "(cluster_bench --n 200: worker utime+stime / instances, 5.3-7.9 ms)"),
    "deid_cpu_per_instance": (0.0, "MODELLED", "extra CPU seconds per instance when de-identifying "
                                               "(deid_bench measures it: about 0.01 s for a 0.5 MB CT here)"),
    "requests_per_instance": (2.0, "MODELLED", "destination requests per instance (look-up + POST; a series "
                                               "batch needs one look-up per series instead)"),
    "latency": (0.05, "MODELLED", "seconds per destination request (WAN PACS: 0.02-0.1)"),
    "threads": (4, "MEASURED", "instances in flight per worker process (route workers)"),
    "cores": (2, "MODELLED", "cores per worker host"),
    "utilisation": (0.8, "MODELLED", "usable share of a host's cores"),
    "dest_ceiling": (800.0, "MODELLED", "destination ingest ceiling, instances/s"),
    "pg_rows_per_instance": (4.6, "MEASURED", "PostgreSQL rows written per instance (cluster_bench --n 200; "
                                              "includes 1/s heartbeats, so it falls on longer runs)"),
    "pg_rows_per_second": (30000.0, "MODELLED", "rows/s one PostgreSQL sustains with batched inserts"),
    "batch_size": (100, "MODELLED", "instances per work unit (cluster.batch_size)"),
    "broker_messages_per_second": (5000.0, "MODELLED", "persistent quorum-queue messages/s of one RabbitMQ"),
}


def limits(p: dict[str, float], workers: int, hosts: int) -> dict[str, float]:
    cpu = p["cpu_per_instance"] + p["deid_cpu_per_instance"]
    return {
        "host CPU": hosts * p["cores"] * p["utilisation"] / cpu,
        "latency x concurrency": workers * p["threads"] / (p["requests_per_instance"] * p["latency"] + cpu),
        "destination": p["dest_ceiling"],
        "PostgreSQL": p["pg_rows_per_second"] / p["pg_rows_per_instance"],
        "broker": p["broker_messages_per_second"] * p["batch_size"],
    }


def _duration(seconds: float) -> str:
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f}m"
    if seconds < 3 * 86400:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for name, (default, _kind, meaning) in PARAMETERS.items():
        parser.add_argument("--" + name.replace("_", "-"), type=float, default=default, help=meaning)
    parser.add_argument("--hosts", default="1,2,4,8,16", help="worker host counts to model")
    parser.add_argument("--workers-per-host", type=int, default=2)
    parser.add_argument("--total", type=float, default=1e8, help="instances to move")
    args = parser.parse_args()
    p = {name: float(getattr(args, name)) for name in PARAMETERS}
    print("parameters:")
    for name, (_default, kind, meaning) in PARAMETERS.items():
        print(f"  {name:28} {p[name]:>10g}  {kind:8}  {meaning}")
    print()
    names = list(limits(p, 1, 1))
    print(f"{'hosts':>5} {'workers':>7} " + " ".join(f"{n:>22}" for n in names) + f" {'inst/s':>8} {'total':>8}")
    for hosts in [int(h) for h in args.hosts.split(",")]:
        workers = hosts * args.workers_per_host
        found = limits(p, workers, hosts)
        rate = min(found.values())
        cells = " ".join(f"{found[n]:>21.0f}{'*' if found[n] == rate else ' '}" for n in names)
        print(f"{hosts:>5} {workers:>7} {cells} {rate:>8.0f} {_duration(args.total / rate):>8}")
    print("\n* the binding limit. Add hosts until the destination binds; past it, more workers only queue.")
    shards = math.ceil(min(limits(p, 10**6, 10**6)["host CPU"], p["dest_ceiling"]) * p["pg_rows_per_instance"]
                       / p["pg_rows_per_second"])
    print(f"PostgreSQL shards (by StudyInstanceUID) needed at the destination ceiling: {max(1, shards)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
