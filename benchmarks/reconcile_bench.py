#!/usr/bin/env python3
"""Reconcile benchmark: an in-sync pair, the same with 1% missing, against a fresh-state ``replicate`` rerun.

Starts three private Orthanc servers on loopback (a source, a plain destination, a
de-identified destination), loads N small synthetic CT instances into the source,
replicates them to both destinations, then times, each as a child process (peak RSS
is the child's own ``VmHWM``; downloads are counted inside the child by wrapping
``OrthancClient.download``):

1. ``copydicom reconcile`` of the in-sync plain pair, and of the de-identifying pair;
2. the reference, in the same run: ``copydicom replicate`` over the same pairs with a
   fresh state file (it asks the destination series by series);
3. 1% of the instances deleted at each destination, then ``reconcile`` again: the
   downloads must equal the missing count exactly (0 when in sync).

Targets (issue 12, 2-core machine, N=10000): in-sync reconcile under 10 s and faster
than the rerun; peak RSS under 150 MB.

Usage::

    python benchmarks/reconcile_bench.py --n 2000
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import run_measured, running  # noqa: E402

from tests.support.orthanc import OrthancServer  # noqa: E402
from tests.support.synthetic import ct_study_files, upload_all  # noqa: E402

_CHILD = """
import sys
from copydicom.clients.orthanc import OrthancClient
from copydicom.cli import main
count = [0]
original = OrthancClient.download
def counting(self, instance_id):
    count[0] += 1
    return original(self, instance_id)
OrthancClient.download = counting
status = main(sys.argv[1:])
sys.stderr.write(f"\\nBENCH-DOWNLOADS={count[0]}\\n")
sys.exit(status)
"""


def run(args: list[str], *, ok: tuple[int, ...] = (0,)) -> tuple[float, int, str, int]:
    """Run copydicom in a child; return (seconds, peak RSS kB, last stdout line, instances downloaded)."""
    child = run_measured(["-c", _CHILD, *args], dict(os.environ, PYTHONPATH=str(ROOT)))
    if child.returncode not in ok:
        sys.stderr.write(child.stderr)
        raise SystemExit(f"copydicom {args[0]} exited with {child.returncode}")
    match = re.search(r"BENCH-DOWNLOADS=(\d+)", child.stderr)
    return child.seconds, child.peak_kb, child.last_line, int(match.group(1)) if match else -1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=2000, help="instances (default 2000; the target is for 10000)")
    parser.add_argument("--workers", type=int, default=4)
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="copydicom-rbench-"))
    source = OrthancServer("RBSRC", workdir=work / "source")
    plain = OrthancServer("RBPLAIN", workdir=work / "plain")
    deid = OrthancServer("RBDEID", workdir=work / "deid")
    servers = [source, plain, deid]
    key = work / "deid.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    with running(work, servers):
        print(f"loading {opts.n} small synthetic CT instances (8x8; reconcile never reads pixels)...", flush=True)
        t0 = time.perf_counter()
        upload_all(source.upload, ct_study_files(opts.n, patients=max(1, opts.n // 100), rows=8, cols=8), threads=4)
        print(f"  loaded in {time.perf_counter() - t0:.1f} s")
        pairs = {
            "plain": (plain, [], work / "plain.db"),
            "de-identifying": (deid, ["--profile", "default", "--key-file", str(key)], work / "deid.db"),
        }
        rows = []
        for label, (dest, extra, state) in pairs.items():
            common = ["--src", source.url_with_credentials, "--dest", dest.url_with_credentials,
                      "--workers", str(opts.workers), *extra]
            s, _, line, _ = run(["replicate", *common, "--state", str(state)])
            print(f"[{label}] initial replicate: {s:.1f} s   [{line}]", flush=True)
            rec_s, rec_rss, rec_line, rec_dl = run(["reconcile", *common, "--state", str(state)])
            print(f"[{label}] reconcile, in sync:            {rec_s:6.2f} s  downloads={rec_dl}  "
                  f"RSS={rec_rss / 1024:.0f} MB   [{rec_line}]", flush=True)
            ref_s, ref_rss, ref_line, ref_dl = run(["replicate", *common, "--state", str(work / f"fresh-{label}.db")])
            print(f"[{label}] replicate rerun, fresh state:  {ref_s:6.2f} s  downloads={ref_dl}  "
                  f"RSS={ref_rss / 1024:.0f} MB   [{ref_line}]", flush=True)
            victims = random.Random(1).sample(sorted(dest.instance_ids()), max(1, opts.n // 100))
            import requests

            for victim in victims:
                requests.delete(f"{dest.url}/instances/{victim}", auth=dest.auth, timeout=60).raise_for_status()
            mis_s, mis_rss, mis_line, mis_dl = run(["reconcile", *common, "--state", str(state)])
            print(f"[{label}] reconcile, {len(victims)} missing (1%):   {mis_s:6.2f} s  downloads={mis_dl}  "
                  f"RSS={mis_rss / 1024:.0f} MB   [{mis_line}]", flush=True)
            assert rec_dl == 0, "an in-sync reconcile downloaded something"
            assert mis_dl == len(victims), "the repair downloaded more or less than the missing instances"
            rows.append((label, rec_s, ref_s, mis_s, max(rec_rss, mis_rss), len(victims), mis_dl))
        print("\nsummary (N={}, {} cores, workers={})".format(opts.n, os.cpu_count(), opts.workers))
        for label, rec_s, ref_s, mis_s, rss, missing, dl in rows:
            print(f"  {label:15s} in-sync reconcile {rec_s:5.2f} s vs fresh-state replicate rerun {ref_s:5.2f} s "
                  f"({ref_s / rec_s:.1f}x faster); 1% missing: {mis_s:5.2f} s, downloads {dl} of {missing} missing; "
                  f"peak RSS {rss / 1024:.0f} MB (target < 150 MB)")


if __name__ == "__main__":
    main()
