"""Size and type of a nodule from its mask on an axis-aligned patient-mm grid.

Three sizes, as radiologists and the LIDC readers measure them:

- ``diameter_mm``: the longest in-plane diameter over the axial slices (the LIDC readers'
  ``diameter``, the RECIST long axis);
- ``mean_diameter_mm``: Lung-RADS' mean diameter, the mean of the long axis and of the
  short axis perpendicular to it on the axial slice of largest extent, to 0.1 mm;
- ``volume_mm3``: voxels times voxel volume.

In-plane diameters are Feret diameters of the pixel centres plus half a pixel: a shape
sampled at pixel centres spans between its centres' extent and that plus one pixel, so a
digitised disc of radius r measures 2r + 0.5 pixel. The solid component is the part
of the mask at or above ``SOLID_HU``; its own mean diameter decides a part-solid nodule's
Lung-RADS category.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

#: Solid (soft-tissue) attenuation within a nodule: the solid component of a part-solid
#: nodule is the part of its mask at or above this.
SOLID_HU = -300.0
#: LIDC texture rating (1 non-solid .. 5 solid) at or above which the texture head's
#: prediction calls a nodule solid, and below which ground glass.
SOLID_TEXTURE, GROUND_GLASS_TEXTURE = 4.0, 2.0
#: Share of the mask at solid attenuation that makes a nodule solid, and under which it is
#: ground glass, when there is no texture prediction.
SOLID_SHARE, GROUND_GLASS_SHARE = 0.5, 0.05


@dataclass(frozen=True)
class MaskMeasures:
    """What a nodule mask measures (sizes in mm, NaN for an empty mask).

    Attributes:
        voxels: voxels in the mask.
        centroid_mm: (x, y, z) patient mm of the mask's centroid.
        diameter_mm: longest axial diameter.
        mean_diameter_mm: Lung-RADS mean diameter (0.1 mm).
        long_axis_mm, short_axis_mm: the two axes of the mean diameter.
        volume_mm3: the mask's volume.
        solid_share: share of the mask at or above ``SOLID_HU`` (NaN without HU).
        solid_mean_diameter_mm: mean diameter of the largest solid part (0 without one).
    """

    voxels: int
    centroid_mm: tuple[float, float, float]
    diameter_mm: float
    mean_diameter_mm: float
    long_axis_mm: float
    short_axis_mm: float
    volume_mm3: float
    solid_share: float
    solid_mean_diameter_mm: float

    @property
    def empty(self) -> bool:
        return self.voxels == 0


def _hull(points: np.ndarray) -> np.ndarray:
    if len(points) < 3:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # collinear points (a line of pixels): all of them
        return points


def axial_axes_mm(slice_mask: np.ndarray, spacing_yx: tuple[float, float]) -> tuple[float, float]:
    """(long axis, short axis) of one axial slice's mask, mm: the Feret diameter and the
    extent perpendicular to it, each plus half a pixel (module docstring)."""
    sy, sx = spacing_yx
    pad = (sy + sx) / 4
    rows, cols = np.nonzero(slice_mask)
    if len(rows) == 0:
        return 0.0, 0.0
    hull = _hull(np.stack([rows * sy, cols * sx], axis=1).astype(float))
    d = hull[:, None, :] - hull[None, :, :]
    dist = np.sqrt((d**2).sum(-1))
    i, j = np.unravel_index(np.argmax(dist), dist.shape)
    long_axis = float(dist[i, j])
    if long_axis == 0:  # one pixel
        return 2 * pad, 2 * pad
    direction = (hull[j] - hull[i]) / long_axis
    across = hull @ np.array([-direction[1], direction[0]])
    return long_axis + pad, float(across.max() - across.min()) + pad


def _mean_diameter(mask_zyx: np.ndarray, spacing_zyx: np.ndarray) -> tuple[float, float, float]:
    """(long axis on any slice, and the long and short axes on the slice of largest long
    axis, the first in z of equals).

    A slice's long axis is at most its mask's bounding-box diagonal plus the half pixel, so
    slices are measured widest box first and the search stops at the first whose box cannot
    reach the longest axis so far: the exhaustive search's answer from a fraction of the
    hulls (a whole scan's findings are hundreds of masks)."""
    sy, sx = float(spacing_zyx[1]), float(spacing_zyx[2])
    slices = np.flatnonzero(mask_zyx.any(axis=(1, 2)))
    if len(slices) == 0:
        return 0.0, 0.0, 0.0
    occupied = mask_zyx[slices]
    rows, cols = occupied.any(axis=2), occupied.any(axis=1)
    spans = [
        (a.shape[1] - 1 - a[:, ::-1].argmax(axis=1) - a.argmax(axis=1)) * step
        for a, step in ((rows, sy), (cols, sx))
    ]
    # widened by far more than the float rounding of the hull's distances: never below them
    bound = (np.hypot(*spans) + (sy + sx) / 4) * (1 + 1e-9) + 1e-9
    best, best_z = (0.0, 0.0), len(mask_zyx)
    for k in np.argsort(-bound, kind="stable"):
        if bound[k] < best[0]:
            break
        axes = axial_axes_mm(mask_zyx[slices[k]], (sy, sx))
        if axes[0] > best[0] or (axes[0] == best[0] and slices[k] < best_z):
            best, best_z = axes, slices[k]
    return best[0], best[0], best[1]


def measure_mask(
    mask_zyx: np.ndarray,
    origin_mm: np.ndarray,
    spacing_mm: float | tuple[float, float, float],
    hu_zyx: np.ndarray | None = None,
) -> MaskMeasures:
    """Measure a nodule mask on an axis-aligned grid (module docstring).

    Args:
        mask_zyx: bool (z, y, x) mask.
        origin_mm: (x, y, z) patient mm of voxel (0, 0, 0).
        spacing_mm: voxel size (isotropic, or (x, y, z)).
        hu_zyx: the HU under the mask's grid, for the solid component (optional).

    Example:
        >>> zz, yy, xx = np.indices((21, 21, 21)) - 10
        >>> ball = zz**2 + yy**2 + xx**2 <= 8**2
        >>> m = measure_mask(ball, np.zeros(3), 1.0)
        >>> round(m.diameter_mm), m.centroid_mm
        (16, (10.0, 10.0, 10.0))
    """
    mask = np.asarray(mask_zyx, dtype=bool)
    spacing_xyz = np.broadcast_to(np.asarray(spacing_mm, dtype=float), (3,))
    spacing_zyx = spacing_xyz[::-1]
    n = int(mask.sum())
    nan = float("nan")
    if n == 0:
        return MaskMeasures(0, (nan, nan, nan), nan, nan, nan, nan, 0.0, nan, nan)
    idx = np.argwhere(mask)  # (z, y, x)
    centroid = np.asarray(origin_mm, float) + idx.mean(axis=0)[::-1] * spacing_xyz
    longest, long_axis, short_axis = _mean_diameter(mask, spacing_zyx)
    solid_share, solid_mean = nan, nan
    if hu_zyx is not None:
        solid = mask & (np.asarray(hu_zyx) >= SOLID_HU)
        solid_share = float(solid.sum() / n)
        solid_mean = 0.0
        labels, count = ndimage.label(solid)
        if count:
            largest = labels == (np.bincount(labels.ravel())[1:].argmax() + 1)
            _, s_long, s_short = _mean_diameter(largest, spacing_zyx)
            solid_mean = round((s_long + s_short) / 2, 1)
    return MaskMeasures(
        voxels=n,
        centroid_mm=tuple(float(v) for v in centroid),
        diameter_mm=longest,
        mean_diameter_mm=round((long_axis + short_axis) / 2, 1),
        long_axis_mm=long_axis,
        short_axis_mm=short_axis,
        volume_mm3=float(n * spacing_xyz.prod()),
        solid_share=solid_share,
        solid_mean_diameter_mm=solid_mean,
    )


def texture_type(texture: float) -> str:
    """The type the LIDC readers' mean texture rating (1 non-solid .. 5 solid) says."""
    if texture >= SOLID_TEXTURE:
        return "solid"
    return "ground glass" if texture < GROUND_GLASS_TEXTURE else "part-solid"


def nodule_type(texture: float | None, measures: MaskMeasures) -> str:
    """Solid, part-solid or ground glass: from the texture head's LIDC texture rating when
    there is one (a part-solid call without any solid voxel in the mask is ground glass),
    else from the share of the mask at solid attenuation."""
    share = measures.solid_share
    if texture is not None and np.isfinite(texture):
        kind = texture_type(texture)
        if kind == "part-solid" and np.isfinite(share) and measures.voxels and share == 0:
            return "ground glass"
        return kind
    if not np.isfinite(share):
        return "solid"  # nothing to tell: Lung-RADS' most common (and strictest) type
    if share >= SOLID_SHARE:
        return "solid"
    return "part-solid" if share >= GROUND_GLASS_SHARE else "ground glass"
