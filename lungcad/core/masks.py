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

from lungcad.core.annotations.lidc_db import ReaderAnnotation, ScanRecord
from lungcad.core.annotations.nodules import (
    CONSENSUS_LEVEL,
    Nodule,
    annotation_mask,
    reader_count,
)
from lungcad.core.cubes import cube_grid_origin
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import CtVolume
from lungcad.core.metrics import dice
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
    return grid_mask_in_cube(
        nodule.consensus_offset,
        nodule.consensus_mask,
        scan,
        volume.z_positions_mm,
        volume.geometry,
        center_mm,
        size,
        spacing_mm,
    )


def grid_mask_in_cube(
    offset: tuple[int, int, int],
    mask: np.ndarray,
    scan: ScanRecord,
    z_positions_mm: np.ndarray,
    geometry: VolumeGeometry,
    center_mm: np.ndarray | None,
    size: int,
    spacing_mm: float,
    origin_mm: np.ndarray | None = None,
) -> np.ndarray:
    """A mask on the database slice grid (``mask[k, r, c]`` at ``offset``) in the cube centred
    on ``center_mm`` (or whose voxel (0, 0, 0) lies at ``origin_mm``) of the series with these
    slice positions and geometry: bool (z, y, x)."""
    k0, r0, c0 = offset
    z_db = scan.z_positions_mm[k0 : k0 + mask.shape[0]]
    z = z_positions_mm
    order = np.argsort(z)
    # Slice index of this series for each mask slice (nearest slice position).
    ks = np.rint(np.interp(z_db, z[order], order.astype(float))).astype(int)
    k_lo = int(ks.min())
    on_series = np.zeros((int(ks.max()) - k_lo + 1, *mask.shape[1:]), dtype=np.float32)
    for plane, k in zip(mask, ks):
        on_series[k - k_lo] = np.maximum(on_series[k - k_lo], plane)
    image = sitk.GetImageFromArray(on_series)
    image.SetOrigin(tuple(float(v) for v in geometry.index_to_mm(np.array([c0, r0, k_lo]))))
    image.SetSpacing(tuple(float(v) for v in geometry.spacing_mm))
    image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))

    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([size] * 3)
    resampler.SetOutputSpacing([spacing_mm] * 3)
    if origin_mm is None:
        origin_mm = cube_grid_origin(center_mm, size, spacing_mm)
    resampler.SetOutputOrigin([float(v) for v in origin_mm])
    resampler.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    resampler.SetInterpolator(sitk.sitkLinear)
    resampler.SetDefaultPixelValue(0.0)
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    return sitk.GetArrayFromImage(resampler.Execute(image)) >= 0.5


def database_grid(scan: ScanRecord) -> tuple[np.ndarray, VolumeGeometry]:
    """Slice positions and geometry of a series on the database's own slice grid (axial,
    512², origin at pixel (0, 0) of the first recorded slice): where reader masks can be
    resampled into a cube without the images."""
    z = np.asarray(scan.z_positions_mm, dtype=float)
    step = float(np.median(np.diff(z))) if z.size > 1 else scan.slice_thickness_mm
    direction = np.diag([1.0, 1.0, 1.0 if step >= 0 else -1.0])
    geometry = VolumeGeometry(
        origin_mm=np.array([0.0, 0.0, z[0]]),
        spacing_mm=np.array([scan.pixel_spacing_mm, scan.pixel_spacing_mm, abs(step) or 1.0]),
        direction=direction,
        shape=(int(z.size), 512, 512),
    )
    return z, geometry


def readers_cube_dice(
    scan: ScanRecord,
    annotations: list[ReaderAnnotation],
    nodule: Nodule,
    size: int,
    spacing_mm: float,
) -> float:
    """The segmentation ceiling of one nodule: each reader's outline against the consensus of
    the *other* readers (voxels in at least half of them), both resampled into the same 1 mm
    cube centred on the nodule that the network's masks are scored on, with the same Dice;
    the mean over readers (NaN with fewer than two readers)."""
    own = set(nodule.annotation_ids)
    masks = [annotation_mask(a, scan) for a in annotations if a.annotation_id in own and a.contours]
    if len(masks) < 2:
        return float("nan")
    z, geometry = database_grid(scan)
    col, row, z_mm = nodule.centroid_crz
    order = np.argsort(z)
    k = float(np.interp(z_mm, z[order], order.astype(float)))
    center = geometry.index_to_mm(np.array([col, row, k]))

    def in_cube(offset, mask) -> np.ndarray:
        return grid_mask_in_cube(offset, mask, scan, z, geometry, center, size, spacing_mm)

    scores = []
    for i, reader in enumerate(masks):
        others = masks[:i] + masks[i + 1 :]
        offset, count = reader_count(others)
        consensus = count >= np.ceil(CONSENSUS_LEVEL * len(others))
        scores.append(dice(in_cube(reader.offset, reader.mask), in_cube(offset, consensus)))
    return float(np.mean(scores))


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
