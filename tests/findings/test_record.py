"""The finding record defines the columns of every findings table."""

from __future__ import annotations

from dataclasses import fields

from lungcad.core.findings.record import FINDING_COLUMNS, LUNA16, Finding, finding_columns
from lungcad.detection.batch import DETECTION_COLUMNS


def test_every_field_says_what_it_holds_and_detections_csv_follows_the_record() -> None:
    assert all(f.metadata["doc"] for f in fields(Finding))
    assert finding_columns(LUNA16) == ["coordX", "coordY", "coordZ", "probability"]
    # LUNA16's submission columns first; every other field of the record after the patient,
    # in the record's order (the candidate stage's score stays in candidates.csv).
    assert DETECTION_COLUMNS[:6] == ["seriesuid", *finding_columns(LUNA16), "patient_id"]
    rest = [c for c in FINDING_COLUMNS if c not in finding_columns(LUNA16)]
    assert DETECTION_COLUMNS[6:] == [c for c in rest if c != "candidate_score"]
