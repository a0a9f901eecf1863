"""Cube dataset for training: memory-mapped cubes, split by patient, windowed and augmented.

Augmentations are MONAI array transforms with their own seeded random state; the trainer
re-seeds them from (seed, epoch) at the start of every epoch, so a resumed run draws the
same augmentations as an uninterrupted one.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from monai.transforms import (
    BorderPad,
    Compose,
    RandFlip,
    RandRotate90,
    RandShiftIntensity,
    RandSpatialCrop,
    ScaleIntensityRange,
)
from torch.utils.data import Dataset

from lungcad.splits.patient_split import load_splits
from lungcad.training.config import AugmentConfig


class DatasetMissingError(FileNotFoundError):
    """The cube dataset or its splits have not been built yet."""


@dataclass(frozen=True)
class CubeData:
    """The cube array (memory-mapped) and its index, with each row's split."""

    cubes: np.ndarray
    index: pd.DataFrame

    def subset(self, split: str) -> pd.DataFrame:
        return self.index[self.index["split"] == split]


def load_cube_data(dataset_dir: str | Path, splits_file: str | Path) -> CubeData:
    """Open ``cubes.npy``/``index.csv`` and tag every row with its patient's split.

    Raises:
        DatasetMissingError: naming the command or DVC stage that makes the missing file.
    """
    dataset_dir, splits_file = Path(dataset_dir), Path(splits_file)
    for path, maker in (
        (dataset_dir / "cubes.npy", "`dvc repro preprocess` (or `lungcad data build`)"),
        (dataset_dir / "index.csv", "`dvc repro preprocess` (or `lungcad data build`)"),
        (splits_file, "`dvc repro split` (or `lungcad data split`)"),
    ):
        if not path.exists():
            raise DatasetMissingError(f"{path} does not exist: run {maker} first")
    cubes = np.load(dataset_dir / "cubes.npy", mmap_mode="r")
    index = pd.read_csv(dataset_dir / "index.csv")
    if len(index) != len(cubes):
        raise DatasetMissingError(
            f"{dataset_dir}: index.csv has {len(index)} rows but cubes.npy {len(cubes)} cubes; "
            "rebuild the dataset"
        )
    splits = load_splits(splits_file)
    split_of = {pid: name for name, ids in splits.items() for pid in ids}
    index = index.assign(split=index["patient_id"].map(split_of))
    missing = index["split"].isna()
    if missing.any():
        raise DatasetMissingError(
            f"{missing.sum()} cubes belong to patients absent from {splits_file}: "
            "re-run `dvc repro split` after rebuilding the dataset"
        )
    return CubeData(cubes, index)


def window_transform(window_hu: tuple[float, float]) -> ScaleIntensityRange:
    """HU -> [0, 1] over the window, clipped (the model's input normalisation)."""
    return ScaleIntensityRange(
        a_min=window_hu[0], a_max=window_hu[1], b_min=0.0, b_max=1.0, clip=True
    )


def train_transform(
    window_hu: tuple[float, float], augment: AugmentConfig, cube_size: int = 64
) -> Compose:
    """Windowing plus flips, axial 90-degree rotations, small shifts and HU jitter."""
    steps = [window_transform(window_hu)]
    if augment.shift_mm > 0:  # pad with air (0 after windowing), crop back at a random place
        steps += [
            BorderPad(spatial_border=augment.shift_mm, mode="constant"),
            RandSpatialCrop(roi_size=(cube_size,) * 3, random_size=False),
        ]
    if augment.flip:
        steps += [RandFlip(prob=0.5, spatial_axis=a) for a in range(3)]
    if augment.rot90:
        steps += [RandRotate90(prob=0.75, max_k=3, spatial_axes=(1, 2))]
    if augment.hu_jitter > 0:
        scale = augment.hu_jitter / (window_hu[1] - window_hu[0])
        steps += [RandShiftIntensity(offsets=scale, prob=0.8)]
    return Compose(steps)


class CubeDataset(Dataset):
    """(cube, detection label, malignancy target, malignancy mask) for rows of the index.

    Args:
        cubes: (N, D, H, W) int16 HU array (memory-mapped is fine).
        rows: the index rows to serve.
        transform: callable on a (1, D, H, W) float32 array.
    """

    def __init__(self, cubes: np.ndarray, rows: pd.DataFrame, transform) -> None:
        self.cubes = cubes
        self.cube_index = rows["cube_index"].to_numpy()
        self.label = rows["label"].to_numpy(dtype=np.float32)
        mal = rows["malignancy_mean"].to_numpy(dtype=np.float32)
        self.has_mal = ~np.isnan(mal)
        self.malignancy = np.where(self.has_mal, mal, 1.0).astype(np.float32)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.cube_index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        cube = np.asarray(self.cubes[self.cube_index[i]], dtype=np.float32)[None]
        x = torch.as_tensor(np.ascontiguousarray(self.transform(cube)), dtype=torch.float32)
        return (
            x,
            torch.tensor(self.label[i]),
            torch.tensor(self.malignancy[i]),
            torch.tensor(self.has_mal[i]),
        )
