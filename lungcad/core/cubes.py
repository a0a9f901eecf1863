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
    the image; linear interpolation, or with ``nearest`` nearest neighbour, for labels, in
    the image's own pixel type (nothing to round: a quarter of a float grid's memory for a
    uint8 mask)."""
    resampler = sitk.ResampleImageFilter()
    resampler.SetSize([int(n) for n in shape_zyx[::-1]])
    resampler.SetOutputSpacing([spacing_mm] * 3)
    resampler.SetOutputOrigin([float(v) for v in origin_mm])
    resampler.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    resampler.SetInterpolator(sitk.sitkNearestNeighbor if nearest else sitk.sitkLinear)
    resampler.SetDefaultPixelValue(float(fill))
    if nearest:
        resampler.SetOutputPixelType(image.GetPixelID())
        return sitk.GetArrayFromImage(resampler.Execute(image))
    resampler.SetOutputPixelType(sitk.sitkFloat32)
    out = sitk.GetArrayFromImage(resampler.Execute(image))
    # in place: a whole scan's grid is ~10^8 bytes a copy, each one faulted in afresh
    np.rint(out, out=out)
    np.clip(out, -32768, 32767, out=out)
    return out.astype(np.int16)


def mirror_slices(slices: int, need: int) -> tuple[np.ndarray, int]:
    """Which slice of a scan each slice of ``mirror_pad_z``'s volume is, for a scan of
    ``slices`` slices mirrored by at least ``need`` beyond each end: (indices, slices added
    at each end)."""
    index = np.arange(slices)
    if slices == 1:  # a single slice has nothing to mirror: it is repeated
        return np.zeros(2 * need + 1, dtype=int), need
    grown = 0
    while grown < need:  # one reflect pass adds at most (slices - 1) at each end
        add = min(need - grown, len(index) - 1)
        index = np.pad(index, add, mode="reflect")
        grown += add
    return index, grown


def mirror_pad_z(volume: CtVolume, size_mm: float = 64.0) -> tuple[np.ndarray, VolumeGeometry]:
    """The volume extended in z by mirroring, so a cube of ``size_mm`` fits at any slice.

    Anatomy continues smoothly across the mirror plane, whereas air padding would be a cue
    no training cube shows (a thin slab or a candidate near a scan's first slice)."""
    hu, geometry = volume.hu, volume.geometry
    index, grown = mirror_slices(hu.shape[0], mirror_need(geometry, size_mm))
    return hu[index], mirrored_geometry(geometry, grown, len(index))


def mirror_need(geometry: VolumeGeometry, size_mm: float) -> int:
    """Slices ``mirror_pad_z`` mirrors beyond each end of a scan at least, for a cube of
    ``size_mm``."""
    return int(np.ceil(size_mm / 2 / geometry.spacing_mm[2])) + 1


def mirrored_geometry(geometry: VolumeGeometry, grown: int, slices: int) -> VolumeGeometry:
    """The geometry of a scan mirrored by ``grown`` slices before its first, ``slices`` in
    all."""
    return VolumeGeometry(
        geometry.index_to_mm(np.array([0.0, 0.0, -grown])),
        geometry.spacing_mm,
        geometry.direction,
        (slices, *geometry.shape[1:]),
    )
