"""Benchmark: what writing the LIDC-grounded phantom costs, per scan, per slice and per step.

Writes the default phantom's first N scans (same scan choice as `dvc repro`) on one core,
times each scan, then profiles one scan to split the time between its steps (tree growth,
tube rendering, parenchyma, noise, DICOM writing).

Usage:
    python bench/phantom_speed.py --scans 6
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import tempfile
import time
from pathlib import Path

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.phantom.writer import select_scans, write_phantom_scan

STEPS = {
    "tree growth": "grow_tree",
    "tube rendering": "render_tubes",
    "fissures": "render_sheet",
    "parenchyma texture": "_parenchyma",
    "noise": "nps_noise",
    "nodules": "_draw_nodules",
    "DICOM writing": "save_as",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    db = LidcDatabase()
    scans = select_scans(db, args.scans, args.seed, min_readers=3)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for scan in scans:
            nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
            start = time.perf_counter()
            written = write_phantom_scan(scan, nodules, Path(tmp), args.seed, 3, 34.0)
            rows.append(
                (
                    scan.patient_id,
                    scan.slice_thickness_mm,
                    written.n_slices,
                    time.perf_counter() - start,
                )
            )
        slowest = max(scans, key=lambda s: s.slice_thickness_mm)
        profile = cProfile.Profile()
        nodules = cluster_nodules(slowest, db.annotations(slowest.scan_id))
        profile.enable()
        write_phantom_scan(slowest, nodules, Path(tmp) / "profiled", args.seed, 3, 34.0)
        profile.disable()
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("| scan | slice mm | slices | seconds | ms/slice |\n| --- | --- | --- | --- | --- |")
    for pid, thick, n, sec in rows:
        print(f"| {pid} | {thick:g} | {n} | {sec:.2f} | {1000 * sec / n:.0f} |")
    total_s, total_n = sum(r[3] for r in rows), sum(r[2] for r in rows)
    print(
        f"\n{len(rows)} scans, {total_n} slices, {total_s:.1f} s on one core: "
        f"{total_s / len(rows):.2f} s/scan, {1000 * total_s / total_n:.0f} ms/slice; "
        f"peak RSS {peak_mb:.0f} MB"
    )
    stats = pstats.Stats(profile)
    total = stats.total_tt
    print(
        f"\nsteps of {slowest.patient_id} ({slowest.slice_thickness_mm:g} mm slices), "
        f"{total:.2f} s profiled:"
    )
    for label, name in STEPS.items():
        cum = sum(v[3] for k, v in stats.stats.items() if k[2] == name)
        print(f"  {label:20s} {cum:6.2f} s  ({100 * cum / total:4.1f} %)")


if __name__ == "__main__":
    main()
