"""The radiologists' semantic attributes the network can predict beside malignancy.

The eight LIDC characteristics other than malignancy (each reader's rating, averaged over the
nodule's readers, on its own LIDC scale) and the nodule's diameter. The network predicts each
on a normalised scale, ``(value - centre) / half_range`` of its LIDC range, so that one loss
weight suits all; ``to_lidc_scale`` maps predictions back and clips them to the range.
Attributes are learned on nodule cubes only (negatives have none).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from lungcad.errors import LungcadError


class StaleDatasetError(LungcadError, KeyError):
    """The cube dataset was built by an older lungcad and lacks a column: rebuild it."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class Attribute:
    """One predicted attribute: its name, index.csv column and LIDC range."""

    name: str
    column: str
    low: float
    high: float

    @property
    def centre(self) -> float:
        return (self.low + self.high) / 2

    @property
    def half_range(self) -> float:
        return (self.high - self.low) / 2


#: LIDC-IDRI rating scales (the LIDC XML schema); diameter in mm (the consensus's mean
#: largest in-plane diameter: 3 to about 60 mm in LIDC).
ATTRIBUTES = (
    Attribute("subtlety", "mean_subtlety", 1, 5),
    Attribute("internal_structure", "mean_internalStructure", 1, 4),
    Attribute("calcification", "mean_calcification", 1, 6),
    Attribute("sphericity", "mean_sphericity", 1, 5),
    Attribute("margin", "mean_margin", 1, 5),
    Attribute("lobulation", "mean_lobulation", 1, 5),
    Attribute("spiculation", "mean_spiculation", 1, 5),
    Attribute("texture", "mean_texture", 1, 5),
    Attribute("diameter_mm", "diameter_mm", 3, 60),
)
ATTRIBUTE_NAMES = tuple(a.name for a in ATTRIBUTES)
_CENTRE = np.array([a.centre for a in ATTRIBUTES], np.float32)
_HALF = np.array([a.half_range for a in ATTRIBUTES], np.float32)
_LOW = np.array([a.low for a in ATTRIBUTES], np.float32)
_HIGH = np.array([a.high for a in ATTRIBUTES], np.float32)


def attribute_targets(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(targets, mask), both (N, 9): normalised attribute values of ``rows`` and where they
    exist (nodule cubes with the column present and finite). Missing entries are 0.

    Raises:
        StaleDatasetError: naming an attribute column the index does not have.
    """
    missing = [a.column for a in ATTRIBUTES if a.column not in rows.columns]
    if missing:
        raise StaleDatasetError(
            f"index.csv lacks the attribute column(s) {missing}: rebuild the dataset with "
            "`lungcad data build` (or `dvc repro preprocess`)"
        )
    values = rows[[a.column for a in ATTRIBUTES]].to_numpy(np.float32)
    mask = np.isfinite(values) & (rows["label"].to_numpy() == 1)[:, None]
    return np.where(mask, (values - _CENTRE) / _HALF, 0.0).astype(np.float32), mask


def to_lidc_scale(normalised: np.ndarray) -> np.ndarray:
    """Network outputs (N, 9) back on each attribute's LIDC scale, clipped to its range
    ((N, 0), a network without the attribute head, stays as it is)."""
    values = np.asarray(normalised, np.float32)
    k = values.shape[1]
    return np.clip(values * _HALF[:k] + _CENTRE[:k], _LOW[:k], _HIGH[:k])
