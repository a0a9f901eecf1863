"""The finding record defines the columns of every findings table and of the served answer."""

from __future__ import annotations

import math
from dataclasses import fields

import numpy as np

from lungcad.core.findings.cube import CUBE_FINDING_COLUMNS, cube_finding
from lungcad.core.findings.measure import measure_mask
from lungcad.core.findings.record import (
    FINDING_COLUMNS,
    LUNA16,
    MEASURE,
    Finding,
    finding_columns,
    measured,
)
from lungcad.detection.batch import DETECTION_COLUMNS


def test_every_field_says_what_it_holds_and_detections_csv_follows_the_record() -> None:
    assert all(f.metadata["doc"] for f in fields(Finding))
    assert finding_columns(LUNA16) == ["coordX", "coordY", "coordZ", "probability"]
    # LUNA16's submission columns first; every other field of the record after the patient,
    # in the record's order (the candidate stage's score stays in candidates.csv).
    assert DETECTION_COLUMNS[:6] == ["seriesuid", *finding_columns(LUNA16), "patient_id"]
    rest = [c for c in FINDING_COLUMNS if c not in finding_columns(LUNA16)]
    assert DETECTION_COLUMNS[6:] == [c for c in rest if c != "candidate_score"]


def _ball(radius: float, hu: float, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    zz, yy, xx = np.indices((size, size, size)) - (size - 1) / 2
    mask = zz**2 + yy**2 + xx**2 <= radius**2
    return mask, np.where(mask, hu, -850.0).astype(np.float32)


def test_a_served_cube_and_a_detected_finding_are_measured_into_the_same_fields() -> None:
    assert list(CUBE_FINDING_COLUMNS) == finding_columns(MEASURE)
    mask, hu = _ball(6.0, 40.0)  # a 12 mm solid sphere at the cube's centre
    measures = measure_mask(mask, np.zeros(3), 1.0, hu)
    detected = measured(measures)
    assert list(detected) == finding_columns(MEASURE)
    assert detected["type"] == "solid" and detected["lung_rads"] == "4A"  # 8 to < 15 mm solid
    assert 11.0 <= detected["mean_diameter_mm"] <= 13.0
    assert math.isclose(detected["volume_mm3"], float(mask.sum()))
    served = cube_finding(mask, hu, 1.0)
    assert list(served) == list(detected)
    for name in ("diameter_mm", "mean_diameter_mm", "volume_mm3", "solid_diameter_mm"):
        assert math.isclose(served[name], detected[name], rel_tol=1e-9), name
    assert (served["type"], served["lung_rads"]) == (detected["type"], detected["lung_rads"])


def test_an_empty_outline_has_no_size_and_lung_rads_0_in_every_field() -> None:
    nothing = np.zeros((64, 64, 64), bool)
    hu = np.full(nothing.shape, -850.0, np.float32)
    for row in (
        measured(measure_mask(nothing, np.zeros(3), 1.0, hu)),
        cube_finding(nothing, hu, 1.0),
    ):
        assert list(row) == finding_columns(MEASURE)
        assert all(
            math.isnan(row[c])
            for c in ("diameter_mm", "mean_diameter_mm", "volume_mm3", "solid_diameter_mm")
        )
        assert row["lung_rads"] == "0"
