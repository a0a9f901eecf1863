"""The lines `lungcad detect` prints: where the findings are, in words."""

from __future__ import annotations

import pandas as pd

from lungcad.detection.batch import top_findings


def test_an_unsized_finding_prints_no_type_and_lung_rads_0(tmp_path) -> None:
    uid = "1.2.3.4"
    pd.DataFrame(
        [
            {
                "seriesuid": uid,
                "coordX": 1.0,
                "coordY": 2.0,
                "coordZ": 3.0,
                "probability": 0.97,
                "malignancy": 2.9,
                "diameter_mm": float("nan"),
                "type": "n/a",
                "lung_rads": "0",
            },
            {
                "seriesuid": uid,
                "coordX": 4.0,
                "coordY": 5.0,
                "coordZ": 6.0,
                "probability": 0.95,
                "malignancy": 3.1,
                "diameter_mm": 7.5,
                "type": "solid",
                "lung_rads": "3",
            },
        ]
    ).to_csv(tmp_path / "detections.csv", index=False)
    pd.DataFrame(
        [{"seriesuid": uid, "patient_id": "LIDC-IDRI-0001", "status": "ok", "reason": ""}]
    ).to_csv(tmp_path / "scans.csv", index=False)
    lines = top_findings(tmp_path, 0.9)
    assert lines[0] == f"LIDC-IDRI-0001 {uid}: 2 finding(s) >= 0.90"
    # no type ("n/a" reads back as NaN), and category 0: it cannot be sized
    assert lines[1].endswith("malignancy 2.9  size n/a  Lung-RADS 0")
    assert lines[2].endswith("malignancy 3.1  7.5 mm solid  Lung-RADS 3")
