"""Each nodule cube's consensus mask, resampled into the cube: ``masks.npy`` of the dataset.

The readers' consensus (voxels outlined by at least half of a nodule's readers, on the LIDC
database's slice grid) is placed on the series' own voxel grid, slice by slice through the
slice positions, and resampled into the cube's 1 mm grid with the same physical geometry as
the cube's pixels (linear interpolation of the 0/1 mask, kept where >= 0.5). Cubes other
than nodule cubes have an empty mask.

``masks.npy`` is aligned with ``cubes.npy`` (row ``cube_index``) and stored bit-packed along
x (``np.packbits(axis=-1)``: 32 KB per 64³ cube rather than 256 KB); ``read_masks`` unpacks.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungcad.core.annotations.lidc_db import ScanRecord
from lungcad.core.annotations.nodules import Nodule
from lungcad.core.cubes import cube_grid_origin
from lungcad.core.io.series import CtVolume
from lungcad.errors import LungcadError

MASKS_FILE = "masks.npy"


class MasksMissingError(LungcadError, FileNotFoundError):
    """The dataset was built before masks were part of it."""


def nodule_cube_mask(
    nodule: Nodule,
    scan: ScanRecord,
    volume: CtVolume,
    center_mm: np.ndarray,
    size: int,
    spacing_mm: float,
) -> np.ndarray:
    """The nodule's consensus mask in the cube centred on ``center_mm``: bool (z, y, x).

    Args:
        nodule: the nodule (its consensus mask on the database slice grid).
        scan: the database record whose slice positions index the mask.
        volume: the series the cube is cut from (its geometry and slice positions).
        center_mm, size, spacing_mm: the cube, as given to ``extract_cube``.
    """
    k0, r0, c0 = nodule.consensus_offset
    mask = nodule.consensus_mask
    z_db = scan.z_positions_mm[k0 : k0 + mask.shape[0]]
    z = volume.z_positions_mm
    order = np.argsort(z)
    # Slice index of this series for each mask slice (nearest slice position).
    ks = np.rint(np.interp(z_db, z[order], order.astype(float))).astype(int)
    k_lo = int(ks.min())
    on_series = np.zeros((int(ks.max()) - k_lo + 1, *mask.shape[1:]), dtype=np.float32)
    for plane, k in zip(mask, ks):
        on_series[k - k_lo] = np.maximum(on_series[k - k_lo], plane)
    image = sitk.GetImageFromArray(on_series)
    geometry = volume.geometry
    image.SetOrigin(tuple(float(v) for v in geometry.index_to_mm(np.array([c0, r0, k_lo]))))
    image.SetSpacing(tuple(float(v) for v in geometry.spacing_mm))
    image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))

    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([size] * 3)
    resampler.SetOutputSpacing([spacing_mm] * 3)
    resampler.SetOutputOrigin([float(v) for v in cube_grid_origin(center_mm, size, spacing_mm)])
    resampler.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image)) >= 0.5


def pack_masks(masks: np.ndarray) -> np.ndarray:
    """(N, S, S, S) bool -> (N, S, S, S/8) uint8, bits packed along x."""
    return np.packbits(np.asarray(masks, dtype=bool), axis=-1)


def unpack_masks(packed: np.ndarray, size: int) -> np.ndarray:
    """Inverse of ``pack_masks`` for cubes of ``size`` voxels per side."""
    return np.unpackbits(np.asarray(packed), axis=-1, count=size).astype(bool)


def read_masks(dataset_dir: str | Path, cube_indices, size: int = 64) -> np.ndarray:
    """Consensus masks (bool, (len(cube_indices), S, S, S)) of these rows of the dataset.

    Raises:
        MasksMissingError: the dataset has no masks.npy (built by an older lungcad).
    """
    return unpack_masks(read_packed_masks(dataset_dir, cube_indices, size), size)


def read_packed_masks(dataset_dir: str | Path, cube_indices, size: int = 64) -> np.ndarray:
    """``read_masks`` still bit-packed: uint8 (len(cube_indices), S, S, S/8)."""
    path = Path(dataset_dir) / MASKS_FILE
    if not path.exists():
        raise MasksMissingError(
            f"{path} does not exist: the dataset was built before nodule masks were part of "
            "it; rebuild it (`dvc repro preprocess` or `lungcad data build`)"
        )
    packed = np.load(path, mmap_mode="r")
    if packed.shape[1:] != (size, size, size // 8):
        raise ValueError(f"{path}: shape {packed.shape} is not (N, {size}, {size}, {size // 8})")
    return np.ascontiguousarray(packed[np.asarray(cube_indices, dtype=int)])
