"""Physical geometry of a CT volume: voxel index <-> patient coordinates in millimetres.

Arrays are stored (slice, row, column); physical vectors are (x, y, z) in the DICOM patient
frame (LPS). Index vectors passed to and from the geometry are (column, row, slice), the
order ITK and DICOM use, so that ``origin + direction @ (spacing * index)`` is the position.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk


@dataclass(frozen=True)
class VolumeGeometry:
    """Origin, spacing and direction cosines of a regular voxel grid.

    Attributes:
        origin_mm: position (x, y, z) of voxel (0, 0, 0)'s centre.
        spacing_mm: voxel size along (column, row, slice).
        direction: 3x3 matrix whose columns are the unit vectors of the column, row and
            slice axes in patient space (orthonormal, but for a stack as a tilted gantry
            acquired it, whose slice axis leans off the slice normal).
        shape: array shape (n_slices, n_rows, n_cols).
    """

    origin_mm: np.ndarray
    spacing_mm: np.ndarray
    direction: np.ndarray
    shape: tuple[int, int, int]

    def index_to_mm(self, index_crs: np.ndarray) -> np.ndarray:
        """(…, 3) continuous (column, row, slice) indices -> (…, 3) patient mm."""
        idx = np.asarray(index_crs, dtype=np.float64)
        return self.origin_mm + (idx * self.spacing_mm) @ self.direction.T

    def mm_to_index(self, point_mm: np.ndarray) -> np.ndarray:
        """(…, 3) patient mm -> (…, 3) continuous (column, row, slice) indices."""
        p = np.asarray(point_mm, dtype=np.float64) - self.origin_mm
        if np.abs(self.direction.T @ self.direction - np.eye(3)).max() > 1e-4:
            return (p @ np.linalg.inv(self.direction).T) / self.spacing_mm  # a leaning axis
        return (p @ self.direction) / self.spacing_mm

    def index_range(self, lo_mm: np.ndarray, hi_mm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The least and the greatest continuous (column, row, slice) index of the corners
        of the axis-aligned patient-mm box from ``lo_mm`` to ``hi_mm``: the index box that
        holds it, whatever the grid's direction."""
        corners = np.array(
            [
                [x, y, z]
                for x in (lo_mm[0], hi_mm[0])
                for y in (lo_mm[1], hi_mm[1])
                for z in (lo_mm[2], hi_mm[2])
            ]
        )
        index = self.mm_to_index(corners)
        return index.min(axis=0), index.max(axis=0)

    @property
    def extent_mm(self) -> np.ndarray:
        """Physical size of the grid along (column, row, slice)."""
        return self.spacing_mm * np.array(self.shape[::-1])

    def to_sitk(self, array_zyx: np.ndarray) -> sitk.Image:
        """Wrap an array of this geometry as a SimpleITK image (no copy of metadata lost)."""
        if tuple(array_zyx.shape) != tuple(self.shape):
            raise ValueError(f"array shape {array_zyx.shape} does not match geometry {self.shape}")
        image = sitk.GetImageFromArray(array_zyx)
        image.SetOrigin(tuple(float(v) for v in self.origin_mm))
        image.SetSpacing(tuple(float(v) for v in self.spacing_mm))
        image.SetDirection(tuple(float(v) for v in self.direction.ravel()))
        return image
