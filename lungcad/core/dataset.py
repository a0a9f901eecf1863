"""Cube dataset for training: memory-mapped cubes split by patient, served to the device.

A :class:`CubeStore` holds the int16 cubes of some index rows either resident on the
training device (GPU memory, or RAM on the CPU: batches are gathered by index there) or
read from the memory-mapped array per batch by a persistent DataLoader with pinned memory.
Either way int16 crosses to the device and windowing and augmentation
(:mod:`lungcad.training.augment`) run there, batch-wise. Every random draw is made in the
main process from (seed, epoch), so DataLoader workers only read and a resumed run sees
exactly what an uninterrupted one saw.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from lungcad.core.model.attributes import StaleDatasetError, attribute_targets
from lungcad.core.splits import load_splits
from lungcad.errors import LungcadError

log = logging.getLogger(__name__)

#: Share of the free memory (GPU, or RAM on the CPU) the resident cubes may take under
#: ``data_on_device: auto``; the rest is for activations, the optimizer and the OS.
RESIDENT_MEMORY_SHARE = 0.4


class DatasetMissingError(LungcadError, FileNotFoundError):
    """The cube dataset or its splits have not been built yet."""


@dataclass(frozen=True)
class CubeData:
    """The cube array (memory-mapped) and its index, with each row's split."""

    cubes: np.ndarray
    index: pd.DataFrame
    #: How the cubes were cut (fingerprint.json's preprocess and candidates sections): a
    #: checkpoint carries it, so inference cuts cubes the same way.
    cut_settings: dict = field(default_factory=dict)
    #: The folder the dataset was read from (its ``masks.npy`` holds the nodule masks).
    dataset_dir: Path | None = None

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
    return CubeData(cubes, index, read_cut_settings(dataset_dir), dataset_dir)


def read_cut_settings(dataset_dir: str | Path) -> dict:
    """``{"preprocess": …, "candidates": …}`` from the dataset's fingerprint.json ({} for a
    dataset without one)."""
    path = Path(dataset_dir) / "fingerprint.json"
    if not path.exists():
        return {}
    doc = json.loads(path.read_text())
    return {k: doc[k] for k in ("preprocess", "candidates") if k in doc}


class MaskStore:
    """The bit-packed consensus masks of some index rows (``lungcad.core.masks``), resident
    on the device (1/8 of a bool array) and unpacked there per batch.

    Args:
        dataset_dir: the dataset whose ``masks.npy`` is read.
        cube_index: rows this store serves, in its own order (as its ``CubeStore``).
        size: voxels per cube side.
        device: where batches are needed.
    """

    def __init__(
        self, dataset_dir: Path, cube_index: np.ndarray, size: int, device: torch.device | str
    ) -> None:
        from lungcad.core.masks import read_packed_masks

        packed = read_packed_masks(dataset_dir, cube_index, size)
        self.packed = torch.from_numpy(packed).to(device)
        self.bits = torch.tensor([128, 64, 32, 16, 8, 4, 2, 1], dtype=torch.uint8, device=device)
        self.size = size

    def take(self, positions: torch.Tensor) -> torch.Tensor:
        """(B, 1, S, S, S) float32 masks (0/1) of these positions."""
        packed = self.packed.index_select(0, positions)
        bits = (packed[..., None] & self.bits) > 0  # np.packbits order: most significant first
        return bits.reshape(len(packed), 1, *(self.size,) * 3).float()


def read_cube_rows(cubes: np.ndarray, cube_index: np.ndarray) -> np.ndarray:
    """``cubes[cube_index]`` as one in-memory array, read in ascending order (sequential
    reads from a memory-mapped file) and returned in the order asked."""
    order = np.argsort(cube_index, kind="stable")
    out = np.empty((len(cube_index), *cubes.shape[1:]), dtype=cubes.dtype)
    out[order] = cubes[cube_index[order]]
    return out


def available_memory_bytes(device: torch.device) -> int:
    """Free memory where the resident cubes would live: the GPU's, or the machine's RAM."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free)
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))


def resolve_data_on_device(setting: str | bool, device: torch.device, nbytes: int) -> bool:
    """Whether cubes of ``nbytes`` go to the device (``train.data_on_device``)."""
    if setting in (True, "true"):
        return True
    if setting in (False, "false"):
        return False
    budget = RESIDENT_MEMORY_SHARE * available_memory_bytes(device)
    fits = nbytes <= budget
    if not fits:
        log.info(
            "cubes (%.1f GB) exceed %.0f%% of the free %s memory: streaming them with a "
            "pinned-memory DataLoader instead",
            nbytes / 1e9,
            100 * RESIDENT_MEMORY_SHARE,
            device.type,
        )
    return fits


class _EpochBatches(Sampler):
    """The positions of each batch of the current epoch (set by :meth:`CubeStore.batches`
    before iterating, so a persistent DataLoader can follow a new order every epoch)."""

    def __init__(self) -> None:
        self.positions: list[np.ndarray] = []

    def __iter__(self) -> Iterator[np.ndarray]:
        return iter(self.positions)

    def __len__(self) -> int:
        return len(self.positions)


class _CubeReader(Dataset):
    """Reads the cubes of a batch of positions (what streaming DataLoader workers do)."""

    def __init__(self, cubes: np.ndarray, cube_index: np.ndarray) -> None:
        self.cubes, self.cube_index = cubes, cube_index

    def __len__(self) -> int:
        return len(self.cube_index)

    def __getitem__(self, positions: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(read_cube_rows(self.cubes, self.cube_index[positions]))


class CubeStore:
    """The int16 cubes of some index rows, served to ``device`` in batches.

    Args:
        cubes: (N, D, H, W) int16 HU array (memory-mapped is fine).
        cube_index: rows of ``cubes`` this store serves, in its own order.
        device: where batches are needed.
        resident: copy the cubes to ``device`` once and gather batches there; otherwise
            read each batch from ``cubes`` (DataLoader workers, pinned memory on CUDA).
        num_workers: DataLoader workers of the streaming path (persistent across epochs).

    Example:
        >>> store = CubeStore(np.zeros((4, 8, 8, 8), np.int16), np.array([3, 1]), "cpu", True)
        >>> [tuple(x.shape) for _, x in store.batches(torch.tensor([1, 0]), batch_size=2)]
        [(2, 8, 8, 8)]
    """

    def __init__(
        self,
        cubes: np.ndarray,
        cube_index: np.ndarray,
        device: torch.device | str,
        resident: bool,
        num_workers: int = 0,
    ) -> None:
        self.cubes = cubes
        self.cube_index = np.asarray(cube_index, dtype=np.int64)
        self.device = torch.device(device)
        self.resident: torch.Tensor | None = None
        self.loader: DataLoader | None = None
        if resident:
            self.resident = torch.from_numpy(read_cube_rows(cubes, self.cube_index)).to(self.device)
        else:
            self.sampler = _EpochBatches()
            self.loader = DataLoader(
                _CubeReader(cubes, self.cube_index),
                batch_size=None,
                sampler=self.sampler,
                num_workers=num_workers,
                pin_memory=self.device.type == "cuda",
                persistent_workers=num_workers > 0,
            )

    def __len__(self) -> int:
        return len(self.cube_index)

    def batches(
        self, order: torch.Tensor, batch_size: int, drop_last: bool = False
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(positions on the device, int16 cubes on the device) per batch of ``order``.

        ``order`` (CPU) is copied to the device once, so no step waits on a host copy.
        """
        count = len(order) // batch_size if drop_last else -(-len(order) // batch_size)
        order_dev = order.to(self.device)
        chunks = [slice(i * batch_size, (i + 1) * batch_size) for i in range(count)]
        if self.resident is not None:
            for chunk in chunks:
                positions = order_dev[chunk]
                yield positions, self.resident.index_select(0, positions)
            return
        self.sampler.positions = [order[chunk].numpy() for chunk in chunks]
        for chunk, cubes in zip(chunks, self.loader):
            yield order_dev[chunk], cubes.to(self.device, non_blocking=True)


class TrainTargets:
    """Per row, as tensors on the device: detection label, malignancy target, its mask and
    loss weight (1, or 1 / (1 + the readers' spread) with ``agreement_weights``), the
    normalised attribute targets and their mask ((N, 0) without ``attributes``), and the
    readers' malignancy sd (0 where there is none; read only with ``reader_spread``)."""

    def __init__(
        self,
        rows: pd.DataFrame,
        device: torch.device | str,
        attributes: bool = False,
        agreement_weights: bool = False,
        reader_spread: bool = False,
    ) -> None:
        mal = rows["malignancy_mean"].to_numpy(dtype=np.float32)
        has_mal = ~np.isnan(mal)
        spread = np.zeros(len(rows), np.float32)
        if agreement_weights or reader_spread:
            if "malignancy_std" not in rows.columns:
                need = "mal_weighting=agreement" if agreement_weights else "model.spread"
                raise StaleDatasetError(
                    f"train.{need} needs index.csv's malignancy_std column: "
                    "rebuild the dataset (`dvc repro preprocess`)"
                )
            spread = rows["malignancy_std"].to_numpy(np.float32)
            spread = np.where(np.isfinite(spread), spread, 0.0).astype(np.float32)
        weight = (1.0 / (1.0 + spread)) if agreement_weights else np.ones(len(rows))
        self.mal_weight = torch.as_tensor(weight.astype(np.float32), device=device)
        self.reader_sd = torch.as_tensor(spread, device=device)
        self.label = torch.as_tensor(rows["label"].to_numpy(dtype=np.float32), device=device)
        self.malignancy = torch.as_tensor(np.where(has_mal, mal, 1.0), device=device)
        self.has_mal = torch.as_tensor(has_mal, device=device)
        if attributes:
            values, mask = attribute_targets(rows)
        else:
            values, mask = np.zeros((len(rows), 0), np.float32), np.zeros((len(rows), 0), bool)
        self.attributes = torch.as_tensor(values, device=device)
        self.has_attributes = torch.as_tensor(mask, device=device)

    def take(self, positions: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """(label, malignancy target, its mask, its loss weight, attribute targets, their
        mask, readers' malignancy sd) of rows."""
        return (
            self.label[positions],
            self.malignancy[positions],
            self.has_mal[positions],
            self.mal_weight[positions],
            self.attributes[positions],
            self.has_attributes[positions],
            self.reader_sd[positions],
        )
