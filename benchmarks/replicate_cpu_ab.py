#!/usr/bin/env python3
"""Client CPU per instance of ``copydicom replicate``: this checkout against another one, same data, same run.

Starts two private Orthanc servers on loopback, loads N synthetic 0.5 MB CT instances into the source, then runs
``copydicom replicate`` from each checkout alternately (the destination emptied and a fresh state each time),
``--rounds`` times, and prints wall time and the child's CPU (user + system, start-up included) per instance.
CPU per instance is the steady figure on a shared machine; wall time moves with the load.

Usage::

    python benchmarks/replicate_cpu_ab.py --base /path/to/older/checkout [--n 300] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.support.orthanc import OrthancServer  # noqa: E402
from tests.support.synthetic import ct_study_files, upload_all  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--base", type=Path, required=True, help="the other checkout (e.g. the previous release)")
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="cpu-ab-"))
    source = OrthancServer("AB_SRC", workdir=work / "s").start()
    dest = OrthancServer("AB_DST", workdir=work / "d").start()
    try:
        upload_all(source.upload, ct_study_files(args.n, rows=512, cols=512))
        for _ in range(args.rounds):
            for tag, tree in (("base", args.base.resolve()), ("this", ROOT)):
                dest.clear()
                env = dict(os.environ, PYTHONPATH=str(tree))
                before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter()
                done = subprocess.run(
                    [sys.executable, "-m", "copydicom", "replicate", "--src", source.url_with_credentials, "--dest",
                     dest.url_with_credentials, "--state", str(work / f"{tag}-{time.time()}.db"), "--workers", "4"],
                    env=env, capture_output=True, text=True)
                after, wall = resource.getrusage(resource.RUSAGE_CHILDREN), time.perf_counter() - started
                cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
                last = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-200:]
                print(f"{tag}: wall {wall:5.2f} s  CPU {cpu:5.2f} s = {1000 * cpu / args.n:5.2f} ms/instance  {last}",
                      flush=True)
    finally:
        source.cleanup()
        dest.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
