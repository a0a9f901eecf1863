"""Benchmark: lungcad's DICOM -> cubes path versus the naive path, on the same phantom scans.

lungcad path  : DicomIndex once, read_series (sorted by position), lung mask on the native
                grid, per-cube SimpleITK resampling around each centre (process_scan).
naive path    : pylidc-style per-file load of every slice (dcmread + sort), whole-volume
                scipy.ndimage.zoom to 1 mm, lung mask on the 1 mm volume, crop 64^3 cubes.

Each path runs in its own subprocess on one core, so peak RSS is that path's alone.

Usage:
    python bench/preprocess_speed.py --scans 8 [--raw data/raw/LIDC-IDRI]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _lungcad(raw: str, uids: list[str]) -> dict:
    from lungcad.config import PreprocessConfig
    from lungcad.core.annotations.lidc_db import LidcDatabase
    from lungcad.core.io.dicom_index import index_lidc_root
    from lungcad.preprocessing.build import process_scan

    db = LidcDatabase()
    start = time.perf_counter()
    index = index_lidc_root(raw, progress=False)
    n_cubes = 0
    for uid in uids:
        n_cubes += len(process_scan(index.series[uid].files, uid, db, PreprocessConfig()).cubes)
    return {"seconds": time.perf_counter() - start, "cubes": n_cubes}


def _naive(raw: str, uids: list[str]) -> dict:
    import numpy as np
    import pydicom
    from scipy import ndimage

    from lungcad.core.annotations.lidc_db import LidcDatabase
    from lungcad.core.annotations.nodules import cluster_nodules
    from lungcad.core.io.geometry import VolumeGeometry
    from lungcad.core.lung_mask import lung_mask

    db = LidcDatabase()
    start = time.perf_counter()
    n_cubes = 0
    for uid in uids:
        scan = db.scan_by_series(uid)
        # pylidc-style: walk the series folder, load every file, sort by z.
        folder = next(Path(raw).glob(f"{scan.patient_id}/*/{uid}"))
        slices = [pydicom.dcmread(p) for p in sorted(folder.glob("*.dcm"))]
        slices.sort(key=lambda d: float(d.ImagePositionPatient[2]))
        volume = np.stack(
            [d.pixel_array * float(d.RescaleSlope) + float(d.RescaleIntercept) for d in slices]
        ).astype(np.float64)
        volume[volume < -1500] = -1000
        z = np.array([float(d.ImagePositionPatient[2]) for d in slices])
        spacing = np.array([z[1] - z[0], scan.pixel_spacing_mm, scan.pixel_spacing_mm])
        iso = ndimage.zoom(volume, spacing, order=1)  # whole volume to 1 mm
        geometry = VolumeGeometry(np.zeros(3), np.ones(3), np.eye(3), iso.shape)
        lung_mask(iso.astype(np.int16), geometry)
        padded = np.pad(iso, 32, constant_values=-1000)
        for n in cluster_nodules(scan, db.annotations(scan.scan_id)):
            c, r, zc = n.centroid_crz
            if not z[0] <= zc <= z[-1]:
                continue
            k = (zc - z[0]) / spacing[0]
            centre = np.rint([k * spacing[0], r * spacing[1], c * spacing[2]]).astype(int) + 32
            cube = padded[tuple(slice(v - 32, v + 32) for v in centre)]
            n_cubes += cube.shape == (64, 64, 64)
    return {"seconds": time.perf_counter() - start, "cubes": n_cubes}


def _child(path: str, raw: str, uids: list[str]) -> None:
    result = (_lungcad if path == "lungcad" else _naive)(raw, uids)
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--raw", type=Path, default=None, help="phantom root (default: write one)")
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args.child[0], args.child[1], json.loads(sys.stdin.read()))
        return

    from lungcad.core.io.dicom_index import index_lidc_root
    from lungcad.phantom.writer import write_phantom

    with tempfile.TemporaryDirectory() as tmp:
        raw = args.raw
        if raw is None:
            raw = Path(tmp)
            write_phantom(raw, args.scans, seed=0, workers=2)
        uids = list(index_lidc_root(raw, progress=False).series)[: args.scans]
        n_slices = sum(
            len(s.files)
            for s in index_lidc_root(raw, progress=False).series.values()
            if s.series_uid in uids
        )
        results = {}
        for path in ("lungcad", "naive"):
            out = subprocess.run(
                [sys.executable, __file__, "--child", path, str(raw)],
                input=json.dumps(uids),
                capture_output=True,
                text=True,
                check=True,
            )
            r = json.loads(out.stdout.strip().splitlines()[-1])
            r["scans_per_min"] = len(uids) / r["seconds"] * 60
            results[path] = r
    speedup = results["naive"]["seconds"] / results["lungcad"]["seconds"]
    print(f"{len(uids)} phantom scans, {n_slices} slices, one core each")
    print(f"{'path':8s} {'s':>7s} {'scans/min':>10s} {'peak RSS MB':>12s} {'cubes':>6s}")
    for name, r in results.items():
        print(
            f"{name:8s} {r['seconds']:7.1f} {r['scans_per_min']:10.1f} "
            f"{r['peak_rss_mb']:12.0f} {r['cubes']:6d}"
        )
    print(f"speed-up: {speedup:.1f}x")


if __name__ == "__main__":
    main()
