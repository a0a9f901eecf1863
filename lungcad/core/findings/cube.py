"""The finding of one cube on its own (a served request, a cube of the dataset): its
predicted mask's nodule part measured, typed and categorised, as the finding record's
``MEASURE`` fields."""

from __future__ import annotations

import numpy as np

from lungcad.core.cubes import cube_grid_origin
from lungcad.core.findings.measure import measure_mask
from lungcad.core.findings.merge import nodule_part
from lungcad.core.findings.record import MEASURE, finding_columns, measured

#: What ``cube_finding`` returns, in order: the finding record's ``MEASURE`` fields.
CUBE_FINDING_COLUMNS = tuple(finding_columns(MEASURE))


def cube_finding(
    mask_zyx: np.ndarray, hu_zyx: np.ndarray, spacing_mm: float, texture: float | None = None
) -> dict:
    """Sizes (NaN where the mask outlines nothing near the centre), type (from ``texture``,
    the texture head's LIDC rating, and the mask's HU) and Lung-RADS category ("0" without
    a size) of the nodule a cube's predicted mask outlines at its centre."""
    part = nodule_part(mask_zyx, spacing_mm)
    origin = cube_grid_origin(np.zeros(3), part.shape[0], spacing_mm)
    return measured(measure_mask(part, origin, spacing_mm, hu_zyx), texture)
