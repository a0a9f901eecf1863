"""Whole-scan detection of one CT: lung mask → candidates → 64³ cubes scored by the network →
one finding per nodule, sized and typed from its mask.

Each candidate's cube is cut with the same physically exact extraction as the training
cubes (``extract_cube``: a 1 mm grid centred on the candidate's patient-mm position) from
the volume mirrored in z (``mirror_pad_z``), so a candidate near the first or last slice
gets anatomy rather than air around it, as the candidate negatives of the training set do.
With a segmentation decoder, each cube's predicted mask, placed in patient mm, tells which
candidates lie on one nodule (``lungcad.core.findings.merge``): they become one finding at the
centroid of their fused mask, sized three ways and typed from it
(``lungcad.core.findings.measure``) with its Lung-RADS category
(``lungcad.core.findings.lungrads``). Findings without a mask (and every finding of a model
without the decoder, then sized from the dense part at the cube's centre) are merged by
MONAI's box NMS on mm boxes of their size, overlap measured on the smaller box (a blob
inside a bigger nodule's box is the same finding).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from lungcad.config import CandidatesConfig, DetectConfig
from lungcad.core.acquisition import acquisition_notes
from lungcad.core.candidates import generate_candidates
from lungcad.core.cubes import extract_cube, mirror_pad_z
from lungcad.core.findings.lungrads import UNSIZED
from lungcad.core.findings.measure import measure_mask
from lungcad.core.findings.merge import FindingMask, cube_finding_mask, fuse_masks, group_findings
from lungcad.core.findings.record import FINDING_COLUMNS, attribute_columns, measured
from lungcad.core.io.series import CtVolume
from lungcad.core.lung_mask import lung_mask
from lungcad.core.model.loading import CubeCut, LoadedModel
from lungcad.core.model.predict import predict_hu_cubes

#: Aerated lung (HU), the background a ground-glass nodule is measured against.
LUNG_HU = -850.0
#: Diameters are measured in the central 40 voxels (40 mm) of the cube: LIDC nodules are
#: at most 30 mm; bigger masses are reported as about 40 mm.
MEASURE_HALF_VOXELS = 20


#: Smallest box edge (mm) used for NMS: tiny blobs still merge when they sit on the same
#: nodule.
MIN_BOX_MM = 5.0


@dataclass(frozen=True)
class DetectorConfig:
    """Settings of whole-scan detection with one model (``detector_config``: what the model
    was trained with and the run's ``detect`` settings; no defaults of its own).

    Attributes:
        candidates: the candidate generator (the training data's).
        cube_size, spacing_mm: the network's input cube (as in training).
        batch_size: cubes per forward pass.
        nms_overlap: a finding is dropped when more than this share of the smaller of its
            box and a better finding's box is shared by both (``box_iomin``).
        lung_dilation_mm, lung_closing_mm: the lung mask (as in preprocessing).
        tta_flips: test-time augmentation: the cube is also scored flipped along each of
            these axes (0 z, 1 y, 2 x; training flips all three) and the scores averaged.
    """

    candidates: CandidatesConfig
    cube_size: int
    spacing_mm: float
    batch_size: int
    nms_overlap: float
    lung_dilation_mm: float
    lung_closing_mm: float
    tta_flips: tuple[int, ...]


def detector_config(cut: CubeCut, detect: DetectConfig) -> DetectorConfig:
    """The detector of a model: its cube geometry, lung mask and candidate generator as it
    was trained (``cut``, from the checkpoint) and the run's ``detect`` settings."""
    return DetectorConfig(
        candidates=cut.candidates,
        cube_size=cut.preprocess.cube_size,
        spacing_mm=cut.preprocess.spacing_mm,
        batch_size=detect.batch_size,
        nms_overlap=detect.nms_overlap,
        lung_dilation_mm=cut.preprocess.lung_dilation_mm,
        lung_closing_mm=cut.preprocess.lung_closing_mm,
        tta_flips=tuple(detect.tta_flips),
    )


@dataclass
class ScanDetections:
    """What detection found in one scan, with its timings and notes."""

    series_uid: str
    patient_id: str
    candidates: pd.DataFrame
    findings: pd.DataFrame
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)
    #: Each finding's fused mask (row of ``findings`` -> (bool (z, y, x), origin (x, y, z)
    #: patient mm of voxel (0, 0, 0), spacing mm)); absent for findings without one.
    masks: dict[int, tuple[np.ndarray, np.ndarray, float]] = field(default_factory=dict)


def box_iomin(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """Intersection over the *smaller* box's volume of (x0, y0, z0, x1, y1, z1) boxes, (N, M).

    Unlike IoU it is 1 for a small box inside a big one: a second, smaller blob found
    inside a large nodule (a lobulation, a calcification) is the same finding."""
    lo = torch.maximum(boxes1[:, None, :3], boxes2[None, :, :3])
    hi = torch.minimum(boxes1[:, None, 3:], boxes2[None, :, 3:])
    inter = (hi - lo).clamp(min=0).prod(dim=2)
    vol1 = (boxes1[:, 3:] - boxes1[:, :3]).prod(dim=1)
    vol2 = (boxes2[:, 3:] - boxes2[:, :3]).prod(dim=1)
    return inter / torch.minimum(vol1[:, None], vol2[None, :]).clamp(min=1e-9)


def nms_mm(
    centres_mm: np.ndarray,
    diameters_mm: np.ndarray,
    scores: np.ndarray,
    overlap: float,
    min_mm: float,
) -> np.ndarray:
    """Indices kept by MONAI's 3-D box NMS, best first, on boxes of edge max(diameter,
    min_mm) around each centre, a box being dropped when more than ``overlap`` of it (or of
    the better box, if smaller) lies inside a better one (``box_iomin``)."""
    from monai.data.box_utils import non_max_suppression

    if len(scores) == 0:
        return np.zeros(0, dtype=int)
    half = np.maximum(np.asarray(diameters_mm, float), min_mm)[:, None] / 2
    boxes = torch.from_numpy(np.concatenate([centres_mm - half, centres_mm + half], axis=1))
    keep = non_max_suppression(
        boxes, torch.from_numpy(np.array(scores, float)), overlap, box_overlap_metric=box_iomin
    )
    return np.asarray(keep, dtype=int)


def cube_diameter_mm(cube: np.ndarray, spacing_mm: float, fallback_mm: float) -> float:
    """Equivalent-sphere diameter of the dense object at the centre of a HU cube (its
    central 40³ voxels).

    Voxels above a threshold (−500 HU for a solid centre; half-way between the centre and
    aerated lung for a ground-glass one) are opened by one voxel to cut thin vessels off,
    and the connected part that holds the centre (or lies within 2 voxels of it) is
    measured inside a ball of twice its inscribed radius at the centre (plus 2 voxels).
    ``fallback_mm`` (the blob size) when nothing dense is at the centre."""
    full = np.asarray(cube)
    lo = [max(0, n // 2 - MEASURE_HALF_VOXELS) for n in full.shape]
    c = full[tuple(slice(a, a + 2 * MEASURE_HALF_VOXELS) for a in lo)].astype(np.float32)
    mid = np.array(full.shape) // 2 - np.array(lo)
    core = float(c[tuple(slice(m - 1, m + 1) for m in mid)].mean())
    if core <= LUNG_HU + 50:
        return fallback_mm
    threshold = -500.0 if core > -500.0 else (core + LUNG_HU) / 2
    structure = ndimage.generate_binary_structure(3, 1)
    labels, n = ndimage.label(ndimage.binary_opening(c > threshold, structure=structure))
    near = labels[tuple(slice(m - 2, m + 2) for m in mid)]
    ids = near[near > 0]
    if n == 0 or len(ids) == 0:
        return fallback_mm
    part = labels == np.bincount(ids).argmax()
    # Only what lies within twice the largest sphere inscribed at the centre counts: a
    # nodule touching the chest wall or a vessel trunk must not take their volume.
    depth = ndimage.distance_transform_edt(part)
    inscribed = float(depth[tuple(slice(m - 2, m + 2) for m in mid)].max())
    zz, yy, xx = np.indices(c.shape)
    r2 = (zz - mid[0] + 0.5) ** 2 + (yy - mid[1] + 0.5) ** 2 + (xx - mid[2] + 0.5) ** 2
    volume = np.count_nonzero(part & (r2 <= (2 * inscribed + 2) ** 2)) * spacing_mm**3
    return float((6 * volume / np.pi) ** (1 / 3))


def score_cubes(
    volume: CtVolume,
    centres_mm: np.ndarray,
    loaded: LoadedModel,
    config: DetectorConfig,
    device: torch.device,
    blob_diameters_mm: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[FindingMask] | None]:
    """Nodule probability, malignancy, diameter (``cube_diameter_mm``, for a model without
    the decoder) and the network's optional outputs ((N, k), columns ``model.output_names``:
    the attributes on their LIDC scales, the readers' predicted malignancy sd) of the cube
    centred on each point, and each cube's nodule mask in patient mm (None without the
    decoder)."""
    model, window_hu = loaded.network, loaded.window
    segments = model.segments
    if len(centres_mm) == 0:
        empty = np.zeros((0, len(model.output_names)), np.float32)
        return (
            np.zeros(0, np.float32),
            np.zeros(0, np.float32),
            np.zeros(0),
            empty,
            [] if segments else None,
        )
    hu, geometry = mirror_pad_z(volume, config.cube_size * config.spacing_mm)
    image = geometry.to_sitk(hu)
    probs, mals, sizes, attrs, masks = [], [], [], [], []
    for start in range(0, len(centres_mm), config.batch_size):
        chunk = centres_mm[start : start + config.batch_size]
        cubes = np.stack(
            [extract_cube(image, c, config.cube_size, config.spacing_mm) for c in chunk]
        )
        # the detection head (candidate cubes are centred on the candidates, not nodules)
        p, m, a, cube_masks = predict_hu_cubes(
            model,
            cubes,
            window_hu,
            device,
            config.batch_size,
            named_outputs=True,
            masks=True,
            head_only=True,
        )
        for flip in config.tta_flips:  # flipped copies along these cube axes (z, y, x)
            pf, mf, af = predict_hu_cubes(
                model,
                np.flip(cubes, axis=1 + flip).copy(),
                window_hu,
                device,
                config.batch_size,
                named_outputs=True,
                head_only=True,
            )
            p, m, a = p + pf, m + mf, a + af
        n = 1 + len(config.tta_flips)
        probs.append(p / n)
        mals.append(m / n)
        attrs.append(a / n)
        if segments:
            masks.extend(
                cube_finding_mask(mk, cube, c, config.spacing_mm)
                for mk, cube, c in zip(cube_masks, cubes, chunk)
            )
            sizes.extend([np.nan] * len(chunk))
        else:
            fallback = blob_diameters_mm[start : start + config.batch_size]
            sizes.extend(cube_diameter_mm(c, config.spacing_mm, f) for c, f in zip(cubes, fallback))
    return (
        np.concatenate(probs),
        np.concatenate(mals),
        np.array(sizes),
        np.concatenate(attrs),
        masks if segments else None,
    )


def _texture(cands: pd.DataFrame, i: int) -> float | None:
    return float(cands["attr_texture"].iat[i]) if "attr_texture" in cands else None


def mask_findings(
    cands: pd.DataFrame, masks: list[FindingMask]
) -> tuple[pd.DataFrame, dict[int, tuple[np.ndarray, np.ndarray, float]]]:
    """One row per nodule from scored candidates and their cube masks: the best member's
    scores at the fused mask's centroid, with its sizes, type and Lung-RADS category, and
    the fused masks (keyed by row)."""
    centres = cands[["coordX", "coordY", "coordZ"]].to_numpy(float)
    groups = group_findings(masks, centres, cands["probability"].to_numpy())
    rows, fused = [], {}
    for members in groups:
        best = members[0]
        row = cands.iloc[best].to_dict()
        mask, origin, hu = fuse_masks([masks[i] for i in members])
        spacing = masks[best].spacing_mm
        measures = measure_mask(mask, origin, spacing, hu)
        row["cubes"] = len(members)
        row.update(measured(measures, _texture(cands, best)))
        if measures.empty:
            row["sizing"] = "n/a"
        else:
            fused[len(rows)] = (mask, origin, spacing)
            row["coordX"], row["coordY"], row["coordZ"] = measures.centroid_mm
            row["sizing"] = "mask"
        rows.append(row)
    return pd.DataFrame(rows).reset_index(drop=True), fused


def detect_volume(
    volume: CtVolume,
    loaded: LoadedModel,
    config: DetectorConfig | None = None,
    device: torch.device | str = "cpu",
) -> ScanDetections:
    """Find the nodules of one HU volume (see module docstring).

    Returns:
        ``candidates`` (every candidate with its network probability and malignancy) and
        ``findings`` (after NMS, most probable first: patient-mm centre, probability,
        malignancy 1–5, diameter), with seconds spent per step. A scan with no lung found
        has no candidates and a note saying so.
    """
    config = config or detector_config(loaded.cut, DetectConfig())
    device = torch.device(device)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    t = time.perf_counter()
    lungs = lung_mask(volume.hu, volume.geometry, config.lung_dilation_mm, config.lung_closing_mm)
    seconds["lung_mask"] = time.perf_counter() - t
    notes.extend(acquisition_notes(volume.geometry, lungs))
    t = time.perf_counter()
    if not lungs.region.any():
        notes.append("no lung found (no air region inside the body): no candidates")
    cands = generate_candidates(
        volume.geometry.to_sitk(volume.hu), lungs, volume.geometry, config.candidates
    )
    seconds["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    centres = cands[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
    prob, mal, size, attrs, masks = score_cubes(
        volume, centres, loaded, config, device, cands["diameter_mm"].to_numpy(float)
    )
    cands = cands.assign(probability=prob, malignancy=mal, blob_diameter_mm=cands["diameter_mm"])
    attr_columns = attribute_columns(loaded.network.output_names)
    for i, column in enumerate(attr_columns):  # the readers' attributes (and sd), as predicted
        cands[column] = attrs[:, i]
    cands["diameter_mm"] = size
    scored = cands.rename(columns={"score": "candidate_score"})
    fused: dict[int, tuple[np.ndarray, np.ndarray, float]] = {}
    if masks is None:
        notes.append("sized from the dense part at each cube's centre (no segmentation head)")
        nodules = scored.assign(
            sizing="cube centre",
            cubes=1,
            type="n/a",
            mean_diameter_mm=np.nan,
            volume_mm3=np.nan,
            solid_diameter_mm=np.nan,
            lung_rads=UNSIZED,
        )
    elif len(scored):
        nodules, fused = mask_findings(scored, masks)
    else:
        missing = [c for c in FINDING_COLUMNS if c not in scored.columns]
        nodules = scored.reindex(columns=[*scored.columns, *missing])
    # Findings without a mask (and those of a model without the decoder): box NMS.
    box_mm = nodules["diameter_mm"].fillna(nodules["blob_diameter_mm"]).to_numpy(float)
    keep = nms_mm(
        nodules[["coordX", "coordY", "coordZ"]].to_numpy(float),
        box_mm,
        nodules["probability"].to_numpy(float),
        config.nms_overlap,
        MIN_BOX_MM,
    )
    findings = nodules.iloc[keep]
    order = np.argsort(-findings["probability"].to_numpy(), kind="stable")
    old_rows = findings.index.to_numpy()[order]
    findings = findings.iloc[order][[*FINDING_COLUMNS, *attr_columns]].reset_index(drop=True)
    findings["malignancy"] = findings["malignancy"].clip(1.0, 5.0)
    masks_kept = {new: fused[old] for new, old in enumerate(old_rows) if old in fused}
    seconds["scoring"] = time.perf_counter() - t
    return ScanDetections(
        volume.series_uid, volume.patient_id, cands, findings, seconds, notes, masks_kept
    )


#: Off-centre check: each reference nodule is recut this far (mm, from its centre to the
#: cube's) in random directions.
OFFCENTRE_MM = (8.0, 14.0)


def offcentre_recut(
    volume: CtVolume,
    reference: pd.DataFrame,
    loaded: LoadedModel,
    config: DetectorConfig,
    moves: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Score each reference nodule's cube recut with the nodule ``OFFCENTRE_MM`` off the
    cube's centre (``moves`` random directions, seeded by the series and nodule): the
    probability the network gives it and how far its mask's centroid lies from the nodule's
    centre (``localisation_error_mm``; NaN where it outlines nothing, or without the
    decoder), with the recut cube's centre (``cubeX``, ``cubeY``, ``cubeZ``, patient mm)."""
    columns = ["nodule_id", "offset_mm", "probability", "localisation_error_mm", "diameter_mm"]
    columns += ["cubeX", "cubeY", "cubeZ"]
    if reference is None or reference.empty:
        return pd.DataFrame(columns=columns)
    rng = np.random.default_rng([seed, *(ord(ch) for ch in volume.series_uid[-16:])])
    centres, rows = [], []
    for ref in reference.itertuples():
        nodule = np.array([ref.coordX, ref.coordY, ref.coordZ], float)
        for _ in range(moves):
            direction = rng.normal(size=3)
            distance = rng.uniform(*OFFCENTRE_MM)
            centres.append(nodule + direction / np.linalg.norm(direction) * distance)
            rows.append({"nodule_id": ref.nodule_id, "offset_mm": distance, "nodule": nodule})
            rows[-1].update(zip(("cubeX", "cubeY", "cubeZ"), centres[-1]))
    prob, _, _, _, masks = score_cubes(
        volume,
        np.array(centres),
        loaded,
        config,
        torch.device("cpu"),
        np.full(len(centres), np.nan),
    )
    out = []
    for i, (row, p) in enumerate(zip(rows, prob)):
        error, size = np.nan, np.nan
        if masks is not None and len(masks[i]):
            mask, origin, hu = fuse_masks([masks[i]])
            measures = measure_mask(mask, origin, masks[i].spacing_mm, hu)
            error = float(np.linalg.norm(np.array(measures.centroid_mm) - row["nodule"]))
            size = measures.diameter_mm
        out.append(
            {
                "nodule_id": row["nodule_id"],
                "offset_mm": row["offset_mm"],
                "probability": float(p),
                "localisation_error_mm": error,
                "diameter_mm": size,
                **{k: float(row[k]) for k in ("cubeX", "cubeY", "cubeZ")},
            }
        )
    return pd.DataFrame(out, columns=columns)
