"""The finding of one cube on its own (a served request, a cube of the dataset): its
predicted mask's nodule part measured, typed and categorised."""

from __future__ import annotations

import numpy as np

from lungcad.core.cubes import cube_grid_origin
from lungcad.core.findings.lungrads import lung_rads
from lungcad.core.findings.measure import measure_mask, nodule_type
from lungcad.core.findings.merge import nodule_part

#: What ``cube_finding`` returns, in order: names of the served answer's columns (``mask_``:
#: measured from the predicted outline, beside the attribute head's ``diameter_mm``).
CUBE_FINDING_COLUMNS = (
    "mask_diameter_mm",
    "mask_mean_diameter_mm",
    "mask_volume_mm3",
    "type",
    "lung_rads",
)


def cube_finding(
    mask_zyx: np.ndarray, hu_zyx: np.ndarray, spacing_mm: float, texture: float | None = None
) -> dict:
    """Sizes (NaN where the mask outlines nothing near the centre), type (from ``texture``,
    the texture head's LIDC rating, and the mask's HU) and Lung-RADS category ("0" without
    a size) of the nodule a cube's predicted mask outlines at its centre."""
    part = nodule_part(mask_zyx, spacing_mm)
    origin = cube_grid_origin(np.zeros(3), part.shape[0], spacing_mm)
    m = measure_mask(part, origin, spacing_mm, hu_zyx)
    kind = nodule_type(texture, m)
    return {
        "mask_diameter_mm": m.diameter_mm,
        "mask_mean_diameter_mm": m.mean_diameter_mm,
        "mask_volume_mm3": m.volume_mm3 if not m.empty else float("nan"),
        "type": kind,
        "lung_rads": lung_rads(kind, m.mean_diameter_mm, m.solid_mean_diameter_mm),
    }
