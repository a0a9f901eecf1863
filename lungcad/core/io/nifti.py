"""NIfTI maps of a cube, placed in patient mm (3D Slicer opens them over the CT)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungcad.core.cubes import cube_grid_origin


def write_map_nifti(
    cam: np.ndarray, center_mm: np.ndarray, spacing_mm: float, path: str | Path
) -> Path:
    """Write a (z, y, x) map of the cube centred on ``center_mm`` as NIfTI in patient mm."""
    image = sitk.GetImageFromArray(np.asarray(cam, dtype=np.float32))
    size = cam.shape[0]
    image.SetOrigin(tuple(float(v) for v in cube_grid_origin(center_mm, size, spacing_mm)))
    image.SetSpacing((spacing_mm,) * 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path


def write_mask_nifti(
    mask_zyx: np.ndarray, origin_mm: np.ndarray, spacing_mm: float, path: str | Path
) -> Path:
    """Write a (z, y, x) mask on an axis-aligned grid whose voxel (0, 0, 0) is at
    ``origin_mm`` (x, y, z) as a uint8 NIfTI label map in patient mm."""
    image = sitk.GetImageFromArray(np.asarray(mask_zyx, dtype=np.uint8))
    image.SetOrigin(tuple(float(v) for v in origin_mm))
    image.SetSpacing((float(spacing_mm),) * 3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path), useCompression=True)
    return path
