"""Cut isotropic cubes centred on a physical point, without resampling the whole volume.

Each cube is resampled directly from the original voxel grid with SimpleITK onto a grid of
``size`` voxels of ``spacing_mm`` whose centre is exactly the requested point (for an even
size the centre falls between the two middle voxels), axis-aligned with the patient frame.
Outside the volume the cube is filled with air.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import AIR_HU, CtVolume


def cube_grid_origin(center_mm: np.ndarray, size: int, spacing_mm: float) -> np.ndarray:
    """Position of voxel (0, 0, 0) of a cube whose geometric centre is ``center_mm``."""
    return np.asarray(center_mm, dtype=np.float64) - (size - 1) / 2.0 * spacing_mm


def extract_cube(
    image: sitk.Image,
    center_mm: np.ndarray,
    size: int = 64,
    spacing_mm: float = 1.0,
    fill_hu: int = AIR_HU,
) -> np.ndarray:
    """Resample a ``size``^3 cube of ``spacing_mm`` voxels centred on ``center_mm``.

    Args:
        image: the HU volume with its physical geometry (``VolumeGeometry.to_sitk``).
        center_mm: (x, y, z) cube centre in patient mm.
        size: voxels per side.
        spacing_mm: isotropic output voxel size.
        fill_hu: value outside the volume.

    Returns:
        int16 array (z, y, x) along the patient axes.
    """
    origin = cube_grid_origin(center_mm, size, spacing_mm)
    return resample_box(image, origin, (size,) * 3, spacing_mm, fill_hu)


def resample_box(
    image: sitk.Image,
    origin_mm: np.ndarray,
    shape_zyx: tuple[int, int, int],
    spacing_mm: float,
    fill: float = AIR_HU,
    nearest: bool = False,
) -> np.ndarray:
    """Resample an image onto an axis-aligned grid of ``spacing_mm`` voxels whose voxel
    (0, 0, 0) lies at ``origin_mm`` (x, y, z patient mm): int16 (z, y, x), ``fill`` outside
    the image; linear interpolation, or nearest neighbour (labels) with ``nearest``."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in shape_zyx[::-1]])
    resampler.SetOutputSpacing([spacing_mm] * 3)
    resampler.SetOutputOrigin([float(v) for v in origin_mm])
    resampler.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(fill))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    out = sitk.GetArrayFromImage(resampler.Execute(image))
    return np.clip(np.rint(out), -32768, 32767).astype(np.int16)


def mirror_pad_z(volume: CtVolume, size_mm: float = 64.0) -> tuple[np.ndarray, VolumeGeometry]:
    """The volume extended in z by mirroring, so a cube of ``size_mm`` fits at any slice.

    Anatomy continues smoothly across the mirror plane, whereas air padding would be a cue
    no training cube shows (a thin slab or a candidate near a scan's first slice)."""
    spacing = volume.geometry.spacing_mm
    need = int(np.ceil(size_mm / 2 / spacing[2])) + 1
    hu, grown = volume.hu, 0
    if hu.shape[0] == 1:  # a single slice has nothing to mirror: it is repeated
        hu, grown = np.pad(hu, ((need, need), (0, 0), (0, 0)), mode="edge"), need
    while grown < need:  # one reflect pass adds at most (slices - 1) at each end
        add = min(need - grown, hu.shape[0] - 1)
        hu = np.pad(hu, ((add, add), (0, 0), (0, 0)), mode="reflect")
        grown += add
    geometry = VolumeGeometry(
        volume.geometry.index_to_mm(np.array([0.0, 0.0, -grown])),
        spacing,
        volume.geometry.direction,
        hu.shape,
    )
    return hu, geometry
