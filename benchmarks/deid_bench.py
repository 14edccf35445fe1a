#!/usr/bin/env python3
"""De-identification throughput, file to file, against references measured in the same run.

Usage::

    PYTHONPATH=. /work/venv/bin/python benchmarks/deid_bench.py [--n 200] [--rounds 3]

Generates ``n`` synthetic 512x512 CT files (tests.support.synthetic),
then for each tool reads every file, de-identifies it and writes it to a new
file: pydicom read+write only (the floor), copydicom's DeidStage (default
profile), dicognito and dicom-anonymizer (the ``bench`` extra).  Prints
files/s (best of ``rounds``) and ratios.  Targets: copydicom >= 1.5x
dicognito, >= 1.3x dicom-anonymizer, within 2.5x of read+write.
``--pixels N`` (default 40, 0 skips) adds Clean Pixel Data on N 640x480
ultrasound-like images (``benchmarks/pixel_bench.py``; target >= 4 images/s).
"""

from __future__ import annotations

import argparse
import logging
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from pydicom import dcmread

from copydicom.model import Instance, InstanceRef
from copydicom.stages.deid import DeidProfile, DeidStage
from tests.support.synthetic import ct_study_files


def _run(files: list[Path], out: Path, one: Callable[[Path, Path], None]) -> float:
    start = time.perf_counter()
    for i, f in enumerate(files):
        one(f, out / f"{i}.dcm")
    return len(files) / (time.perf_counter() - start)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--pixels", type=int, default=40, help="images for the clean_pixel_data section (0: skip)")
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    logging.disable(logging.WARNING)
    from dicognito.anonymizer import Anonymizer
    from dicomanonymizer import anonymize_dicom_file

    stage = DeidStage(DeidProfile.default(), b"benchmark-key-0123456789abcdef01")
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
        files = []
        for i, data in enumerate(ct_study_files(args.n, patients=4)):
            p = src_dir / f"{i}.dcm"
            p.write_bytes(data)
            files.append(p)
        best = {name: 0.0 for name in tools}
        for _ in range(args.rounds):
            for name, fn in tools.items():  # interleaved rounds: machine noise hits all alike
                best[name] = max(best[name], _run(files, out_dir, fn))
    print(f"{args.n} CT files (512x512, 16-bit), file to file, best of {args.rounds} rounds")
    for name, rate in best.items():
        print(f"  {name:20s} {rate:8.1f} files/s")
    c = best["copydicom"]
    print(f"copydicom / dicognito          = {c / best['dicognito']:.2f}x (target >= 1.5)")
    print(f"copydicom / dicom-anonymizer   = {c / best['dicom-anonymizer']:.2f}x (target >= 1.3)")
    print(f"read+write / copydicom         = {best['pydicom read+write'] / c:.2f}x (target <= 2.5)")
    if args.pixels:  # Clean Pixel Data on 640x480 ultrasound-like frames, both OCR passes (pixel_bench.py)
        from benchmarks.pixel_bench import run as pixel_run

        pixel_run(args.pixels, args.rounds)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
