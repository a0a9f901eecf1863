"""Lung-RADS v2022 baseline category of a nodule from its type and mean diameters.

A screening rule applied by research software to the sizes and type lungcad measured: it
is not a radiologist's assessment (no prior scans, no benign features such as calcification
or fat, no category 4X). Sizes are mean diameters rounded to 0.1 mm, as Lung-RADS measures.

===============  ==========================  =================================================
category         solid                       part-solid                    ground glass
===============  ==========================  =================================================
0                no size (the finding's outline could not be measured): incomplete
2                < 6 mm                      < 6 mm in all                 < 30 mm
3                6 to < 8 mm                 >= 6 mm, solid part < 6 mm    >= 30 mm
4A               8 to < 15 mm                solid part 6 to < 8 mm        -
4B               >= 15 mm                    solid part >= 8 mm            -
===============  ==========================  =================================================

A scan's category is its most suspicious finding's. A finding that cannot be sized makes
the scan "0" (incomplete) unless a sized finding is already 4A or 4B. A scan without a
finding gets no category: the software found nothing at its threshold, which is not
Lung-RADS 1 (a negative screen is a reader's call).
"""

from __future__ import annotations

import math

#: What the category is, wherever it is shown.
LUNG_RADS_LABEL = "Lung-RADS v2022 baseline category (screening rule applied by research software)"
#: Category of a finding that cannot be sized (Lung-RADS 0: incomplete).
UNSIZED = "0"
#: Categories of sized findings, least to most suspicious.
ORDER = ("2", "3", "4A", "4B")


def lung_rads(
    nodule_type: str, mean_diameter_mm: float, solid_mean_diameter_mm: float = 0.0
) -> str:
    """The Lung-RADS v2022 baseline category ("2", "3", "4A", "4B") of one nodule; "0"
    (incomplete) without a size.

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
        return UNSIZED
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


def no_finding(threshold: float) -> str:
    """What a scan without a finding at ``threshold`` says in place of a category."""
    return f"no finding at probability >= {threshold:.2f}"


def scan_category(categories, threshold: float) -> str:
    """The scan's category from its reported findings' (those at or above ``threshold``):
    the most suspicious sized one's; "0" when one cannot be sized and none is 4A or 4B;
    ``no_finding(threshold)`` without findings.

    Example:
        >>> scan_category(["2", "0"], 0.9), scan_category(["4B", "0"], 0.9)
        ('0', '4B')
        >>> scan_category([], 0.9)
        'no finding at probability >= 0.90'
    """
    categories = [str(c) for c in categories]
    known = [c for c in categories if c in ORDER]
    worst = max(known, key=ORDER.index) if known else None
    if worst in ("4A", "4B"):
        return worst
    if len(known) < len(categories):
        return UNSIZED
    return worst if worst is not None else no_finding(threshold)
