"""A finding's mask on the source CT's voxel grid, where a DICOM SEG holds it.

Detection outlines each nodule on a global axis-aligned grid in patient mm (1 mm voxels,
``lungcad.core.findings.merge``). A CT voxel belongs to the segment when its centre lies in
a mask voxel (nearest neighbour, so the SEG holds exactly the outline detect measured, on
the CT's own rows, columns and slices). A finding without a mask (a model without the
segmentation head) is a sphere of its diameter at its centre.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungcad.core.io.geometry import VolumeGeometry

#: A finding that has neither a mask nor a diameter is marked by a sphere this wide (mm).
MARKER_DIAMETER_MM = 5.0


@dataclass(frozen=True)
class Segment:
    """One finding's voxels on the CT grid.

    Attributes:
        mask: bool (slice, row, column), the CT volume's shape.
        source: how it was made: "predicted mask", "sphere" (of the finding's diameter) or
            "marker" (an unsized finding: a ``MARKER_DIAMETER_MM`` sphere at its centre).
        diameter_mm: the sphere's diameter (NaN for a predicted mask).
    """

    mask: np.ndarray
    source: str
    diameter_mm: float = float("nan")


def _index_box(
    geometry: VolumeGeometry, lo_mm: np.ndarray, hi_mm: np.ndarray
) -> tuple[slice, slice, slice] | None:
    """The (slice, row, column) index box of the CT voxels whose centres can lie in the
    axis-aligned box [lo_mm, hi_mm]; None when it misses the volume."""
    least, greatest = geometry.index_range(lo_mm, hi_mm)  # (column, row, slice)
    lo = np.floor(least).astype(int)
    hi = np.ceil(greatest).astype(int) + 1
    shape_crs = np.array(geometry.shape[::-1])
    lo, hi = np.clip(lo, 0, shape_crs), np.clip(hi, 0, shape_crs)
    if np.any(hi <= lo):
        return None
    return slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0])


def _centres_mm(geometry: VolumeGeometry, box: tuple[slice, slice, slice]) -> np.ndarray:
    """(slices, rows, columns, 3) patient mm of the voxel centres in ``box``."""
    s, r, c = (np.arange(b.start, b.stop) for b in box)
    ss, rr, cc = np.meshgrid(s, r, c, indexing="ij")
    return geometry.index_to_mm(np.stack([cc, rr, ss], axis=-1))


def mask_on_ct(
    geometry: VolumeGeometry, mask_zyx: np.ndarray, origin_mm: np.ndarray, spacing_mm: float
) -> np.ndarray:
    """The CT voxels whose centres fall in a voxel of an axis-aligned mask.

    Args:
        geometry: the CT's grid.
        mask_zyx: bool (z, y, x) mask; its voxel (0, 0, 0) is centred at ``origin_mm``
            (x, y, z) and its voxels are ``spacing_mm`` cubes.

    Returns:
        bool (slice, row, column) of the CT's shape.
    """
    out = np.zeros(geometry.shape, bool)
    mask_zyx = np.asarray(mask_zyx, bool)
    if not mask_zyx.any():
        return out
    origin_mm = np.asarray(origin_mm, float)
    lo_mm = origin_mm - spacing_mm / 2
    hi_mm = origin_mm + (np.array(mask_zyx.shape[::-1]) - 0.5) * spacing_mm
    box = _index_box(geometry, lo_mm, hi_mm)
    if box is None:
        return out
    cell = np.floor((_centres_mm(geometry, box) - lo_mm) / spacing_mm).astype(int)  # x, y, z
    inside = np.all((cell >= 0) & (cell < np.array(mask_zyx.shape[::-1])), axis=-1)
    hit = np.zeros(inside.shape, bool)
    c = cell[inside]
    hit[inside] = mask_zyx[c[:, 2], c[:, 1], c[:, 0]]
    out[box] = hit
    return out


def sphere_on_ct(geometry: VolumeGeometry, centre_mm: np.ndarray, diameter_mm: float) -> np.ndarray:
    """The CT voxels whose centres lie within ``diameter_mm / 2`` of ``centre_mm``; at least
    the voxel nearest the centre when the sphere falls between voxel centres."""
    centre_mm = np.asarray(centre_mm, float)
    radius = diameter_mm / 2
    out = np.zeros(geometry.shape, bool)
    box = _index_box(geometry, centre_mm - radius, centre_mm + radius)
    if box is not None:
        distance = np.linalg.norm(_centres_mm(geometry, box) - centre_mm, axis=-1)
        out[box] = distance <= radius
    if not out.any():
        idx = np.rint(geometry.mm_to_index(centre_mm)).astype(int)[::-1]
        if np.all((idx >= 0) & (idx < np.array(geometry.shape))):
            out[tuple(idx)] = True
    return out


def finding_segment(
    geometry: VolumeGeometry,
    centre_mm: np.ndarray,
    diameter_mm: float,
    mask: tuple[np.ndarray, np.ndarray, float] | None,
) -> Segment:
    """A finding's segment: its predicted mask on the CT grid when it has one, else a
    sphere of its diameter (a marker sphere when it is unsized)."""
    if mask is not None:
        on_ct = mask_on_ct(geometry, *mask)
        if on_ct.any():
            return Segment(on_ct, "predicted mask")
    if np.isfinite(diameter_mm) and diameter_mm > 0:
        return Segment(sphere_on_ct(geometry, centre_mm, diameter_mm), "sphere", diameter_mm)
    return Segment(
        sphere_on_ct(geometry, centre_mm, MARKER_DIAMETER_MM), "marker", MARKER_DIAMETER_MM
    )
