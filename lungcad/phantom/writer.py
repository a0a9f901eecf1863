"""Write the LIDC-grounded phantom: DICOM series in TCIA layout on real LIDC scan geometry.

For each chosen scan, the series keeps the real StudyInstanceUID, SeriesInstanceUID,
patient id, 512x512 grid, pixel spacing, slice thickness and slice z positions from the
LIDC database; its pixels are a synthetic thorax with the real nodules drawn from the real
reader contours. Only the slices of one slab around the nodules are written (every slice
of the real grid inside it, so the series has no gap); nodules of the scan outside that
slab are absent from the series, just as in any partial download.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from lungcad.core.annotations.lidc_db import LidcDatabase, ScanRecord
from lungcad.core.annotations.nodules import Nodule, cluster_nodules
from lungcad.core.parallel import progress_map
from lungcad.phantom.acquisition import Acquisition, draw_acquisition
from lungcad.phantom.thorax import ThoraxPhantom

IMAGE_SIZE = 512
RESCALE_INTERCEPT = -1024.0
#: Stored value outside the reconstruction circle (HU -2048, as in real LIDC GE scans).
PADDING_STORED = -1024


@dataclass(frozen=True)
class PhantomScan:
    """What the phantom wrote for one scan (also recorded in ``phantom.json``)."""

    patient_id: str
    series_uid: str
    z_range_mm: tuple[float, float]
    n_slices: int
    nodule_ids: tuple[str, ...]
    acquisition: dict | None = None


def choose_slab(nodules: list[Nodule], min_readers: int, margin_mm: float) -> tuple[float, float]:
    """The z interval, around the nodules with >= min_readers, that holds the most of them.

    Intervals [z_min - margin, z_max + margin] of the qualifying nodules are merged where they
    overlap and the merged interval with the most nodules wins (the lowest on a tie). Nodules
    with fewer readers inside it are drawn too, but do not widen it.
    """
    qualifying = [n for n in nodules if n.n_readers >= min_readers] or nodules
    spans = sorted((n.z_extent_mm[0] - margin_mm, n.z_extent_mm[1] + margin_mm) for n in qualifying)
    merged: list[list[float]] = []
    for lo, hi in spans:
        if merged and lo <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], hi)
            merged[-1][2] += 1
        else:
            merged.append([lo, hi, 1])
    best = max(merged, key=lambda m: (m[2], -m[0]))
    return float(best[0]), float(best[1])


def select_scans(db: LidcDatabase, n_scans: int, seed: int, min_readers: int) -> list[ScanRecord]:
    """``n_scans`` scans in a seeded order, keeping those with a nodule of >= min_readers."""
    order = np.random.default_rng(seed).permutation(len(db.scans))
    chosen = []
    for i in order:
        scan = db.scans[i]
        if scan.n_slices < 2:
            continue
        nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
        if any(n.n_readers >= min_readers for n in nodules):
            chosen.append(scan)
            if len(chosen) == n_scans:
                break
    return chosen


def _slice_dataset(
    scan: ScanRecord,
    k: int,
    z_mm: float,
    stored: np.ndarray,
    origin_xy: tuple[float, float],
    thickness_mm: float,
    contrast: bool,
) -> pydicom.Dataset:
    sop_uid = generate_uid(entropy_srcs=[scan.series_uid, "slice", str(k)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = sop_uid
    ds.Modality = "CT"
    ds.ImageType = ["DERIVED", "SECONDARY", "AXIAL"]
    ds.Manufacturer = "lungcad phantom"
    ds.SeriesDescription = "LIDC-grounded phantom (synthetic pixels)"
    ds.PatientID = scan.patient_id
    ds.PatientName = ""
    ds.StudyInstanceUID = scan.study_uid
    ds.SeriesInstanceUID = scan.series_uid
    ds.FrameOfReferenceUID = generate_uid(entropy_srcs=[scan.series_uid, "frame"])
    ds.SeriesNumber = 3000 + scan.scan_id
    # Real LIDC instance numbers often run against z; never rely on them for order.
    ds.InstanceNumber = scan.n_slices - k
    ds.ImagePositionPatient = [f"{origin_xy[0]:.6f}", f"{origin_xy[1]:.6f}", f"{z_mm:.6f}"]
    ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
    ds.SliceLocation = f"{z_mm:.6f}"
    ds.SliceThickness = f"{thickness_mm:.6f}"
    ds.PixelSpacing = [f"{scan.pixel_spacing_mm:.6f}"] * 2
    ds.ContrastBolusAgent = "IV" if contrast else ""
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 1
    ds.add_new(0x00280120, "SS", PADDING_STORED)  # PixelPaddingValue
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT:.0f}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = "-600"
    ds.WindowWidth = "1600"
    ds.PixelData = stored.astype("<i2").tobytes()
    return ds


def write_phantom_scan(
    scan: ScanRecord,
    nodules: list[Nodule],
    out_root: Path,
    seed: int,
    min_readers: int,
    margin_mm: float,
    full: bool = False,
    acquisition: Acquisition | None = None,
) -> PhantomScan:
    """Write one scan's slab (or, ``full``, every slice of the real scan) as DICOM files;
    returns what was written. ``acquisition``: its look (None: the default look); a
    ``thick_factor`` > 1 averages that many consecutive slices into one slice at their
    mean position, as a thicker reconstruction of the same acquisition would."""
    z_grid = scan.z_positions_mm
    if full:
        z_lo, z_hi = float(z_grid.min()), float(z_grid.max())
    else:
        z_lo, z_hi = choose_slab(nodules, min_readers, margin_mm)
    ks = np.flatnonzero((z_grid >= z_lo) & (z_grid <= z_hi))
    phantom = ThoraxPhantom(
        (IMAGE_SIZE, IMAGE_SIZE),
        scan.pixel_spacing_mm,
        scan.slice_thickness_mm,
        nodules,
        z_grid,
        scan.contrast_used,
        seed=seed * 100003 + scan.scan_id,
        acquisition=acquisition,
    )
    acq = phantom.acq
    contrast = scan.contrast_used if acq.contrast is None else acq.contrast
    # The database holds no in-plane origin; centre the grid on the scanner axis.
    half = (IMAGE_SIZE - 1) / 2 * scan.pixel_spacing_mm
    origin_xy = (-half, -half)
    folder = out_root / scan.patient_id / scan.study_uid / scan.series_uid
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:IMAGE_SIZE, :IMAGE_SIZE]
    outside_fov = (yy - (IMAGE_SIZE - 1) / 2) ** 2 + (xx - (IMAGE_SIZE - 1) / 2) ** 2 > (
        IMAGE_SIZE / 2
    ) ** 2
    slab = phantom.slab_hu(ks)
    z_written = z_grid[ks].astype(float)
    thickness = scan.slice_thickness_mm
    m = acq.thick_factor
    if m > 1 and len(ks) >= 2 * m:
        n = len(ks) // m * m
        slab = slab[:n].reshape(n // m, m, *slab.shape[1:]).mean(axis=1)
        z_written = z_written[:n].reshape(n // m, m).mean(axis=1)
        ks = ks[:n:m]
        thickness = thickness * m
    for k, z_mm, hu in zip(ks, z_written, slab):
        stored = np.clip(np.rint(hu - RESCALE_INTERCEPT), -1023, 4095 - 1024).astype(np.int16)
        stored[outside_fov] = PADDING_STORED
        ds = _slice_dataset(scan, int(k), float(z_mm), stored, origin_xy, thickness, contrast)
        ds.save_as(folder / f"{scan.n_slices - k:06d}.dcm", enforce_file_format=True)
    in_slab = tuple(n.nodule_id for n in nodules if z_lo <= n.centroid_crz[2] <= z_hi)
    return PhantomScan(
        scan.patient_id,
        scan.series_uid,
        (float(z_written[0]), float(z_written[-1])),
        int(ks.size),
        in_slab,
        acq.as_dict() if acquisition is not None else None,
    )


def _write_job(args: tuple) -> PhantomScan:
    db_path, series_uid, out_root, seed, min_readers, margin_mm, full, randomise = args
    db = LidcDatabase(db_path)
    scan = db.scan_by_series(series_uid)
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    acquisition = None
    if randomise is not None and randomise.enabled:
        z_lo, z_hi = (
            (scan.z_positions_mm.min(), scan.z_positions_mm.max())
            if full
            else choose_slab(nodules, min_readers, margin_mm)
        )
        rng = np.random.default_rng([seed, scan.scan_id, 7])
        acquisition = draw_acquisition(randomise, rng, float(z_hi - z_lo))
    return write_phantom_scan(
        scan, nodules, Path(out_root), seed, min_readers, margin_mm, full, acquisition
    )


def write_phantom(
    out_root: str | Path,
    n_scans: int,
    seed: int = 0,
    min_readers: int = 3,
    margin_mm: float = 36.0,
    workers: int = 1,
    db: LidcDatabase | None = None,
    progress: bool = True,
    full: bool = False,
    layout: str = "dicom",
    subsets: int = 10,
    randomise=None,
) -> list[PhantomScan]:
    """Write the phantom for ``n_scans`` LIDC scans chosen deterministically by ``seed``.

    Args:
        out_root: folder that receives ``LIDC-IDRI-XXXX/<study>/<series>/*.dcm``.
        n_scans: number of real LIDC scans to mirror.
        seed: chooses the scans and seeds the synthetic anatomy.
        min_readers: a chosen scan has at least one nodule marked by this many readers.
        margin_mm: slab half-margin around the nodules (>= 32 so 64 mm cubes fit).
        workers: processes writing scans in parallel.
        full: write every slice of each real scan (512 x 512 x 100-700), not a slab: for
            measuring whole-scan cost at real size.
        layout: ``dicom`` (TCIA's layout) or ``luna16``: ``subset<k>/<uid>.mhd`` in
            ``subsets`` subsets with annotations.csv and annotations_excluded.csv
            (``lungcad.phantom.luna16``).
        randomise: ``phantom.randomise`` (``RandomiseConfig``): each scan's acquisition and
            background lung drawn from its ranges (None or disabled: the default look).
    """
    if layout not in ("dicom", "luna16"):
        raise ValueError(f"--format must be dicom or luna16 (got {layout!r})")
    if layout == "luna16":
        from lungcad.phantom.luna16 import move_to_luna16

        staging = Path(out_root).parent / f".{Path(out_root).name}.dicom"
        if staging.exists():
            shutil.rmtree(staging)
        written = write_phantom(
            staging,
            n_scans,
            seed,
            min_readers,
            margin_mm,
            workers,
            db,
            progress,
            full,
            randomise=randomise,
        )
        move_to_luna16(staging, Path(out_root), subsets)
        return written
    if n_scans < 1:
        raise ValueError(f"--scans must be >= 1 (got {n_scans})")
    db = db or LidcDatabase()
    out_root = Path(out_root)
    out_root.mkdir(parents=True, exist_ok=True)
    scans = select_scans(db, n_scans, seed, min_readers)
    jobs = [
        (db.path, s.series_uid, out_root, seed, min_readers, margin_mm, full, randomise)
        for s in scans
    ]
    written = progress_map(_write_job, jobs, workers, "write phantom scans", "scan", progress)
    manifest = {
        "description": "LIDC-grounded phantom: real LIDC geometry, UIDs and reader contours; "
        "synthetic pixels. Labels come from the real LIDC reader ratings.",
        "seed": seed,
        "min_readers": min_readers,
        "margin_mm": margin_mm,
        "full": full,
        "randomise": randomise.model_dump(mode="json")
        if randomise is not None and randomise.enabled
        else None,
        "scans": [asdict(w) for w in written],
    }
    (out_root / "phantom.json").write_text(json.dumps(manifest, indent=2))
    return written
