"""Turn an LIDC root into the cube dataset: cubes.npy, masks.npy, index.csv, skipped.csv,
fingerprint.

One pass per scan (read series -> lung mask -> nodule and negative cubes), parallel over
scans. Each scan's result is kept under ``<out>/.parts/`` as soon as it is done, so an
interrupted build resumes where it stopped; the final files are assembled in series-UID
order (independent of worker timing) and written atomically.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from dataclasses import dataclass, field
from io import StringIO
from pathlib import Path

import numpy as np
import pandas as pd
import SimpleITK as sitk

from lungcad.config import CandidatesConfig, PreprocessConfig, ReadLimits
from lungcad.core.annotations.lidc_db import CHARACTERISTICS, LidcDatabase
from lungcad.core.annotations.nodules import Nodule, cluster_nodules, nodule_center_mm
from lungcad.core.candidates import generate_candidates
from lungcad.core.cubes import extract_cube, mirror_pad_z
from lungcad.core.io.dicom_index import DicomIndex, LidcRootError, index_lidc_root
from lungcad.core.io.scans import ScanSource
from lungcad.core.io.series import CtVolume, SeriesError
from lungcad.core.lung_mask import block_max, lung_mask
from lungcad.core.masks import MASKS_FILE, nodule_cube_mask, pack_masks
from lungcad.core.outputs import removing_on_failure, stage_csv, write_csv_atomic, write_failure
from lungcad.core.runner import ScanParts
from lungcad.preprocessing.fingerprint import ScanStats, write_fingerprint
from lungcad.preprocessing.negatives import sample_negatives

log = logging.getLogger(__name__)

#: Bumped when what a per-scan part holds changes, so parts of an older lungcad are redone.
PARTS_FORMAT = 3

INDEX_COLUMNS = [
    "cube_index",
    "patient_id",
    "series_uid",
    "nodule_id",
    "label",
    "kind",
    "malignancy_mean",
    "malignancy_median",
    "malignancy_std",
    "n_readers",
    "diameter_mm",
    "volume_mm3",
    "center_x_mm",
    "center_y_mm",
    "center_z_mm",
    "in_lung_mask",
    "pixel_spacing_mm",
    "slice_spacing_mm",
    *[f"mean_{c}" for c in CHARACTERISTICS if c != "malignancy"],
]
SKIPPED_COLUMNS = ["patient_id", "series_uid", "nodule_id", "item", "reason"]


@dataclass
class ScanResult:
    """Cubes, their packed consensus masks and table rows produced from one series."""

    series_uid: str
    cubes: np.ndarray
    masks: np.ndarray
    rows: list[dict]
    skipped: list[dict] = field(default_factory=list)
    stats: ScanStats | None = None


def _skip(patient: str, series: str, item: str, reason: str, nodule_id: str = "") -> dict:
    # Unusable scans and files are warnings; nodules below min_readers are routine.
    level = logging.WARNING if item in ("scan", "file") else logging.INFO
    log.log(level, "skip %s %s %s: %s", item, series, nodule_id, reason)
    return {
        "patient_id": patient,
        "series_uid": series,
        "nodule_id": nodule_id,
        "item": item,
        "reason": reason,
    }


def _nodule_row(n: Nodule, center: np.ndarray) -> dict:
    row = {
        "nodule_id": n.nodule_id,
        "label": 1,
        "kind": "nodule",
        "malignancy_mean": n.malignancy_mean,
        "malignancy_median": n.malignancy_median,
        "malignancy_std": n.malignancy_std,
        "n_readers": n.n_readers,
        "diameter_mm": n.diameter_mm,
        "volume_mm3": n.volume_mm3,
    }
    row.update(
        {f"mean_{c}": n.characteristics_mean[c] for c in CHARACTERISTICS if c != "malignancy"}
    )
    row.update(center_x_mm=center[0], center_y_mm=center[1], center_z_mm=center[2])
    return row


def process_scan(
    files: list[Path],
    series_uid: str,
    db: LidcDatabase,
    config: PreprocessConfig,
    candidates: CandidatesConfig = CandidatesConfig(),
    listed_candidates: np.ndarray | None = None,
    read: ReadLimits | None = None,
) -> ScanResult:
    """Read one series and cut its nodule and negative cubes (see module docstring).

    ``listed_candidates``: (N, 3) patient-mm centres of a candidate list's false positives
    (LUNA16's ``candidates_V2.csv``, class 0); the candidate negatives are drawn from them
    instead of from lungcad's own candidate generator. ``read``: what the scan may cost to
    read (``limits.read``; the defaults when None)."""
    empty = np.zeros((0, *(config.cube_size,) * 3), dtype=np.int16)
    no_masks = pack_masks(empty.astype(bool))
    scan = db.scan_by_series(series_uid)
    if scan is None:
        return ScanResult(
            series_uid,
            empty,
            no_masks,
            [],
            [
                _skip(
                    "",
                    series_uid,
                    "scan",
                    "SeriesInstanceUID not in the LIDC-IDRI database "
                    "(not an LIDC CT series; remove it from the root or ignore this line)",
                )
            ],
        )
    kind = "mhd" if len(files) == 1 and Path(files[0]).suffix.lower() == ".mhd" else "dicom"
    try:
        volume = ScanSource(series_uid, scan.patient_id, kind, tuple(files)).read(read)
    except SeriesError as exc:
        return ScanResult(
            series_uid,
            empty,
            no_masks,
            [],
            [_skip(scan.patient_id, series_uid, "scan", str(exc))],
        )
    if not np.isclose(volume.geometry.spacing_mm[0], scan.pixel_spacing_mm, atol=1e-3):
        return ScanResult(
            series_uid,
            empty,
            no_masks,
            [],
            [
                _skip(
                    scan.patient_id,
                    series_uid,
                    "scan",
                    f"pixel spacing {volume.geometry.spacing_mm[0]:.4f} mm differs from the LIDC "
                    f"database's {scan.pixel_spacing_mm:.4f} mm for this series: the annotations "
                    "would not line up",
                )
            ],
        )

    skipped = [_skip(scan.patient_id, series_uid, "scan", f"note: {note}") for note in volume.notes]
    image = volume.geometry.to_sitk(volume.hu)
    lungs = lung_mask(volume.hu, volume.geometry, config.lung_dilation_mm, config.lung_closing_mm)
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    half_mm = config.cube_size * config.spacing_mm / 2
    all_centers, all_radii, cubes, rows, nodule_masks = [], [], [], [], []
    for n in nodules:
        center = nodule_center_mm(n, volume)
        if center is None:
            skipped.append(
                _skip(
                    scan.patient_id,
                    series_uid,
                    "nodule",
                    f"centroid z {n.centroid_crz[2]:.1f} mm is outside the slices of "
                    f"this series ({volume.z_positions_mm.min():.1f} .. "
                    f"{volume.z_positions_mm.max():.1f} mm)",
                    n.nodule_id,
                )
            )
            continue
        all_centers.append(center)
        all_radii.append(n.diameter_mm / 2)
        if n.n_readers < config.min_readers:
            skipped.append(
                _skip(
                    scan.patient_id,
                    series_uid,
                    "nodule",
                    f"outlined by {n.n_readers} reader(s) < min_readers={config.min_readers}",
                    n.nodule_id,
                )
            )
            continue
        cubes.append(extract_cube(image, center, config.cube_size, config.spacing_mm))
        nodule_masks.append(
            nodule_cube_mask(n, scan, volume, center, config.cube_size, config.spacing_mm)
        )
        rows.append(_nodule_row(n, center))

    n_pos = len(cubes)
    n_neg = max(config.min_negatives_per_scan, int(round(config.negatives_per_positive * n_pos)))
    n_cand = int(round(n_neg * config.candidate_negative_fraction))
    rng = np.random.default_rng([config.seed, zlib.crc32(series_uid.encode())])
    if n_cand:
        rows_c, cubes_c = _candidate_negatives(
            volume,
            image,
            lungs,
            np.reshape(all_centers, (-1, 3)),
            np.array(all_radii),
            config,
            candidates,
            n_cand,
            rng,
            scan.patient_id,
            scan.scan_id,
            listed_candidates,
        )
        if len(rows_c) < n_cand:
            skipped.append(
                _skip(
                    scan.patient_id,
                    series_uid,
                    "negatives",
                    f"only {len(rows_c)} of {n_cand} candidate negatives: the "
                    + (
                        "candidate list holds"
                        if listed_candidates is not None
                        else "candidate generator found"
                    )
                    + " too few false positives; the rest are hard/random",
                )
            )
        rows.extend(rows_c)
        cubes.extend(cubes_c)
        n_cand = len(rows_c)
    n_neg -= n_cand
    n_hard = int(round(n_neg * config.hard_negative_fraction))
    candidates = {
        "random": lungs.block_centres(lungs.parenchyma),
        "hard": lungs.block_centres(
            lungs.parenchyma & (block_max(volume.hu, lungs.step) > config.hard_min_hu)
        ),
    }
    negatives = sample_negatives(
        candidates,
        {"hard": n_hard, "random": n_neg - n_hard},
        volume.geometry,
        np.array(all_centers).reshape(-1, 3),
        config.negative_min_distance_mm,
        config.negative_min_spacing_mm,
        half_mm,
        rng,
    )
    for kind, want in (("hard", n_hard), ("random", n_neg - n_hard)):
        got = sum(s.kind == kind for s in negatives)
        if got < want:
            skipped.append(
                _skip(
                    scan.patient_id,
                    series_uid,
                    "negatives",
                    f"only {got} of {want} {kind} negatives fit (lung too small or "
                    f"series too short for a whole cube >= "
                    f"{config.negative_min_distance_mm} mm from every nodule)",
                )
            )
    for i, s in enumerate(negatives):
        cubes.append(extract_cube(image, s.center_mm, config.cube_size, config.spacing_mm))
        rows.append(
            {
                "nodule_id": f"{scan.patient_id}:{scan.scan_id}:neg{i}",
                "label": 0,
                "kind": s.kind,
                "n_readers": 0,
                "center_x_mm": s.center_mm[0],
                "center_y_mm": s.center_mm[1],
                "center_z_mm": s.center_mm[2],
            }
        )

    for row in rows:
        idx = np.rint(
            volume.geometry.mm_to_index(
                [row["center_x_mm"], row["center_y_mm"], row["center_z_mm"]]
            )
        ).astype(int)[::-1]
        inside = np.all((idx >= 0) & (idx < np.array(volume.hu.shape)))
        row.update(
            patient_id=scan.patient_id,
            series_uid=series_uid,
            in_lung_mask=bool(inside and lungs.region[lungs.block_of(idx)]),
            pixel_spacing_mm=float(volume.geometry.spacing_mm[0]),
            slice_spacing_mm=float(volume.geometry.spacing_mm[2]),
        )
    stats = ScanStats.from_volume(volume, lungs, rng)
    cube_array = np.stack(cubes) if cubes else empty
    masks = np.zeros(cube_array.shape, dtype=bool)  # negatives: no nodule of their own
    if nodule_masks:
        masks[: len(nodule_masks)] = np.stack(nodule_masks)
    return ScanResult(series_uid, cube_array, pack_masks(masks), rows, skipped, stats)


def _candidate_negatives(
    volume: CtVolume,
    image: sitk.Image,
    lungs,
    nodule_centers_mm: np.ndarray,
    nodule_radii_mm: np.ndarray,
    config: PreprocessConfig,
    candidates: CandidatesConfig,
    n: int,
    rng: np.random.Generator,
    patient_id: str,
    scan_id: int,
    listed: np.ndarray | None = None,
) -> tuple[list[dict], list[np.ndarray]]:
    """Up to ``n`` false positives of the whole-scan candidate generator, drawn with
    probability proportional to their blob score (the strong look-alikes the detector meets
    most), cut like ``lungcad detect`` cuts them (z-mirrored volume). With ``listed`` (a
    candidate list's false positives, (N, 3) mm), drawn from those instead, uniformly (those
    centred outside the scan are left out)."""
    if listed is None:
        cands = generate_candidates(
            image,
            lungs,
            volume.geometry,
            candidates,
        )
        pts = cands[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
        weight = np.maximum(cands["score"].to_numpy(dtype=float), 1e-9)
    else:
        pts = np.asarray(listed, dtype=float).reshape(-1, 3)
        idx = volume.geometry.mm_to_index(pts) if len(pts) else np.zeros((0, 3))
        inside = np.all((idx >= 0) & (idx <= np.array(volume.hu.shape[::-1]) - 1), axis=1)
        pts = pts[inside]
        weight = np.ones(len(pts))
    if len(nodule_centers_mm) and len(pts):
        d = np.linalg.norm(pts[:, None] - nodule_centers_mm[None], axis=2)
        far = np.all(d >= nodule_radii_mm[None] + config.candidate_min_distance_mm, axis=1)
        pts, weight = pts[far], weight[far]
    if len(pts) == 0:
        return [], []
    pick = rng.choice(len(pts), size=min(n, len(pts)), replace=False, p=weight / weight.sum())
    hu, geometry = mirror_pad_z(volume, config.cube_size * config.spacing_mm)
    mirrored_image = geometry.to_sitk(hu)
    rows, cubes = [], []
    for i, j in enumerate(sorted(pick)):
        cubes.append(extract_cube(mirrored_image, pts[j], config.cube_size, config.spacing_mm))
        rows.append(
            {
                "nodule_id": f"{patient_id}:{scan_id}:cand{i}",
                "label": 0,
                "kind": "candidate",
                "n_readers": 0,
                "center_x_mm": pts[j][0],
                "center_y_mm": pts[j][1],
                "center_z_mm": pts[j][2],
            }
        )
    return rows, cubes


def settings_key(
    config: PreprocessConfig, candidates: CandidatesConfig, read: ReadLimits | None = None
) -> str:
    """Short hash of the settings: per-scan parts of other settings are redone."""
    doc = {
        "preprocess": config.to_dict(),
        "candidates": candidates.to_dict(),
        "read": (read or ReadLimits()).to_dict(),
    }
    digest = hashlib.sha1(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:12]
    return f"{digest}-v{PARTS_FORMAT}"


def _save_part(path: Path, result: ScanResult) -> None:
    # The temporary name is the writer's own: a worker orphaned by a killed build may still
    # be finishing the same scan as the rerun's worker.
    tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
    with removing_on_failure(tmp):
        np.savez(
            tmp,
            cubes=result.cubes,
            masks=result.masks,
            rows=np.array(pd.DataFrame(result.rows).to_json(orient="records")),
            skipped=np.array(pd.DataFrame(result.skipped).to_json(orient="records")),
            stats=np.array(result.stats.to_json() if result.stats else ""),
        )
    os.replace(tmp, path)


def _load_part(path: Path, series_uid: str) -> ScanResult:
    with np.load(path) as z:
        rows = pd.read_json(StringIO(str(z["rows"])), orient="records").to_dict("records")
        skipped = pd.read_json(StringIO(str(z["skipped"])), orient="records").to_dict("records")
        stats_json = str(z["stats"])
        return ScanResult(
            series_uid,
            z["cubes"],
            z["masks"],
            rows,
            skipped,
            ScanStats.from_json(stats_json) if stats_json else None,
        )


def _scan_job(args: tuple) -> str:
    files, series_uid, db_path, config, candidates, part, listed, read = args
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(1)  # one scan per worker process
    try:
        result = process_scan(
            files, series_uid, LidcDatabase(db_path), config, candidates, listed, read
        )
    except Exception as exc:  # a batch job reports the bad scan and keeps going
        log.warning("scan %s failed: %s: %s", series_uid, type(exc).__name__, exc)
        log.debug("scan %s failed", series_uid, exc_info=True)
        empty = np.zeros((0, *(config.cube_size,) * 3), np.int16)
        result = ScanResult(
            series_uid,
            empty,
            pack_masks(empty.astype(bool)),
            [],
            [_skip("", series_uid, "scan", f"unexpected error {type(exc).__name__}: {exc}")],
        )
    _save_part(part, result)
    return series_uid


def _index_skips(index: DicomIndex) -> tuple[list[dict], set[str]]:
    rows = [_skip("", "", "file", f"{path}: {reason}") for path, reason in index.unreadable]
    mixed: set[str] = set()
    for folder, uids in index.mixed_folders.items():
        for uid in uids:
            mixed.add(uid)
            rows.append(
                _skip(
                    index.series[uid].patient_id,
                    uid,
                    "scan",
                    f"{folder}: folder mixes files of {len(uids)} series "
                    f"({', '.join(u[-12:] for u in uids)}); keep one series per folder",
                )
            )
    return rows, mixed


#: LUNA16's candidate lists, newest first: the false positives (class 0) of the first one
#: present become the candidate negatives.
LUNA16_CANDIDATES = ("candidates_V2.csv", "candidates.csv")


def luna16_candidates(root: Path) -> tuple[Path | None, dict[str, np.ndarray]]:
    """The candidate list of a LUNA16 root and its class-0 centres (mm) per series; (None,
    {}) when the root has none.

    Raises:
        LidcRootError: a list without LUNA16's columns.
    """
    path = next((root / n for n in LUNA16_CANDIDATES if (root / n).is_file()), None)
    if path is None:
        return None, {}
    table = pd.read_csv(path)
    need = {"seriesuid", "coordX", "coordY", "coordZ", "class"}
    if not need <= set(table.columns):
        raise LidcRootError(
            f"{path}: not a LUNA16 candidate list (needs the columns "
            f"{', '.join(sorted(need))}); remove or rename it to build without it"
        )
    negatives = table[table["class"] == 0]
    coords = ["coordX", "coordY", "coordZ"]
    return path, {
        uid: rows[coords].to_numpy(dtype=float) for uid, rows in negatives.groupby("seriesuid")
    }


def luna16_series(
    raw_root: str | Path, db: LidcDatabase
) -> tuple[pd.DataFrame, dict[str, list[Path]], list[dict]] | None:
    """A LUNA16 root (``subset<k>/<SeriesInstanceUID>.mhd`` with ``annotations.csv``): its
    series index (``folder`` is the subset), each series' file, and skip rows for what
    cannot be used; None for a root without ``.mhd`` volumes (a DICOM root).

    Raises:
        LidcRootError: ``.mhd`` volumes without LUNA16's ``annotations.csv`` beside them.
    """
    root = Path(raw_root)
    mhds = sorted(root.rglob("*.mhd")) if root.is_dir() else []
    if not mhds:
        return None
    if not (root / "annotations.csv").is_file():
        raise LidcRootError(
            f"{root}: .mhd volumes but no annotations.csv: point data.raw_root at the LUNA16 "
            "folder that holds annotations.csv and the subset folders"
        )
    rows, files_of, skipped = [], {}, []
    for path in mhds:
        uid = path.stem
        if uid in files_of:
            skipped.append(
                _skip("", uid, "scan", f"{path}: a second volume of series {uid}; kept the first")
            )
            continue
        record = db.scan_by_series(uid)
        files_of[uid] = [path]
        rows.append(
            {
                "series_uid": uid,
                "study_uid": record.study_uid if record else "",
                "patient_id": record.patient_id if record else "",
                "modality": "CT",
                "n_files": 1,
                "folder": str(path.parent.relative_to(root)),
            }
        )
    columns = ["series_uid", "study_uid", "patient_id", "modality", "n_files", "folder"]
    frame = pd.DataFrame(rows, columns=columns).sort_values("series_uid", ignore_index=True)
    return frame, dict(sorted(files_of.items())), skipped


def build_dataset(
    raw_root: str | Path,
    out_dir: str | Path,
    config: PreprocessConfig,
    candidates: CandidatesConfig = CandidatesConfig(),
    workers: int = 1,
    db: LidcDatabase | None = None,
    progress: bool = True,
    read: ReadLimits | None = None,
) -> pd.DataFrame:
    """Build the cube dataset of ``raw_root`` into ``out_dir`` (see module docstring);
    ``read``: what each scan may cost to read (``limits.read``; the defaults when None).

    Returns:
        The index table (one row per cube of cubes.npy).

    Raises:
        LidcRootError: the root is missing, empty or holds no DICOM series.
    """
    db = db or LidcDatabase()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    luna = luna16_series(raw_root, db)
    listed, listed_key = {}, ""
    if luna is not None:
        series_frame, files_of, skipped = luna
        mixed: set[str] = set()
        source, listed = luna16_candidates(Path(raw_root))
        if source is not None:  # parts cut without (or with another) list are redone
            listed_key = "-" + hashlib.sha1(source.read_bytes()).hexdigest()[:8]
            log.info("candidate negatives from %s", source)
            skipped += [
                _skip(
                    "",
                    uid,
                    "negatives",
                    f"note: {source.name} lists no candidate of this series; its candidate "
                    "negatives come from lungcad's candidate generator",
                )
                for uid in files_of
                if uid not in listed
            ]
    else:
        index = index_lidc_root(raw_root, workers=workers, progress=progress)
        series_frame = index.to_frame()
        files_of = {uid: e.files for uid, e in index.series.items()}
        skipped, mixed = _index_skips(index)
    write_csv_atomic(series_frame, out_dir / "series_index.csv", "the dataset's series index")

    parts = ScanParts(out_dir, settings_key(config, candidates, read) + listed_key, ".npz")
    todo = [uid for uid in files_of if uid not in mixed]
    jobs = {
        uid: (
            files_of[uid],
            uid,
            db.path,
            config,
            candidates,
            parts.path(uid),
            listed.get(uid),
            read,
        )
        for uid in todo
    }
    try:
        parts.run(_scan_job, jobs, workers, "preprocess scans", progress)
        results = [_load_part(parts.path(uid), uid) for uid in todo]
        table = _assemble(results, skipped, out_dir, config, candidates)
    except OSError as exc:
        raise write_failure(
            "the dataset", out_dir, exc, f"the previous dataset in {out_dir} (if any)"
        ) from exc
    parts.remove()
    return table


def _assemble(
    results: list[ScanResult],
    skipped: list[dict],
    out_dir: Path,
    config: PreprocessConfig,
    candidates: CandidatesConfig,
) -> pd.DataFrame:
    """Write cubes.npy, masks.npy, index.csv, skipped.csv and fingerprint.json from the scan
    results.

    Every file is written in full beside its final name before any is renamed into place
    (renames need no space): a full disk or a kill while writing leaves the previous dataset
    whole. index.csv is renamed last, and readers check it against cubes.npy.
    """
    size = config.cube_size
    n_total = sum(len(r.cubes) for r in results)
    staged: dict[Path, Path] = {}
    rows: list[dict] = []
    tmp_cubes, tmp_masks = out_dir / "cubes.tmp.npy", out_dir / "masks.tmp.npy"
    with removing_on_failure(
        tmp_cubes,
        tmp_masks,
        out_dir / "skipped.tmp.csv",
        out_dir / "fingerprint.staged.json",
        out_dir / "index.tmp.csv",
    ):
        # Streamed, not memory-mapped: a full disk is then an error, not a SIGBUS.
        with open(tmp_cubes, "wb") as cubes_fh, open(tmp_masks, "wb") as masks_fh:
            np.lib.format.write_array_header_1_0(
                cubes_fh, {"descr": "<i2", "fortran_order": False, "shape": (n_total, *(size,) * 3)}
            )
            np.lib.format.write_array_header_1_0(
                masks_fh,
                {"descr": "|u1", "fortran_order": False, "shape": (n_total, size, size, size // 8)},
            )
            offset = 0
            for r in results:
                cubes_fh.write(np.ascontiguousarray(r.cubes, dtype="<i2").tobytes())
                masks_fh.write(np.ascontiguousarray(r.masks, dtype=np.uint8).tobytes())
                rows.extend({**row, "cube_index": offset + i} for i, row in enumerate(r.rows))
                offset += len(r.cubes)
                skipped.extend(r.skipped)
        staged[tmp_cubes] = out_dir / "cubes.npy"
        staged[tmp_masks] = out_dir / MASKS_FILE
        table = pd.DataFrame(rows, columns=INDEX_COLUMNS)
        frame = pd.DataFrame(skipped, columns=SKIPPED_COLUMNS)
        staged[stage_csv(frame, out_dir / "skipped.csv")] = out_dir / "skipped.csv"
        fingerprint = out_dir / "fingerprint.staged.json"
        write_fingerprint(
            fingerprint, [r.stats for r in results if r.stats], table, config, candidates
        )
        staged[fingerprint] = out_dir / "fingerprint.json"
        staged[stage_csv(table, out_dir / "index.csv")] = out_dir / "index.csv"
    for tmp, final in staged.items():
        os.replace(tmp, final)
    return table
