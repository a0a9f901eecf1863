"""Whole-scan detection of one CT: lung mask → candidates → 64³ cubes scored by the network →
non-maximum suppression in mm.

Each candidate's cube is cut with the same physically exact extraction as the training
cubes (``extract_cube``: a 1 mm grid centred on the candidate's patient-mm position) from
the volume mirrored in z (``mirror_pad_z``), so a candidate near the first or last slice
gets anatomy rather than air around it, as the candidate negatives of the training set do.
Duplicates (two candidates on one nodule) are merged by MONAI's box NMS on mm boxes of the
candidate's blob size.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from lungcad.detection.candidates import CandidateConfig, generate_candidates
from lungcad.io.series import CtVolume
from lungcad.preprocessing.cubes import extract_cube, mirror_pad_z
from lungcad.preprocessing.lung_mask import lung_mask
from lungcad.training.model import NoduleNet
from lungcad.training.predict import predict_hu_cubes

FINDING_COLUMNS = [
    "coordX",
    "coordY",
    "coordZ",
    "probability",
    "malignancy",
    "diameter_mm",
    "candidate_score",
]


@dataclass(frozen=True)
class DetectConfig:
    """Settings of whole-scan detection.

    Attributes:
        candidates: the candidate generator.
        cube_size, spacing_mm: the network's input cube (as in training).
        batch_size: cubes per forward pass.
        nms_iou: boxes overlapping more than this (IoU) with a better finding are dropped.
        min_box_mm: smallest box edge used for NMS (tiny blobs still merge when they
            sit on the same nodule).
        lung_dilation_mm, lung_closing_mm: the lung mask (as in preprocessing).
    """

    candidates: CandidateConfig = field(default_factory=CandidateConfig)
    cube_size: int = 64
    spacing_mm: float = 1.0
    batch_size: int = 16
    nms_iou: float = 0.1
    min_box_mm: float = 5.0
    lung_dilation_mm: float = 5.0
    lung_closing_mm: float = 20.0


@dataclass
class ScanDetections:
    """What detection found in one scan, with its timings and notes."""

    series_uid: str
    patient_id: str
    candidates: pd.DataFrame
    findings: pd.DataFrame
    seconds: dict[str, float]
    notes: list[str] = field(default_factory=list)


def nms_mm(
    centres_mm: np.ndarray, diameters_mm: np.ndarray, scores: np.ndarray, iou: float, min_mm: float
) -> np.ndarray:
    """Indices kept by 3-D box NMS (MONAI) on boxes of edge max(diameter, min_mm), best first."""
    from monai.data.box_utils import non_max_suppression

    if len(scores) == 0:
        return np.zeros(0, dtype=int)
    half = np.maximum(np.asarray(diameters_mm, float), min_mm)[:, None] / 2
    boxes = np.concatenate([centres_mm - half, centres_mm + half], axis=1)
    keep = non_max_suppression(boxes, np.asarray(scores, float), nms_thresh=iou)
    return np.asarray(keep, dtype=int)


def score_cubes(
    volume: CtVolume,
    centres_mm: np.ndarray,
    model: NoduleNet,
    window_hu: tuple[float, float],
    config: DetectConfig,
    device: torch.device,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodule probability and malignancy of the cube centred on each point, in batches."""
    if len(centres_mm) == 0:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    hu, geometry = mirror_pad_z(volume, config.cube_size * config.spacing_mm)
    image = geometry.to_sitk(hu)
    probs, mals = [], []
    for start in range(0, len(centres_mm), config.batch_size):
        chunk = centres_mm[start : start + config.batch_size]
        cubes = np.stack(
            [extract_cube(image, c, config.cube_size, config.spacing_mm) for c in chunk]
        )
        p, m = predict_hu_cubes(model, cubes, window_hu, device, config.batch_size)
        probs.append(p)
        mals.append(m)
    return np.concatenate(probs), np.concatenate(mals)


def detect_volume(
    volume: CtVolume,
    model: NoduleNet,
    window_hu: tuple[float, float],
    config: DetectConfig | None = None,
    device: torch.device | str = "cpu",
) -> ScanDetections:
    """Find the nodules of one HU volume (see module docstring).

    Returns:
        ``candidates`` (every candidate with its network probability and malignancy) and
        ``findings`` (after NMS, most probable first: patient-mm centre, probability,
        malignancy 1–5, diameter), with seconds spent per step. A scan with no lung found
        has no candidates and a note saying so.
    """
    config = config or DetectConfig()
    device = torch.device(device)
    seconds: dict[str, float] = {}
    notes: list[str] = []
    t = time.perf_counter()
    lungs = lung_mask(volume.hu, volume.geometry, config.lung_dilation_mm, config.lung_closing_mm)
    seconds["lung_mask"] = time.perf_counter() - t
    t = time.perf_counter()
    if not lungs.region.any():
        notes.append("no lung found (no air region inside the body): no candidates")
        cands = generate_candidates(volume.geometry.to_sitk(volume.hu), lungs, volume.geometry)
    else:
        cands = generate_candidates(
            volume.geometry.to_sitk(volume.hu), lungs, volume.geometry, config.candidates
        )
    seconds["candidates"] = time.perf_counter() - t
    t = time.perf_counter()
    centres = cands[["coordX", "coordY", "coordZ"]].to_numpy(dtype=float)
    prob, mal = score_cubes(volume, centres, model, window_hu, config, device)
    cands = cands.assign(probability=prob, malignancy=mal)
    keep = nms_mm(centres, cands["diameter_mm"].to_numpy(), prob, config.nms_iou, config.min_box_mm)
    findings = (
        cands.iloc[keep]
        .rename(columns={"score": "candidate_score"})
        .sort_values("probability", ascending=False, kind="stable")[FINDING_COLUMNS]
        .reset_index(drop=True)
    )
    findings["malignancy"] = findings["malignancy"].clip(1.0, 5.0)
    seconds["scoring"] = time.perf_counter() - t
    return ScanDetections(volume.series_uid, volume.patient_id, cands, findings, seconds, notes)
