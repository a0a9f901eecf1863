"""Lung-RADS v2022 baseline category of a nodule from its type and mean diameters.

A screening rule applied by research software to the sizes and type lungcad measured: it
is not a radiologist's assessment (no prior scans, no benign features such as calcification
or fat, no category 4X). Sizes are mean diameters rounded to 0.1 mm, as Lung-RADS measures.

===============  ==========================  =================================================
category         solid                       part-solid                    ground glass
===============  ==========================  =================================================
2                < 6 mm                      < 6 mm in all                 < 30 mm
3                6 to < 8 mm                 >= 6 mm, solid part < 6 mm    >= 30 mm
4A               8 to < 15 mm                solid part 6 to < 8 mm        -
4B               >= 15 mm                    solid part >= 8 mm            -
===============  ==========================  =================================================
"""

from __future__ import annotations

import math

#: What the category is, wherever it is shown.
LUNG_RADS_LABEL = "Lung-RADS v2022 baseline category (screening rule applied by research software)"
#: Category of a scan without a finding.
NO_NODULE = "1"
#: Categories, least to most suspicious.
ORDER = ("1", "2", "3", "4A", "4B")


def lung_rads(
    nodule_type: str, mean_diameter_mm: float, solid_mean_diameter_mm: float = 0.0
) -> str:
    """The Lung-RADS v2022 baseline category ("2", "3", "4A", "4B") of one nodule; "n/a"
    without a size.

    Args:
        nodule_type: "solid", "part-solid" or "ground glass".
        mean_diameter_mm: the whole nodule's mean diameter.
        solid_mean_diameter_mm: the solid component's mean diameter (part-solid only).

    Example:
        >>> lung_rads("solid", 7.9), lung_rads("part-solid", 12.0, 6.0)
        ('3', '4A')
        >>> lung_rads("ground glass", 30.0)
        '3'
    """
    size = round(float(mean_diameter_mm), 1)
    if not math.isfinite(size):
        return "n/a"
    if nodule_type == "solid":
        return "2" if size < 6 else "3" if size < 8 else "4A" if size < 15 else "4B"
    if nodule_type == "part-solid":
        solid = (
            round(float(solid_mean_diameter_mm), 1)
            if math.isfinite(solid_mean_diameter_mm)
            else 0.0
        )
        if size < 6:
            return "2"
        return "3" if solid < 6 else "4A" if solid < 8 else "4B"
    if nodule_type == "ground glass":
        return "2" if size < 30 else "3"
    raise ValueError(f"unknown nodule type {nodule_type!r}: one of solid, part-solid, ground glass")


def scan_category(categories) -> str:
    """The scan's category: its most suspicious nodule's ("1" without one)."""
    known = [c for c in categories if c in ORDER]
    return max(known, key=ORDER.index) if known else NO_NODULE
