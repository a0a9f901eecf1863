"""Dataset fingerprint: what the scans and nodules behind a cube dataset look like.

Like nnU-Net's fingerprint it records spacings, slice counts and intensity percentiles,
plus nodule size statistics, so that a dataset built from another LIDC root (or the
phantom) can be compared at a glance. Written atomically as JSON beside the cubes.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.config import CandidatesConfig, PreprocessConfig
from lungcad.core.io.series import CtVolume
from lungcad.core.lung_mask import LungMasks
from lungcad.core.outputs import write_text_atomic

PERCENTILES = (0.5, 5.0, 50.0, 95.0, 99.5)


@dataclass(frozen=True)
class ScanStats:
    """Per-scan numbers that the fingerprint aggregates."""

    series_uid: str
    spacing_mm: tuple[float, float, float]
    n_slices: int
    hu_sample_lung: list[float]
    hu_sample_body: list[float]

    @classmethod
    def from_volume(
        cls,
        volume: CtVolume,
        lungs: LungMasks,
        rng: np.random.Generator,
        n_sample: int = 2000,
    ) -> ScanStats:
        """Sample HU in the lung parenchyma and in the body (HU > -500) of one volume."""
        # Random voxels instead of boolean masks: no full-size temporary arrays.
        idx = rng.integers(0, volume.hu.shape, size=(20 * n_sample, 3))
        values = volume.hu[tuple(idx.T)].astype(float)
        in_lung = lungs.parenchyma[lungs.block_of(idx)]
        return cls(
            volume.series_uid,
            tuple(float(v) for v in volume.geometry.spacing_mm),
            int(volume.hu.shape[0]),
            values[in_lung][:n_sample].tolist(),
            values[values > -500][:n_sample].tolist(),
        )

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> ScanStats:
        d = json.loads(text)
        d["spacing_mm"] = tuple(d["spacing_mm"])
        return cls(**d)


def _describe(values: np.ndarray) -> dict[str, float]:
    if values.size == 0:
        return {}
    return {
        "n": int(values.size),
        "mean": float(values.mean()),
        "median": float(np.median(values)),
        "min": float(values.min()),
        "max": float(values.max()),
    }


def _percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    return {f"p{p:g}": float(v) for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES))}


def write_fingerprint(
    path: Path,
    stats: list[ScanStats],
    index: pd.DataFrame,
    config: PreprocessConfig,
    candidates: CandidatesConfig,
) -> dict:
    """Aggregate per-scan stats and the cube index into ``path`` (JSON, atomic)."""
    spacings = np.array([s.spacing_mm for s in stats]).reshape(-1, 3)
    nodules = index[index["label"] == 1]
    fingerprint = {
        "n_scans": len(stats),
        "n_patients": int(index["patient_id"].nunique()) if len(index) else 0,
        "n_cubes": int(len(index)),
        "cubes_by_kind": {str(k): int(v) for k, v in index["kind"].value_counts().items()},
        "pixel_spacing_mm": _describe(spacings[:, 0]),
        "slice_spacing_mm": _describe(spacings[:, 2]),
        "median_spacing_mm": [float(v) for v in np.median(spacings, axis=0)] if len(stats) else [],
        "slices_per_scan": _describe(np.array([s.n_slices for s in stats], dtype=float)),
        "hu_percentiles_lung": _percentiles([v for s in stats for v in s.hu_sample_lung]),
        "hu_percentiles_body": _percentiles([v for s in stats for v in s.hu_sample_body]),
        "nodule_diameter_mm": _describe(nodules["diameter_mm"].to_numpy(dtype=float)),
        "nodule_volume_mm3": _describe(nodules["volume_mm3"].to_numpy(dtype=float)),
        "nodule_malignancy_mean": _describe(nodules["malignancy_mean"].to_numpy(dtype=float)),
        "nodule_readers": {
            str(k): int(v) for k, v in nodules["n_readers"].value_counts().sort_index().items()
        },
        "preprocess": config.to_dict(),
        "candidates": candidates.to_dict(),
    }
    write_text_atomic(path, json.dumps(fingerprint, indent=2), "the dataset fingerprint")
    return fingerprint
