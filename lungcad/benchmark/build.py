"""Write the benchmark: LIDC scans the dataset does not hold, as whole-length phantoms in
LUNA16's layout.

Which scans: LIDC's scans in a seeded order, skipping every patient of the dataset (the
patients of its ``index.csv``), series of fewer than 2 slices and series whose recorded
slice positions lack more slices in a row than lungcad reads around
(``limits.read.max_gap_slices``), optionally only series of at most ``max_slices``
slices; the first ``n_scans``. A scan that cannot be built all the same is named in the
manifest and the next one drawn. A random draw keeps LIDC's own mix of scans with and
without a reference nodule (>= 3 readers, >= 3 mm).

Each scan is the phantom of the real scan over its whole extent (every slice), written as
DICOM in a private folder, read back the way lungcad reads any series, and kept as a
zlib-compressed int16 MetaImage ``subset<k>/<SeriesInstanceUID>.mhd`` (the DICOM goes).
Beside them: LUNA16's ``annotations.csv`` and ``annotations_excluded.csv``, ``nodules.csv``
(each reference nodule with its readers' mean malignancy, texture and reader count),
``scans.csv`` and ``benchmark.json`` (what was drawn, from what). A build that is stopped
keeps the scans it finished and the next run goes on from them.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from lungcad.core.annotations.lidc_db import LidcDatabase, ScanRecord
from lungcad.core.annotations.luna16 import REFERENCE_COLUMNS, lidc_reference
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.core.io.scans import find_scans
from lungcad.core.io.series import GAP_FACTOR
from lungcad.core.outputs import write_csv_atomic, write_text_atomic
from lungcad.core.parallel import progress_map
from lungcad.errors import LungcadError
from lungcad.phantom.luna16 import ANNOTATIONS, EXCLUDED, subset_of
from lungcad.phantom.writer import write_phantom_scan

NODULES = "nodules.csv"
SCANS = "scans.csv"
MANIFEST = "benchmark.json"
#: Each scan's row, kept as it is finished (a stopped build goes on from them).
ROWS = ".rows"
STAGING = ".staging"


@dataclass(frozen=True)
class BenchmarkScan:
    """One scan of the benchmark, as ``scans.csv`` lists it."""

    seriesuid: str
    patient_id: str
    subset: str
    slices: int
    length_mm: float
    reference_nodules: int
    excluded_annotations: int


def dataset_patients(index_csv: str | Path) -> set[str]:
    """The patients of a dataset (its ``index.csv``): the benchmark holds none of them."""
    index = pd.read_csv(index_csv, usecols=["patient_id"], dtype={"patient_id": str})
    return set(index["patient_id"])


def missing_slices(scan: ScanRecord) -> int:
    """The most slices missing in a row from a scan's recorded positions (a real series
    can lack some: lungcad reads around up to ``limits.read.max_gap_slices``)."""
    z = np.sort(scan.z_positions_mm)
    steps = np.diff(z)
    step = float(np.median(steps))
    gaps = steps[steps > GAP_FACTOR * step]
    return int(max((round(g / step) - 1 for g in gaps), default=0))


def eligible_scans(
    db: LidcDatabase,
    excluded_patients: set[str],
    seed: int,
    max_slices: int | None = None,
    max_gap_slices: int = 2,
) -> list[ScanRecord]:
    """Every LIDC scan the benchmark may draw, in the seeded order: not a patient of the
    dataset, at least 2 slices (at most ``max_slices``), and no more slices missing in a
    row than lungcad reads around."""
    out = []
    for i in np.random.default_rng(seed).permutation(len(db.scans)):
        scan = db.scans[i]
        if scan.patient_id in excluded_patients or scan.n_slices < 2:
            continue
        if max_slices is not None and scan.n_slices > max_slices:
            continue
        if missing_slices(scan) > max_gap_slices:
            continue
        out.append(scan)
    return out


def benchmark_scans(
    db: LidcDatabase,
    excluded_patients: set[str],
    n_scans: int,
    seed: int,
    max_slices: int | None = None,
) -> list[ScanRecord]:
    """The first ``n_scans`` eligible scans (fewer when LIDC runs out); a scan that cannot
    be built is replaced by the next (``build_benchmark``)."""
    return eligible_scans(db, excluded_patients, seed, max_slices)[:n_scans]


def _write_scan(args: tuple) -> BenchmarkScan | str:
    """One scan written (its row), or why it cannot be (kept, so a rerun skips it too)."""
    db_path, series_uid, out_root, seed, subset = args
    out_root = Path(out_root)
    row_file = out_root / ROWS / f"{series_uid}.json"
    if row_file.is_file():  # finished by an earlier run
        doc = json.loads(row_file.read_text())
        return doc["skipped"] if "skipped" in doc else BenchmarkScan(**doc)
    try:
        return _build_scan(db_path, series_uid, out_root, seed, subset, row_file)
    except (LungcadError, ValueError) as exc:
        reason = " ".join(str(exc).split())[:300]
        write_text_atomic(row_file, json.dumps({"skipped": reason}), "a skipped scan's row")
        shutil.rmtree(out_root / STAGING / series_uid, ignore_errors=True)
        return reason


def _build_scan(
    db_path: str, series_uid: str, out_root: Path, seed: int, subset: str, row_file: Path
) -> BenchmarkScan:
    db = LidcDatabase(db_path)
    scan = db.scan_by_series(series_uid)
    staging = out_root / STAGING / series_uid
    shutil.rmtree(staging, ignore_errors=True)
    write_phantom_scan(
        scan, cluster_nodules(scan, db.annotations(scan.scan_id)), staging, seed, 3, 0.0, True
    )
    (source,), _ = find_scans(staging, db, progress=False)
    volume = source.read()
    folder = out_root / subset
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.clip(np.rint(volume.hu), -32768, 32767).astype(np.int16)
    tmp = staging / "volume.mhd"
    sitk.WriteImage(volume.geometry.to_sitk(hu), str(tmp), useCompression=True)
    reference, excluded = lidc_reference(volume, db)
    reference.to_csv(staging / "reference.csv", index=False)
    excluded.to_csv(staging / "excluded.csv", index=False)
    # The MetaImage names its data file: write the header under its final name, then move
    # the data file before the header, so a header present means its data is too.
    header = tmp.read_text().replace("volume.zraw", f"{series_uid}.zraw")
    (staging / f"{series_uid}.mhd").write_text(header)
    (staging / "volume.zraw").replace(folder / f"{series_uid}.zraw")
    (staging / f"{series_uid}.mhd").replace(folder / f"{series_uid}.mhd")
    z = volume.geometry.spacing_mm[2] * (volume.hu.shape[0] - 1)
    result = BenchmarkScan(
        series_uid,
        scan.patient_id,
        subset,
        int(volume.hu.shape[0]),
        float(z),
        len(reference),
        len(excluded),
    )
    (staging / "reference.csv").replace(out_root / ROWS / f"{series_uid}.reference.csv")
    (staging / "excluded.csv").replace(out_root / ROWS / f"{series_uid}.excluded.csv")
    write_text_atomic(row_file, json.dumps(asdict(result)), f"the row of scan {series_uid}")
    shutil.rmtree(staging, ignore_errors=True)
    return result


def build_benchmark(
    out_root: str | Path,
    excluded_patients: set[str],
    n_scans: int,
    seed: int,
    subsets: int = 10,
    max_slices: int | None = None,
    workers: int = 1,
    progress: bool = True,
    db: LidcDatabase | None = None,
) -> pd.DataFrame:
    """Write the benchmark into ``out_root`` (module docstring); returns ``scans.csv``.

    Raises:
        ValueError: no scan is left to draw, naming what excluded them.
    """
    db = db or LidcDatabase()
    order = eligible_scans(db, excluded_patients, seed, max_slices)
    if not order:
        raise ValueError(
            f"no LIDC scan is left for the benchmark: {len(excluded_patients)} patients are the "
            f"dataset's, max_slices={max_slices}"
        )
    out_root = Path(out_root)
    (out_root / ROWS).mkdir(parents=True, exist_ok=True)
    # Draw in order; a scan that cannot be built is reported and the next one drawn. Scan
    # k of the draw goes to subset k mod subsets.
    rows: list[BenchmarkScan] = []
    skipped: list[dict] = []
    position = 0
    while len(rows) < n_scans and position < len(order):
        batch = order[position : position + n_scans - len(rows)]
        jobs = [
            (db.path, s.series_uid, out_root, seed, subset_of(position + i, subsets))
            for i, s in enumerate(batch)
        ]
        position += len(batch)
        done = progress_map(_write_scan, jobs, workers, "write benchmark scans", "scan", progress)
        for scan, result in zip(batch, done):
            if isinstance(result, str):
                skipped.append({"seriesuid": scan.series_uid, "reason": result})
            else:
                rows.append(result)
    for name, suffix in ((ANNOTATIONS, "reference"), (EXCLUDED, "excluded")):
        parts = [pd.read_csv(out_root / ROWS / f"{r.seriesuid}.{suffix}.csv") for r in rows]
        table = pd.concat(parts, ignore_index=True)
        write_csv_atomic(table[REFERENCE_COLUMNS], out_root / name, f"the benchmark's {name}")
        if suffix == "reference":
            write_csv_atomic(table, out_root / NODULES, "the benchmark's reference nodules")
    table = pd.DataFrame([asdict(r) for r in rows]).sort_values("seriesuid")
    write_csv_atomic(table, out_root / SCANS, "the benchmark's scans")
    digest = hashlib.sha256("\n".join(sorted(excluded_patients)).encode()).hexdigest()[:16]
    manifest = {
        "description": "whole-length LIDC-grounded phantom scans (real LIDC geometry, UIDs "
        "and reader contours; synthetic pixels) of patients the dataset does not hold",
        "seed": seed,
        "scans": len(table),
        "scans_without_reference_nodule": int((table["reference_nodules"] == 0).sum()),
        "reference_nodules": int(table["reference_nodules"].sum()),
        "patients": int(table["patient_id"].nunique()),
        "dataset_patients_excluded": len(excluded_patients),
        "dataset_patients_sha256": digest,
        "max_slices": max_slices,
        "skipped": skipped,
    }
    write_text_atomic(out_root / MANIFEST, json.dumps(manifest, indent=2), "the manifest")
    shutil.rmtree(out_root / ROWS)
    shutil.rmtree(out_root / STAGING, ignore_errors=True)
    return table
