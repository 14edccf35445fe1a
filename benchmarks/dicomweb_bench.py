#!/usr/bin/env python3
"""DICOMweb benchmark: the same N instances DICOMweb -> DICOMweb versus Orthanc REST -> REST, same run.

Starts three private Orthanc servers with the DICOMweb plugin on loopback (a
source and two empty destinations), loads N synthetic CT instances (one study,
``--series`` series; 512x512 16-bit, about 0.5 MB each) into the source, then

1. ``copydicom replicate`` REST -> REST (``http://`` source and destination);
2. ``copydicom replicate`` DICOMweb -> DICOMweb (QIDO-RS listing, WADO-RS series
   retrieval with ``transfer-syntax=*``, STOW-RS batches) into the other destination;
3. a rerun of 2 with a fresh ledger (dedupe by QIDO-RS only);
4. the destinations' ingest ceiling, measured the same way for both: the same
   instances, already in memory, stored by ``workers`` threads through
   copydicom's Orthanc REST destination and through its STOW-RS destination
   (each into an emptied server), so the source side is out of the picture.

Each replicate runs as a child process: its peak RSS (``VmHWM``) is its own.
Prints instances/s, the ratios, and peak RSS.  Target (issue 13): DICOMweb
path >= 0.8x the REST path; memory flat for a 2,000-instance study.

Usage::

    python benchmarks/dicomweb_bench.py --n 1000 [--workers 4] [--series 2] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from replicate_bench import run_copydicom  # noqa: E402

from tests.support.orthanc import OrthancServer  # noqa: E402
from tests.support.synthetic import ct_study_files, upload_all  # noqa: E402


def ingest(store: object, files: list[bytes], workers: int) -> float:
    """Seconds for ``workers`` threads to store every file through ``store(bytes)``."""
    queue = list(enumerate(files))
    lock = threading.Lock()

    def work() -> None:
        while True:
            with lock:
                if not queue:
                    return
                _, data = queue.pop()
            store(data)  # type: ignore[operator]

    threads = [threading.Thread(target=work) for _ in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - started


def ingest_ceiling(rest_dest: OrthancServer, dw_dest: OrthancServer, n: int, series: int,
                   workers: int) -> tuple[float, float]:
    """instances/s into an empty server through the REST destination and the STOW-RS destination."""
    from copydicom.clients.orthanc import OrthancConfig
    from copydicom.endpoints.dicomweb import DicomwebConfig
    from copydicom.endpoints.dicomweb._client import DicomwebClient
    from copydicom.endpoints.dicomweb._destination import StowDestination
    from copydicom.model import Identity, Instance, InstanceRef
    from copydicom.sinks.orthanc import OrthancDestination

    files = list(ct_study_files(n, series_per_study=series, seed="ceiling"))
    rest_dest.clear()
    dw_dest.clear()
    rest = OrthancDestination(OrthancConfig.from_url(rest_dest.url_with_credentials, name="rest"),
                              pool_size=workers + 2)
    rest_s = ingest(lambda data: rest.store(Instance(InstanceRef("x"), data)), files, workers)
    rest.close()
    stow = StowDestination(DicomwebClient(DicomwebConfig.from_url(dw_dest.dicomweb_url, name="dw"),
                                          pool_size=workers + 2, side="destination"), concurrency=workers)
    import io

    import pydicom

    def stow_one(data: bytes) -> None:
        ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        identity = Identity(str(ds.PatientID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
                            str(ds.SOPInstanceUID))
        stow.store(Instance(InstanceRef("x"), data, identity=identity))

    # The header parse for the identity is done by the pipeline's source in a real run; time it apart.
    parse_s = ingest(lambda data: pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True), files, workers)
    dw_s = ingest(stow_one, files, workers) - parse_s
    stow.close()
    assert rest_dest.statistics()["CountInstances"] == n and dw_dest.statistics()["CountInstances"] == n
    return n / rest_s, n / max(dw_s, 1e-9)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=1000, help="instances (default 1000)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--series", type=int, default=2, help="series in the one study (default 2)")
    parser.add_argument("--rounds", type=int, default=1, help="alternate REST and DICOMweb runs this many times")
    opts = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="copydicom-dwbench-"))
    source = OrthancServer("DWBSOURCE", workdir=work / "source", dicomweb=True)
    rest_dest = OrthancServer("DWBREST", workdir=work / "rest", dicomweb=True)
    dw_dest = OrthancServer("DWBDW", workdir=work / "dw", dicomweb=True)
    servers = [source, rest_dest, dw_dest]
    try:
        for server in servers:
            server.start()
        print(f"loading {opts.n} synthetic CT instances (512x512, 16-bit; 1 study, {opts.series} series)...",
              flush=True)
        upload_all(source.upload, ct_study_files(opts.n, series_per_study=opts.series), threads=4)
        mb = int(source.statistics()["TotalDiskSize"]) / 1e6
        print(f"  {opts.n} instances, {mb:.0f} MB")
        workers = ["--workers", str(opts.workers)]
        ratios: list[float] = []
        for round_no in range(1, opts.rounds + 1):
            if round_no > 1:  # alternate the two paths over emptied destinations; this machine is noisy
                rest_dest.clear()
                dw_dest.clear()
            rest_s, rest_rss, rest_line = run_copydicom(
                ["replicate", "--src", source.url_with_credentials, "--dest", rest_dest.url_with_credentials,
                 "--state", str(work / f"rest{round_no}.db"), *workers])
            assert rest_dest.statistics()["CountInstances"] == opts.n, rest_line
            print(f"[{round_no}] REST -> REST:          {opts.n} in {rest_s:.1f} s = {opts.n / rest_s:.1f} "
                  f"instances/s, peak RSS {rest_rss / 1024:.0f} MB   [{rest_line}]")
            dw_s, dw_rss, dw_line = run_copydicom(
                ["replicate", "--src", source.dicomweb_url, "--dest", dw_dest.dicomweb_url,
                 "--state", str(work / f"dw{round_no}.db"), *workers])
            assert dw_dest.statistics()["CountInstances"] == opts.n, dw_line
            print(f"[{round_no}] DICOMweb -> DICOMweb:  {opts.n} in {dw_s:.1f} s = {opts.n / dw_s:.1f} "
                  f"instances/s, peak RSS {dw_rss / 1024:.0f} MB   [{dw_line}]")
            ratios.append(rest_s / dw_s)

        again_s, _, again_line = run_copydicom(
            ["replicate", "--src", source.dicomweb_url, "--dest", dw_dest.dicomweb_url,
             "--state", str(work / "fresh.db"), *workers])
        print(f"DICOMweb rerun (fresh ledger, QIDO-RS dedupe): {again_s:.2f} s   [{again_line}]")

        rest_ceiling, dw_ceiling = ingest_ceiling(rest_dest, dw_dest, opts.n, opts.series, opts.workers)
        print(f"ingest ceiling (from memory): REST {rest_ceiling:.1f} instances/s, STOW-RS {dw_ceiling:.1f} "
              "instances/s")

        print("\nsummary")
        print(f"  DICOMweb / REST replicate:      {rest_s / dw_s:.2f}x last round, median "
              f"{statistics.median(ratios):.2f}x of {len(ratios)}   (target >= 0.8x)")
        print(f"  STOW-RS / REST ingest ceiling:  {dw_ceiling / rest_ceiling:.2f}x")
        print(f"  replicate / ceiling: REST {opts.n / rest_s / rest_ceiling:.2f}, "
              f"DICOMweb {opts.n / dw_s / dw_ceiling:.2f}")
        print(f"  peak RSS: REST {rest_rss / 1024:.0f} MB, DICOMweb {dw_rss / 1024:.0f} MB")
        print(f"  rerun / first run (DICOMweb):   {100 * again_s / dw_s:.1f}%")
        print(f"  machine: {os.cpu_count()} cores; N={opts.n}; workers={opts.workers}; series={opts.series}")
    finally:
        for server in servers:
            server.cleanup()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
