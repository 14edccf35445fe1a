#!/usr/bin/env python3
"""Benchmark: dose extraction (reports/s) and tag flattening (tags/s).

Run from the worktree root::

    PYTHONPATH=. /work/venv/bin/python benchmarks/dose_bench.py [--reports 300] [--images 1000]

Inputs are generated in the run: CT dose SRs (TID 10011, 20 events each, two
X-ray sources on every other event) with the fixture builder of the unit tests,
and synthetic CT images from :mod:`tests.support.synthetic`.  Each figure
is printed beside a reference measured in the same run: parsing the same bytes
with ``pydicom.dcmread(stop_before_pixels=True)`` alone.
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable
from typing import Any

import pydicom

from copydicom.stages.dose import extract_dose
from copydicom.stages.flatten import flatten
from tests.support.synthetic import ct_dataset
from tests.support.synthetic import to_bytes as ct_bytes
from tests.unit.dose import builder as b


def make_reports(n: int, events: int) -> list[bytes]:
    out = []
    for r in range(n):
        evs = []
        for e in range(events):
            sources = [b.ct_source("A", "120", str(100 + e))]
            if e % 2:
                sources.append(b.ct_source("B", "140", str(80 + e)))
            evs.append(b.ct_event(f"1.2.826.0.1.3680043.8.498.{r}.{e}", ctdivol=f"{5 + e * 0.1:.2f}",
                                  dlp=f"{100 + e:.1f}", sources=sources))
        ds = b.ct_report(evs, total_dlp="9999.9", n_events=str(events), sop_uid=f"1.2.826.0.1.3680043.8.499.{r}")
        out.append(b.to_bytes(ds))
    return out


def count_values(obj: Any) -> int:
    """Number of flattened leaf values (tags, including those inside sequences)."""
    if isinstance(obj, dict):
        return sum(count_values(v) if isinstance(v, (dict, list)) and not ("BinaryData" in v if isinstance(v, dict)
                                                                            else False) else 1
                   for v in obj.values())
    if isinstance(obj, list):
        return sum(count_values(v) for v in obj if isinstance(v, dict)) or 1
    return 1


def timed(label: str, items: list[bytes], fn: Callable[[bytes], Any]) -> float:
    start = time.perf_counter()
    for data in items:
        fn(data)
    elapsed = time.perf_counter() - start
    return elapsed


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def walk(ds: pydicom.Dataset) -> int:
    """Touch every element, nested ones included (what any pydicom-based reader pays)."""
    n = 0
    for elem in ds:
        n += 1
        if elem.VR == "SQ":
            for child in elem.value:
                n += walk(child)
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reports", type=int, default=300)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--images", type=int, default=1000)
    args = parser.parse_args()

    reports = make_reports(args.reports, args.events)
    images = [ct_bytes(ct_dataset(0, 0, 0, i, rows=64, cols=64)) for i in range(args.images)]

    docs_per_report = len(extract_dose(read(reports[0])))
    t_read = timed("read", reports, read)
    t_walk = timed("walk", reports, lambda d: walk(read(d)))
    t_dose = timed("dose", reports, lambda d: extract_dose(read(d)))
    print(f"dose extraction: {args.reports} CT dose reports x {args.events} events ({docs_per_report} documents each)")
    print(f"  read only (lazy, reference):        {args.reports / t_read:10.1f} reports/s")
    print(f"  read + touch every element (floor): {args.reports / t_walk:10.1f} reports/s")
    print(f"  read + extract_dose:                {args.reports / t_dose:10.1f} reports/s "
          f"({args.reports * docs_per_report / t_dose:.0f} documents/s; {t_dose / t_walk:.2f}x the floor)")

    tags_image = count_values(flatten(read(images[0])))
    tags_report = count_values(flatten(read(reports[0])))
    t_read_img = timed("read", images, read)
    t_flat_img = timed("flatten", images, lambda d: flatten(read(d)))
    t_flat_rep = timed("flatten", reports, lambda d: flatten(read(d)))
    print(f"flatten: {args.images} CT images ({tags_image} values each), "
          f"{args.reports} dose SRs ({tags_report} values each)")
    print(f"  images read only (reference): {args.images / t_read_img:10.1f} instances/s")
    print(f"  images read + flatten:        {args.images / t_flat_img:10.1f} instances/s, "
          f"{args.images * tags_image / t_flat_img:10.0f} tags/s ({t_flat_img / t_read_img:.2f}x the read time)")
    print(f"  dose SRs read + flatten:      {args.reports / t_flat_rep:10.1f} instances/s, "
          f"{args.reports * tags_report / t_flat_rep:10.0f} tags/s")


if __name__ == "__main__":
    main()
