#!/usr/bin/env python3
"""DIMSE benchmark: the C-STORE receiver and the C-STORE destination, each next to its reference.

Everything runs on loopback in one run, on the same synthetic CT instances
(512x512, 16-bit, about 0.5 MB each):

(a) receiving, pushed by dcmtk ``storescu`` (one association, ``TCP_NODELAY=1``):
    1. ``storescu`` -> ``storescp --fork`` writing files, no fsync: the receiving ceiling;
    2. the destination Orthanc's own ingest ceiling for the same files, on the same cores: HTTP
       ``POST /instances`` from 4 keep-alive clients (how copydicom forwards), and ``storescu`` ->
       its DICOM port.  End to end cannot be faster than the destination can store;
    3. ``storescu`` -> ``copydicom listen`` (fsync per instance and directory) -> Orthanc:
       the push rate (every instance received, made durable and acknowledged) and the end-to-end
       rate (until Orthanc holds all and the spool is empty);
    4. the same with ``fsync: false``, so the cost of durability is visible;
    5. the same with ``receiver: thread`` (receiving and forwarding in one process).
    End to end is printed against the storescp ceiling and against min(storescp ceiling,
    destination ceiling), the destination ceiling being the faster of its two ingest paths.
(b) sending the same instances, held by a source Orthanc, to the same peer:
    1. Orthanc's own job ``POST /modalities/{m}/store`` (synchronous);
    2. copydicom's C-STORE destination behind the pipeline (Orthanc source, 4 workers,
       one association per worker), in a child process;
    each to Orthanc's DICOM port and to ``storescp --fork``.

(c) pulling the same instances back with the query/retrieve source (C-FIND, then C-GET from the
    source Orthanc's DICOM port, 4 workers, a null destination), one C-GET per instance
    (``retrieve_level=image``) against one per series (``retrieve_level=series``, the default).

Peak RSS is each copydicom process's own ``VmHWM``.

Usage::

    python benchmarks/dimse_bench.py --n 200 [--rows 512] [--workers 4] [--parts receive,send,qr] [--decoded]
        [--orthanc-nagle] [--own-spool-fs]

``--own-spool-fs`` (root) adds a run with the spool on a loop-mounted ext4 of its own: on one ext4 the
spool's fsync also commits the data Orthanc is writing, which a real deployment (destination elsewhere)
does not pay.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from typing import Any
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import requests  # noqa: E402
from _common import vm_hwm_kb  # noqa: E402

from tests.support.dcmtk import StoreSCP, dcmtk_env, need  # noqa: E402
from tests.support.listen import ListenProcess, listener_config  # noqa: E402
from tests.support.orthanc import OrthancServer, free_port  # noqa: E402
from tests.support.synthetic import ct_study_files  # noqa: E402


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process, all its threads (``/proc/PID/stat``)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def children(pid: int) -> list[int]:
    found: list[int] = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                found += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return found


def run_child(args: list[str], what: str) -> tuple[float, int, dict[str, Any]]:
    """Run a copydicom child to its end: (its own seconds, peak RSS in kB, its JSON result line)."""
    import json

    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    peak = 0
    while proc.poll() is None:
        peak = max(peak, vm_hwm_kb(proc.pid))
        time.sleep(0.02)
    out, err = proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"copydicom {what} failed: {err[-800:]}")
    result = json.loads([line for line in out.splitlines() if line.startswith("{")][-1])  # py-spy prints too
    return float(result["seconds"]), peak, result


def settle() -> None:
    """Write back what earlier steps left dirty in the page cache before a timed step.

    Every step writes the whole data set again (storescp, Orthanc, the spool): at N=1000 a later step
    otherwise ran into the kernel's dirty-page throttling and paid for the writeback of the steps
    before it (copydicom -> storescp measured 33/s right after Orthanc's job, 187/s at N=400).
    """
    os.sync()


def push(port: int, files: list[Path], called: str) -> float:
    """Seconds for storescu to push ``files`` in one association."""
    args = [need("storescu"), "-aet", "STORESCU", "-aec", called, "-R", "127.0.0.1", str(port)]
    settle()
    started = time.perf_counter()
    done = subprocess.run(args + [str(f) for f in files], env=dcmtk_env(), capture_output=True, text=True)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"storescu failed: {done.stderr[-500:]}")
    return seconds


def wait(condition, what: str, timeout: float = 900) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def orthanc_http_ingest(dest: OrthancServer, files: list[Path], clients: int = 4) -> float:
    """Seconds for ``clients`` keep-alive HTTP clients to ``POST /instances`` every file into ``dest``."""
    import queue
    import threading

    dest.clear()
    todo: queue.Queue[bytes] = queue.Queue()
    for f in files:
        todo.put(f.read_bytes())
    errors: list[str] = []

    def client() -> None:
        with requests.Session() as session:
            session.auth = dest.auth
            while True:
                try:
                    data = todo.get_nowait()
                except queue.Empty:
                    return
                reply = session.post(f"{dest.url}/instances", data=data, timeout=120,
                                     headers={"Content-Type": "application/dicom"})
                if not reply.ok:
                    errors.append(f"{reply.status_code}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    settle()
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    seconds = time.perf_counter() - started
    if errors or int(dest.statistics()["CountInstances"]) != len(files):
        raise SystemExit(f"Orthanc HTTP ingest failed: {errors[:5]}")
    return seconds


def orthanc_dicom_ingest(dest: OrthancServer, files: list[Path]) -> float:
    """Seconds for ``storescu`` to push every file into ``dest``'s DICOM port (one association)."""
    dest.clear()
    seconds = push(dest.dicom_port, files, dest.name)
    if int(dest.statistics()["CountInstances"]) != len(files):
        raise SystemExit("Orthanc DICOM ingest: not every instance stored")
    return seconds


def receive_ceiling(files: list[Path], work: Path) -> float:
    with StoreSCP(aet="CEILING", fork=True, folder=work / "ceiling") as scp:
        seconds = push(scp.port, files, "CEILING")
        wait(lambda: len(scp.files()) == len(files), "storescp files")
    shutil.rmtree(work / "ceiling", ignore_errors=True)
    return seconds


class OwnFilesystem:
    """A loop-mounted ext4 of its own (root only), so that the spool's fsyncs do not also flush what
    Orthanc writes on the same ext4 journal (data=ordered commits the whole journal on fsync)."""

    def __init__(self, work: Path, size: str = "1G") -> None:
        self.image = work / "spool.img"
        self.mount = work / "spoolfs"

    def __enter__(self) -> Path:
        self.mount.mkdir()
        subprocess.run(["truncate", "-s", "1G", str(self.image)], check=True)
        subprocess.run(["mkfs.ext4", "-q", "-F", str(self.image)], check=True)
        subprocess.run(["mount", "-o", "loop", str(self.image), str(self.mount)], check=True)
        return self.mount

    def __exit__(self, *exc: object) -> None:
        subprocess.run(["umount", str(self.mount)], check=False)
        self.image.unlink(missing_ok=True)


def receive_copydicom(files: list[Path], work: Path, dest: OrthancServer, *, fsync: bool,
                      workers: int, spool: Path | None = None, receiver: str = "process",
                      cpu: dict[str, float] | None = None) -> tuple[float, float, int]:
    """(push seconds, end-to-end seconds, peak RSS kB: the listener's plus its receiving child's).

    ``cpu`` receives the CPU seconds of each process during the run: ``receiver`` (the receiving child,
    or the one process with ``receiver: thread``), ``drain`` (the listener's own process when it has a
    child), ``orthanc`` (the destination) and ``storescu``.
    """
    dest.clear()
    port = free_port()
    folder = work / f"listen-fsync-{fsync}-{receiver}-{'own' if spool else 'shared'}"
    spool = spool or folder / "spool"
    config = listener_config(folder, port=port, allowed_calling=["STORESCU"], fsync=fsync, spool=str(spool),
                             receiver=receiver,
                             destinations={"dest": {"type": "orthanc", "url": dest.url, "user": dest.user,
                                                    "password": dest.password}})
    text = config.read_text().replace("workers: 4", f"workers: {workers}")
    config.write_text(text)
    listener = ListenProcess(config, port).start()
    assert listener.process is not None
    pids = [listener.process.pid, *children(listener.process.pid)]
    assert dest.process is not None
    before = {pid: cpu_seconds(pid) for pid in [*pids, dest.process.pid]}
    sender_before = children_cpu()
    spy = None
    profile = os.environ.get("DIMSE_BENCH_PROFILE_DRAIN")
    if profile and len(pids) > 1 and cpu is not None and fsync:  # py-spy the drain (the listener's own process)
        spy = subprocess.Popen([str(Path(sys.executable).with_name("py-spy")), "record", "-r", "500", "-f", "raw",
                                "-o", profile, "-p", str(pids[0])], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    try:
        started = time.perf_counter()
        pushed = push(port, files, "COPYDICOM")
        peak = sum(vm_hwm_kb(pid) for pid in pids)

        def done() -> bool:
            nonlocal peak
            peak = max(peak, sum(vm_hwm_kb(pid) for pid in pids))
            return int(dest.statistics()["CountInstances"]) == len(files) and not list(spool.glob("*.dcm"))

        wait(done, "delivery to Orthanc")
        end_to_end = time.perf_counter() - started
        if cpu is not None:
            used = {pid: cpu_seconds(pid) - before[pid] for pid in before}
            cpu["orthanc"] = used[dest.process.pid]
            cpu["storescu"] = children_cpu() - sender_before
            if len(pids) > 1:
                cpu["receiver"] = used[pids[1]]
                cpu["drain"] = used[pids[0]]
            else:
                cpu["receiver"] = used[pids[0]]
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(60)
        listener.stop()
    return pushed, end_to_end, peak


_CHILD = """
import sys, time, json, resource
from pathlib import Path
sys.path.insert(0, {root!r})
from copydicom.clients.orthanc import OrthancClient, OrthancConfig
from copydicom.endpoints.dimse import DimseConfig
from copydicom.endpoints.dimse.scu import DimseDestination
from copydicom.ledger import Ledger
from copydicom.pipeline import Pipeline
from copydicom.sources.orthanc import OrthancSource
cfg = OrthancConfig.from_url({src!r})
cfg = cfg.model_copy(update={{'user': {user!r}, 'password': {password!r}}})
source = OrthancSource(OrthancClient(cfg, pool_size={workers} + 2, side="source"))
import copydicom.endpoints.dimse.scu as scu
scu.RAW_SEND = {raw!r}  # False: decode with pydicom and let pynetdicom re-encode (the path before raw sends)
dest = DimseDestination(DimseConfig.from_url({dest!r}, name="peer"))
ledger = Ledger({state!r})
pipeline = Pipeline("bench", source, [], [dest], ledger, quarantine_dir=Path({state!r}).parent / "q", workers={workers})
started = time.perf_counter()
cpu0 = resource.getrusage(resource.RUSAGE_SELF)
summary = pipeline.run(source.all_instances())
seconds = time.perf_counter() - started
cpu1 = resource.getrusage(resource.RUSAGE_SELF)
pipeline.close(); dest.close()
print(json.dumps({{"seconds": seconds, "stored": summary.counts["stored"], "associations": dest.associations,
                  "cpu": cpu1.ru_utime - cpu0.ru_utime + cpu1.ru_stime - cpu0.ru_stime,
                  "line": summary.line()}}))
"""


_QR_CHILD = """
import sys, time, json, resource
from pathlib import Path
sys.path.insert(0, {root!r})
from copydicom.endpoints.dimse import DimseConfig
from copydicom.endpoints.dimse.qr import QueryRetrieveSource
from copydicom.ledger import Ledger
from copydicom.pipeline import Pipeline


class Null:
    name = "null"
    def has(self, ids, *, series_hint=None): return set()
    def store(self, instance): return "stored"
    def close(self): pass


cfg = DimseConfig.from_url({url!r}, name="pacs")
source = QueryRetrieveSource(cfg, since="1900-01-01")
pipeline = Pipeline("pull", source, [], [Null()], Ledger({state!r}), quarantine_dir=Path({state!r}).parent / "q",
                    workers={workers})
started = time.perf_counter()
summary = pipeline.run(source.batches())
seconds = time.perf_counter() - started
pipeline.close(); source.close()
print(json.dumps({{"seconds": seconds, "stored": summary.counts.get("stored", 0), "line": summary.line(),
                  "series": source.series_retrievals, "single": source.instance_retrievals,
                  "spool_peak": source.spool_peak}}))
"""


def pull_copydicom(url: str, work: Path, workers: int, tag: str) -> tuple[float, int, dict[str, Any]]:
    """Seconds, peak RSS (kB) and the child's report of a Q/R pull of everything into a null destination."""
    state = work / f"pull-{tag}" / "state.db"
    state.parent.mkdir(parents=True, exist_ok=True)
    code = _QR_CHILD.format(root=str(ROOT), url=url, state=str(state), workers=workers)
    return run_child([sys.executable, "-c", code], "pull")


def qr_part(opts: argparse.Namespace, files: list[Path], work: Path, src: OrthancServer) -> None:
    """(c) Q/R pull from Orthanc's DICOM port: one C-GET per instance against one per series, same run."""
    n = len(files)
    if not int(src.statistics()["CountInstances"]):
        for f in files:
            src.upload(f.read_bytes())
    print(f"(c) Q/R pull (C-FIND + C-GET) of {n} instances from Orthanc's DICOM port, {opts.workers} workers")
    for level in ("image", "series"):
        url = f"dicom://SRC@127.0.0.1:{src.dicom_port}?calling=COPYDICOM&retrieve_level={level}"
        seconds, peak, result = pull_copydicom(url, work, opts.workers, level)
        assert result["stored"] == n, result
        print(f"  retrieve_level={level:6}: {n / seconds:7.1f}/s ({result['series']} series retrievals, "
              f"{result['single']} single), peak RSS {peak / 1024:.0f} MB, spool peak "
              f"{result['spool_peak'] / 1e6:.0f} MB")


def send_copydicom(src: OrthancServer, dest_url: str, work: Path, workers: int, tag: str,
                   profile: Path | None = None, raw: bool = True) -> tuple[float, int, dict[str, Any]]:
    state = work / f"send-{tag}" / "state.db"
    state.parent.mkdir(parents=True, exist_ok=True)
    code = _CHILD.format(root=str(ROOT), src=src.url, user=src.user, password=src.password, dest=dest_url,
                         state=str(state), workers=workers, raw=raw)
    args = [sys.executable, "-c", code]
    settle()
    if profile is not None:  # py-spy (in the venv) samples every thread of the child; raw = collapsed stacks
        spy = Path(sys.executable).with_name("py-spy")
        args = [str(spy), "record", "-r", "500", "-f", "raw", "--threads", "--idle", "-o", f"{profile}-{tag}.txt",
                "--"] + args
    return run_child(args, "send")


def send_orthanc(src: OrthancServer, modality: str, ids: list[str]) -> float:
    settle()
    started = time.perf_counter()
    reply = requests.post(f"{src.url}/modalities/{modality}/store", json={"Resources": ids, "Synchronous": True},
                          auth=src.auth, timeout=3600)
    seconds = time.perf_counter() - started
    if not reply.ok:
        raise SystemExit(f"Orthanc store job failed: {reply.status_code} {reply.text[:300]}")
    return seconds


def receiving(files: list[Path], work: Path, dest: OrthancServer, opts: argparse.Namespace) -> None:
    n = len(files)
    print("(a) receiving: storescu -> ...")
    ceiling = receive_ceiling(files, work)
    print(f"  storescp --fork (files, no fsync), ceiling:          {n / ceiling:7.1f} instances/s  ({ceiling:.2f} s)")
    http = orthanc_http_ingest(dest, files)
    dicom = orthanc_dicom_ingest(dest, files)
    print(f"  destination Orthanc ingest, HTTP POST, 4 clients:    {n / http:7.1f} instances/s")
    print(f"  destination Orthanc ingest, storescu -> DICOM port:  {n / dicom:7.1f} instances/s")
    destination = min(http, dicom)  # the faster of its two ingest paths
    bound = max(ceiling, destination)  # seconds: the slower of storescp and the destination
    print(f"  bound for end to end = min(storescp, destination):   {n / bound:7.1f} instances/s")

    def show(label: str, pushed: float, e2e: float, peak: int, cpu: dict[str, float]) -> None:
        parts = ", ".join(f"{k} {v / n * 1000:.2f}" for k, v in cpu.items())
        total = sum(cpu.values()) / n
        cores = os.cpu_count() or 1
        print(f"  copydicom listen -> Orthanc, {label}:\n"
              f"    push (received, durable, acknowledged) {n / pushed:7.1f}/s = {ceiling / pushed:.2f}x storescp\n"
              f"    end to end                             {n / e2e:7.1f}/s = {ceiling / e2e:.2f}x storescp, "
              f"{bound / e2e:.2f}x min(storescp, destination); peak RSS {peak / 1024:.0f} MB (all its processes)\n"
              f"    CPU ms per instance: {parts}; sum {total * 1000:.2f} ms, so {cores} cores allow at most "
              f"{cores / total:.0f}/s")

    for fsync in (True, False):
        cpu: dict[str, float] = {}
        show(f"fsync {'on' if fsync else 'off'}", *receive_copydicom(files, work, dest, fsync=fsync,
                                                                    workers=opts.workers, cpu=cpu), cpu)
    cpu = {}
    show("fsync on, receiver: thread (one process)", *receive_copydicom(
        files, work, dest, fsync=True, workers=opts.workers, receiver="thread", cpu=cpu), cpu)
    if opts.own_spool_fs:
        with OwnFilesystem(work) as mount:
            cpu = {}
            show("fsync on, spool on its own ext4", *receive_copydicom(
                files, work, dest, fsync=True, workers=opts.workers, spool=mount / "spool", cpu=cpu), cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rows", type=int, default=512)
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--orthanc-nagle", action="store_true",
                        help="do not set TCP_NODELAY=1 for the Orthanc servers (figures of earlier runs)")
    parser.add_argument("--parts", default="receive,send,qr",
                        help="comma-separated parts to run: receive (a), send (b), qr (c)")
    parser.add_argument("--decoded", action="store_true",
                        help="also send to storescp with the original bytes decoded and re-encoded (the former path)")
    parser.add_argument("--profile", type=Path, default=None,
                        help="record the send child with py-spy into PROFILE-<peer>.txt (figures then include py-spy)")
    parser.add_argument("--own-spool-fs", action="store_true",
                        help="also run with the spool on a loop-mounted ext4 of its own (needs root)")
    opts = parser.parse_args()
    # Orthanc's DICOM side is DCMTK: without TCP_NODELAY its small PDUs wait for delayed ACKs (storescu ->
    # Orthanc measured 20/s instead of 220/s, and Orthanc's own C-STORE job in (b) was 3-6x slower). Earlier
    # runs of this script (before 2026-11-29 20:00) left it unset: --orthanc-nagle reproduces them.
    if not opts.orthanc_nagle:
        os.environ["TCP_NODELAY"] = "1"
    n = opts.n
    parts = set(opts.parts.split(","))
    work = Path(tempfile.mkdtemp(prefix="copydicom-dimse-bench-"))
    files = []
    (work / "in").mkdir()
    for i, data in enumerate(ct_study_files(n, series_per_study=4, rows=opts.rows, cols=opts.rows, seed="bench")):
        path = work / "in" / f"{i:05d}.dcm"
        path.write_bytes(data)
        files.append(path)
    size_mb = sum(f.stat().st_size for f in files) / 1e6
    print(f"dimse benchmark: {n} instances, {size_mb:.0f} MB, {opts.workers} workers, "
          f"{os.cpu_count()} cores (shared)")

    scp_port = free_port()
    dest = OrthancServer(name="DEST", workdir=work / "dest")
    src = OrthancServer(name="SRC", workdir=work / "src",
                        modalities={"dest": ("DEST", "127.0.0.1", 0), "scp": ("SCP", "127.0.0.1", scp_port),
                                    "copydicom": ("COPYDICOM", "127.0.0.1", 104)})  # may C-FIND and C-GET
    dest.start()
    src.modalities["dest"] = ("DEST", "127.0.0.1", dest.dicom_port)
    src.start()
    try:
        if "receive" in parts:
            receive_part(opts, files, work, dest)
        if "send" in parts:
            send_part(opts, files, work, src, dest, scp_port)
        if "qr" in parts:
            qr_part(opts, files, work, src)
    finally:
        src.stop()
        dest.stop()
        if not opts.keep:
            shutil.rmtree(work, ignore_errors=True)


def receive_part(opts: argparse.Namespace, files: list[Path], work: Path, dest: OrthancServer) -> None:
    receiving(files, work, dest, opts)


def send_part(opts: argparse.Namespace, files: list[Path], work: Path, src: OrthancServer, dest: OrthancServer,
              scp_port: int) -> None:
    n = len(files)
    print("(b) sending the same instances from a source Orthanc")
    ids = [src.upload(f.read_bytes())["ID"] for f in files]
    dest.clear()
    orthanc_s = send_orthanc(src, "dest", ids)
    assert int(dest.statistics()["CountInstances"]) == n
    dest.clear()
    ours_s, peak, result = send_copydicom(src, f"dicom://DEST@127.0.0.1:{dest.dicom_port}", work, opts.workers,
                                          "orthanc", opts.profile)
    assert int(dest.statistics()["CountInstances"]) == n, result
    print(f"  -> Orthanc DICOM port: Orthanc's job {n / orthanc_s:7.1f}/s; copydicom {n / ours_s:7.1f}/s "
          f"= {orthanc_s / ours_s:.2f}x, {result['associations']} associations, peak RSS {peak / 1024:.0f} MB, "
          f"sender CPU {1000 * result['cpu'] / n:.1f} ms/instance")
    with StoreSCP(aet="SCP", fork=True, port=scp_port, folder=work / "scp-orthanc") as scp:
        orthanc_s = send_orthanc(src, "scp", ids)
        wait(lambda: len(scp.files()) == n, "storescp files")
    with StoreSCP(aet="SCP", fork=True, port=scp_port, folder=work / "scp-copydicom") as scp:
        ours_s, peak, result = send_copydicom(src, f"dicom://SCP@127.0.0.1:{scp_port}", work, opts.workers, "scp",
                                              opts.profile)
        wait(lambda: len(scp.files()) == n, "storescp files")
    print(f"  -> storescp --fork:     Orthanc's job {n / orthanc_s:7.1f}/s; copydicom {n / ours_s:7.1f}/s "
          f"= {orthanc_s / ours_s:.2f}x, {result['associations']} associations, peak RSS {peak / 1024:.0f} MB, "
          f"sender CPU {1000 * result['cpu'] / n:.1f} ms/instance")
    if opts.decoded:
        with StoreSCP(aet="SCP", fork=True, port=scp_port, folder=work / "scp-decoded") as scp:
            ours_s, peak, result = send_copydicom(src, f"dicom://SCP@127.0.0.1:{scp_port}", work, opts.workers,
                                                  "scp-decoded", raw=False)
            wait(lambda: len(scp.files()) == n, "storescp files")
        print(f"  -> storescp --fork, decoded and re-encoded (former path): copydicom {n / ours_s:7.1f}/s "
              f"= {orthanc_s / ours_s:.2f}x Orthanc's job, sender CPU {1000 * result['cpu'] / n:.1f} ms/instance")


if __name__ == "__main__":
    main()
