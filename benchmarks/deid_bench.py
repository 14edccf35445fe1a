#!/usr/bin/env python3
"""De-identification throughput against references measured in the same run.

Usage::

    PYTHONPATH=. .venv/bin/python benchmarks/deid_bench.py [--n 200] [--rounds 3]
    PYTHONPATH=. .venv/bin/python benchmarks/deid_bench.py --replicate 300 [--workers 4]

File to file (default): generates ``n`` synthetic 512x512 CT files
(tests.support.synthetic), then for each tool reads every file, de-identifies it
and writes it to a new file: pydicom read+write only (the floor), copydicom's
DeidStage (default profile), dicognito and dicom-anonymizer (the ``bench``
extra).  Prints files/s (median and best of ``rounds``, interleaved), the ratios,
and copydicom's CPU seconds per instance per phase of the stage (parse,
deidentify, write, validate).  Target: copydicom >= 2x dicognito (median).

``--replicate N``: three private Orthanc servers on loopback (a source and two
destinations), N synthetic CT instances in the source; ``copydicom replicate``
plain to one destination, then with ``--profile default`` to the other, as child
processes in the same run.  Prints instances/s of each, the ratio (target
de-identified >= 0.7x plain), and each child's CPU seconds per instance (user +
system, from ``getrusage``), next to the stage's per-phase CPU per instance.

``--pixels N`` (file-to-file mode; default 40, 0 skips) adds Clean Pixel Data on N 640x480
ultrasound-like images (``benchmarks/pixel_bench.py``; target >= 4 images/s).
"""

from __future__ import annotations

import argparse
import logging
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pydicom import dcmread  # noqa: E402

from copydicom.model import Instance, InstanceRef  # noqa: E402
from copydicom.stages.deid import DeidProfile, DeidStage  # noqa: E402
from tests.support.synthetic import ct_study_files  # noqa: E402

KEY = b"benchmark-key-0123456789abcdef01"


def _run(files: list[Path], out: Path, one: Callable[[Path, Path], None]) -> float:
    start = time.perf_counter()
    for i, f in enumerate(files):
        one(f, out / f"{i}.dcm")
    return len(files) / (time.perf_counter() - start)


def stage_cpu_per_phase(data: list[bytes]) -> dict[str, float]:
    """CPU milliseconds per instance of each phase of DeidStage.process (this thread), after a warm-up."""
    stage = DeidStage(DeidProfile.default(), KEY)
    for d in data[:10]:
        stage.process(Instance(InstanceRef("warm"), d))
    stage.cpu_seconds = {}
    for d in data:
        stage.process(Instance(InstanceRef("b"), d))
    return {phase: 1000 * s / len(data) for phase, s in stage.cpu_seconds.items()}


def _print_phases(phases: dict[str, float]) -> None:
    total = sum(phases.values())
    parts = "  ".join(f"{k} {v:.3f}" for k, v in phases.items())
    print(f"  copydicom DeidStage CPU ms/instance: {parts}  total {total:.3f}")


def file_to_file(n: int, rounds: int) -> None:
    from dicognito.anonymizer import Anonymizer
    from dicomanonymizer import anonymize_dicom_file

    stage = DeidStage(DeidProfile.default(), KEY)
    cognito = Anonymizer()

    def readwrite(src: Path, dst: Path) -> None:
        dcmread(src).save_as(dst)

    def copydicom(src: Path, dst: Path) -> None:
        dst.write_bytes(stage.process(Instance(InstanceRef(str(src)), src.read_bytes())).data)

    def dicognito(src: Path, dst: Path) -> None:
        ds = dcmread(src)
        cognito.anonymize(ds)
        ds.save_as(dst)

    def dicom_anonymizer(src: Path, dst: Path) -> None:
        anonymize_dicom_file(str(src), str(dst))

    tools: dict[str, Callable[[Path, Path], None]] = {
        "pydicom read+write": readwrite,
        "copydicom": copydicom,
        "dicognito": dicognito,
        "dicom-anonymizer": dicom_anonymizer,
    }
    with tempfile.TemporaryDirectory(prefix="deid-bench-") as tmp:
        src_dir, out_dir = Path(tmp, "in"), Path(tmp, "out")
        src_dir.mkdir()
        out_dir.mkdir()
        files, data = [], []
        for i, payload in enumerate(ct_study_files(n, patients=4)):
            p = src_dir / f"{i}.dcm"
            p.write_bytes(payload)
            files.append(p)
            data.append(payload)
        rates: dict[str, list[float]] = {name: [] for name in tools}
        for _ in range(rounds):
            for name, fn in tools.items():  # interleaved rounds: machine noise hits all alike
                rates[name].append(_run(files, out_dir, fn))
        phases = stage_cpu_per_phase(data)
    med = {name: statistics.median(r) for name, r in rates.items()}
    print(f"{n} CT files (512x512, 16-bit), file to file, {rounds} interleaved rounds (median / best)")
    for name in tools:
        print(f"  {name:20s} {med[name]:8.1f} / {max(rates[name]):8.1f} files/s")
    c = med["copydicom"]
    print(f"copydicom / dicognito          = {c / med['dicognito']:.2f}x (median; target >= 2.0)")
    print(f"copydicom / dicom-anonymizer   = {c / med['dicom-anonymizer']:.2f}x (median)")
    print(f"read+write / copydicom         = {med['pydicom read+write'] / c:.2f}x")
    _print_phases(phases)


def _child(args: list[str], checkout: Path = ROOT, *, check: bool = True) -> tuple[float, float, str]:
    """Run ``copydicom`` (of ``checkout``) as a child; (wall seconds, its CPU seconds user+system, last line)."""
    env = dict(os.environ, PYTHONPATH=str(checkout))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    # cwd too: ``python -m`` puts the working directory ahead of PYTHONPATH on sys.path.
    proc = subprocess.run([sys.executable, "-m", "copydicom", *args], capture_output=True, text=True, env=env,
                          cwd=checkout)
    wall = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0 and check:
        sys.stderr.write(proc.stderr)
        raise SystemExit(f"copydicom exited with {proc.returncode}")
    user, system = after.ru_utime - before.ru_utime, after.ru_stime - before.ru_stime
    _LAST_SYS[0] = system
    lines = proc.stdout.strip().splitlines()
    return wall, user + system, lines[-1] if lines else ""


_LAST_SYS = [0.0]  # system CPU seconds of the last child


def replicate(n: int, workers: int, baseline: Path | None, rounds: int) -> None:
    from tests.support.orthanc import OrthancServer
    from tests.support.synthetic import upload_all

    work = Path(tempfile.mkdtemp(prefix="deid-replicate-bench-"))
    key = work / "deid.key"
    key.write_bytes(KEY)
    key.chmod(0o600)
    dests = {name: OrthancServer(name.upper(), workdir=work / name)
             for name in ("plain", "deid") + (("baseline",) if baseline is not None else ())}
    source = OrthancServer("SOURCE", workdir=work / "source")
    servers = [*dests.values(), source]
    try:
        for server in servers:
            server.start()
        payloads = list(ct_study_files(n, patients=max(1, n // 100)))
        loaded = upload_all(source.upload, payloads, threads=4)
        print(f"loaded {loaded} synthetic CT instances (512x512, 16-bit) into the source")
        common = ["replicate", "--src", source.url_with_credentials, "--workers", str(workers)]
        deid_args = ["--profile", "default", "--key-file", str(key)]
        runs: dict[str, tuple[Path, list[str]]] = {
            "plain": (ROOT, [*common, "--dest", dests["plain"].url_with_credentials]),
            "deid": (ROOT, [*common, "--dest", dests["deid"].url_with_credentials, *deid_args]),
        }
        if baseline is not None:
            runs["baseline"] = (baseline, [*common, "--dest", dests["baseline"].url_with_credentials, *deid_args])
        walls: dict[str, list[float]] = {name: [] for name in runs}
        cpus: dict[str, list[float]] = {name: [] for name in runs}
        systems: dict[str, list[float]] = {name: [] for name in runs}
        for r in range(rounds):  # interleaved: machine noise hits every configuration alike
            for name, (checkout, argv) in runs.items():
                dests[name].clear()
                # Start-up (imports, tables, key): the same command on an empty selection, subtracted.
                idle_wall, idle_cpu, _ = _child([*argv, "--ids", "ffffffff-ffffffff-ffffffff-ffffffff-ffffffff",
                                                 "--state", str(work / f"idle-{name}-{r}.db")], checkout, check=False)
                idle_sys = _LAST_SYS[0]
                full = [*argv, "--state", str(work / f"{name}-{r}.db")]
                wall, cpu, line = _child(full, checkout)
                count = dests[name].statistics()["CountInstances"]
                assert count == n, f"{name} replicate copied {count} of {n}"
                walls[name].append(wall - idle_wall)
                cpus[name].append(1000 * (cpu - idle_cpu) / n)
                systems[name].append(1000 * (_LAST_SYS[0] - idle_sys) / n)
                print(f"  round {r + 1} {name:8s}: {n / (wall - idle_wall):6.1f} instances/s, CPU "
                      f"{cpus[name][-1]:.2f} ms/instance   [{line}]")
        rate = {name: n / statistics.median(w) for name, w in walls.items()}
        cpu_ms = {name: statistics.median(c) for name, c in cpus.items()}
        sys_ms = {name: statistics.median(c) for name, c in systems.items()}
        phases = stage_cpu_per_phase(payloads[: min(n, 200)])
        print(f"medians of {rounds} rounds; wall and CPU (user+system) of each child minus those of the same command"
              " on an empty selection (start-up excluded)")
        for name in runs:
            label = f"baseline {baseline}" if name == "baseline" else name
            print(f"  {label:30s} {rate[name]:7.1f} instances/s  CPU {cpu_ms[name]:.2f} ms/instance "
                  f"(system {sys_ms[name]:.2f})  / plain = {rate[name] / rate['plain']:.2f}x")
        print(f"de-identified / plain = {rate['deid'] / rate['plain']:.2f}x (target >= 0.7); extra client CPU "
              f"{cpu_ms['deid'] - cpu_ms['plain']:.2f} ms/instance")
        _print_phases(phases)
        print(f"machine: {os.cpu_count()} cores; N={n}; workers={workers}")
    finally:
        for server in servers:
            server.cleanup()
        import shutil

        shutil.rmtree(work, ignore_errors=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--replicate", type=int, metavar="N", help="replicate N instances plain and de-identified")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--pixels", type=int, default=40, help="images for the clean_pixel_data section (0: skip)")
    parser.add_argument("--baseline", type=Path,
                        help="with --replicate: also time a de-identified replicate by this checkout (e.g. main)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    if args.replicate:
        replicate(args.replicate, args.workers, args.baseline, args.rounds)
    else:
        file_to_file(args.n, args.rounds)
        if args.pixels:  # Clean Pixel Data on 640x480 ultrasound-like frames, both OCR passes (pixel_bench.py)
            from benchmarks.pixel_bench import run as pixel_run

            pixel_run(args.pixels, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
