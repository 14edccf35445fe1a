#!/usr/bin/env python3
"""Conditional replication benchmark: ``conditional-replicate`` against plain ``replicate``, same data, same run.

Starts three private Orthanc servers on loopback (a source and two empty
destinations), loads N synthetic CT instances (512x512, 16-bit) into the
source, indexes them into a SQLite index (``replicate-tags``), then times

1. ``copydicom replicate`` of everything to destination A (the reference);
2. ``copydicom conditional-replicate`` with a query matching every instance
   by its Orthanc instance ``ID`` to destination B (one index row per instance,
   each resolved on the source);
3. the same query by series (``SELECT orthanc_id FROM series``: one row per series);
4. a second conditional run (everything already there: ledger dedupe).

Prints instances/s and the ratios against the reference.

Usage::

    python benchmarks/conditional_bench.py --n 300 [--workers 4]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from _common import running
from replicate_bench import run_copydicom

from tests.support.orthanc import OrthancServer
from tests.support.synthetic import ct_study_files, upload_all


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="instances (default 300)")
    parser.add_argument("--workers", type=int, default=4)
    opts = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="copydicom-cond-bench-"))
    source = OrthancServer("SOURCE", workdir=work / "source")
    dest_a = OrthancServer("DESTA", workdir=work / "a")
    dest_b = OrthancServer("DESTB", workdir=work / "b")
    servers = [source, dest_a, dest_b]
    with running(work, servers):
        print(f"loading {opts.n} synthetic CT instances (512x512, 16-bit) into the source...", flush=True)
        upload_all(source.upload, ct_study_files(opts.n, patients=max(1, opts.n // 500)), threads=4)
        index = f"sqlite://{work / 'index.db'}"
        tags_s, _, line = run_copydicom(["replicate-tags", "--src", source.url_with_credentials, "--index", index,
                                         "--state", str(work / "tags.db")])
        print(f"replicate-tags -> SQLite: {tags_s:.1f} s   [{line}]")

        src = ["--src", source.url_with_credentials, "--workers", str(opts.workers)]
        ref_s, _, line = run_copydicom(["replicate", *src, "--dest", dest_a.url_with_credentials,
                                        "--state", str(work / "a.db")])
        assert dest_a.statistics()["CountInstances"] == opts.n
        ref_rate = opts.n / ref_s
        print(f"replicate (all):                    {opts.n} in {ref_s:.1f} s = {ref_rate:.1f} instances/s")

        cond = ["conditional-replicate", *src, "--index", index, "--dest", dest_b.url_with_credentials]
        by_id_s, _, line = run_copydicom([*cond, "--query", "SELECT orthanc_id AS ID FROM instances",
                                          "--state", str(work / "b.db")])
        assert dest_b.statistics()["CountInstances"] == opts.n
        by_id_rate = opts.n / by_id_s
        print(f"conditional-replicate (row per ID): {opts.n} in {by_id_s:.1f} s = {by_id_rate:.1f} instances/s"
              f"   [{line}]")
        dest_b.clear()
        by_series_s, _, line = run_copydicom([*cond, "--query", "SELECT orthanc_id FROM series",
                                              "--state", str(work / "b2.db")])
        assert dest_b.statistics()["CountInstances"] == opts.n
        by_series_rate = opts.n / by_series_s
        print(f"conditional-replicate (by series):  {opts.n} in {by_series_s:.1f} s = {by_series_rate:.1f}"
              f" instances/s   [{line}]")
        again_s, _, line = run_copydicom([*cond, "--query", "SELECT orthanc_id AS ID FROM instances",
                                          "--state", str(work / "b2.db")])
        print(f"second conditional run (ledger):    {again_s:.2f} s   [{line}]")

        print("\nsummary")
        print(f"  conditional by ID / replicate:     {by_id_rate / ref_rate:.2f}x")
        print(f"  conditional by series / replicate: {by_series_rate / ref_rate:.2f}x")
        print(f"  second conditional run / first:    {100 * again_s / by_id_s:.1f}%")
        print(f"  machine: {os.cpu_count()} cores; N={opts.n}; workers={opts.workers}")


if __name__ == "__main__":
    main()
