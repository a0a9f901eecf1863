"""FROC / CPM under the LUNA16 rules, against cases computed by hand."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungcad.detection.froc import FP_RATES, bootstrap_cpm, froc, label_findings

COLS = ["seriesuid", "coordX", "coordY", "coordZ"]


def _table(rows, extra):
    return pd.DataFrame(rows, columns=[*COLS, extra])


@pytest.fixture
def case():
    # Scan s1: nodules A (10 mm at the origin) and B (6 mm at x = 50); scan s2: nodule C
    # (8 mm) and an excluded lesion E (6 mm, < 3 readers).
    annotations = _table(
        [("s1", 0, 0, 0, 10.0), ("s1", 50, 0, 0, 6.0), ("s2", 10, 10, 10, 8.0)], "diameter_mm"
    )
    excluded = _table([("s2", 30, 30, 30, 6.0)], "diameter_mm")
    findings = _table(
        [
            ("s1", 1, 1, 1, 0.9),  # hits A
            ("s1", 2, 0, 0, 0.5),  # hits A again: counts once, with A's best probability
            ("s1", 100, 0, 0, 0.8),  # false positive
            ("s1", 50, 2, 0, 0.3),  # hits B (2 mm < 3 mm radius)
            ("s1", 50, 3.5, 0, 0.99),  # 3.5 mm from B: outside its radius, a false positive
            ("s2", 30, 31, 30, 0.95),  # on the excluded lesion: ignored
            ("s2", 0, 100, 0, 0.6),  # false positive
            ("s2", 10, 10, 13, 0.4),  # hits C (3 mm < 4 mm)
        ],
        "probability",
    )
    return findings, annotations, excluded


def test_findings_are_labelled_by_the_luna16_rules(case) -> None:
    findings, annotations, excluded = case
    labels = label_findings(findings, annotations, excluded)["label"].tolist()
    assert labels == ["hit", "hit", "fp", "hit", "fp", "ignored", "fp", "hit"]


def test_froc_matches_the_hand_computed_curve(case) -> None:
    findings, annotations, excluded = case
    r = froc(findings, annotations, excluded, ["s1", "s2"])
    assert (r.n_nodules, r.n_scans, r.n_hits, r.n_false_positives, r.n_ignored) == (3, 2, 3, 3, 1)
    # Thresholds from the top: 0.99 FP (0.5 FP/scan, sens 0), 0.9 A (0.5, 1/3), 0.8 FP
    # (1.0, 1/3), 0.6 FP (1.5, 1/3), 0.4 C (1.5, 2/3), 0.3 B (1.5, 1).
    expected = {0.125: 0.0, 0.25: 0.0, 0.5: 1 / 3, 1.0: 1 / 3, 2.0: 1.0, 4.0: 1.0, 8.0: 1.0}
    for rate in FP_RATES:
        assert r.sensitivities[rate] == pytest.approx(expected[rate]), rate
    assert r.cpm == pytest.approx(np.mean(list(expected.values())))


def test_a_scan_without_findings_still_counts_in_the_false_positive_rate(case) -> None:
    findings, annotations, excluded = case
    extra = pd.concat([annotations, _table([("s3", 0, 0, 0, 5.0)], "diameter_mm")])
    r = froc(findings, extra, excluded, ["s1", "s2", "s3"])
    assert r.n_scans == 3 and r.n_nodules == 4 and r.n_hits == 3
    # Three false positives over three scans reach 1 FP/scan; s3's nodule is never found.
    assert r.fps_per_scan.max() == pytest.approx(1.0)
    assert r.sensitivities[8.0] == pytest.approx(3 / 4)


def test_findings_of_scans_outside_the_set_are_left_out(case) -> None:
    findings, annotations, excluded = case
    r = froc(findings, annotations, excluded, ["s2"])
    assert (r.n_nodules, r.n_hits, r.n_false_positives, r.n_ignored) == (1, 1, 1, 1)
    # 0.6 FP first (1 FP/scan, sens 0), then 0.4 hits C: sensitivity 1 at 1 FP/scan.
    assert r.sensitivities[0.5] == pytest.approx(0.0)
    assert r.sensitivities[1.0] == pytest.approx(1.0)


def test_bootstrap_interval_brackets_the_estimate(case) -> None:
    findings, annotations, excluded = case
    point = froc(findings, annotations, excluded, ["s1", "s2"]).cpm
    ci = bootstrap_cpm(findings, annotations, excluded, ["s1", "s2"], n=200, seed=0)
    assert ci["cpm_ci_low"] <= point <= ci["cpm_ci_high"]
    assert ci["cpm_ci_low"] < ci["cpm_ci_high"]  # two different scans: the CPM varies


def test_luna16_conventions_unknown_excluded_size_and_overlapping_nodules() -> None:
    # An excluded annotation of unknown size (-1) ignores findings within 5 mm, like
    # LUNA16's script; a finding inside two overlapping nodules hits both.
    annotations = _table([("s", 0, 0, 0, 10.0), ("s", 6, 0, 0, 10.0)], "diameter_mm")
    excluded = _table([("s", 50, 0, 0, -1.0)], "diameter_mm")
    findings = _table(
        [("s", 3, 0, 0, 0.9), ("s", 54, 0, 0, 0.8), ("s", 56, 0, 0, 0.7)], "probability"
    )
    r = froc(findings, annotations, excluded, ["s"])
    assert (r.n_hits, r.n_ignored, r.n_false_positives) == (2, 1, 1)
    assert r.sensitivities[0.125] == pytest.approx(1.0)


def test_the_curve_is_monotone_with_tied_probabilities() -> None:
    from lungcad.detection.froc import froc_curve

    tp = np.array([0.9, 0.5, 0.5, 0.2])
    fp = np.array([0.5, 0.5, 0.3, 0.1, 0.9])
    fps, sens = froc_curve(tp, fp, n_nodules=5, n_scans=2)
    # From all findings (5 FP over 2 scans, 4 of 5 nodules) down to none.
    assert (fps[0], sens[0]) == pytest.approx((2.5, 0.8))
    assert (fps[-1], sens[-1]) == pytest.approx((0.0, 0.0))
    assert np.all(np.diff(fps) <= 0) and np.all(np.diff(sens) <= 0)


def test_the_bootstrap_resamples_patients_not_scans(case) -> None:
    findings, annotations, excluded = case
    point = froc(findings, annotations, excluded, ["s1", "s2"]).cpm
    # Both scans are one patient's: every draw holds both, so the CPM cannot vary.
    ci = bootstrap_cpm(findings, annotations, excluded, ["s1", "s2"], 200, 0, ["p", "p"])
    assert ci["cpm_ci_low"] == pytest.approx(point) == pytest.approx(ci["cpm_ci_high"])


def _run(folder, scans, findings, annotations, excluded) -> None:
    folder.mkdir()
    pd.DataFrame(scans).to_csv(folder / "scans.csv", index=False)
    findings.to_csv(folder / "detections.csv", index=False)
    findings.iloc[:0].to_csv(folder / "candidates.csv", index=False)
    annotations.to_csv(folder / "annotations.csv", index=False)
    excluded.to_csv(folder / "annotations_excluded.csv", index=False)


def test_a_scan_that_failed_counts_its_nodules_as_missed(case, tmp_path) -> None:
    from lungcad.detection.froc_report import evaluate_detection

    findings, annotations, excluded = case
    ok = {"status": "ok", "reason": "", "seconds_total": 1.0}
    scans = [
        {"seriesuid": "s1", "patient_id": "p1", **ok},
        {"seriesuid": "s2", "patient_id": "p2", **ok},
        # could not be read: the database holds two reference nodules for it
        {"seriesuid": "s3", "patient_id": "p3", "status": "error", "reason": "bad"},
        {"seriesuid": "", "patient_id": "", "status": "skipped", "reason": "not an image"},
    ]
    scans[2]["reference_nodules"] = 2
    _run(tmp_path / "run", scans, findings, annotations, excluded)
    m = evaluate_detection(tmp_path / "run", tmp_path / "eval", bootstrap=50)
    assert (m["n_scans"], m["n_nodules"], m["max_sensitivity"]) == (3, 5, 3 / 5)
    assert m["scans_not_usable"] == 1 and m["nodules_in_scans_not_usable"] == 2
    assert m["per_nodule"]["sensitivity_at_threshold"] == pytest.approx(1 / 5)  # A only
    alone = froc(findings, annotations, excluded, ["s1", "s2"])
    assert m["cpm"] < alone.cpm  # the failure costs, it does not vanish
    # Given LUNA16's files, the failed scan's rows there are its missed nodules.
    luna = pd.concat([annotations, _table([("s3", 0, 0, 0, 5.0)], "diameter_mm")])
    luna.to_csv(tmp_path / "luna.csv", index=False)
    excluded.to_csv(tmp_path / "luna_excluded.csv", index=False)
    m = evaluate_detection(
        tmp_path / "run", tmp_path / "eval2", tmp_path / "luna.csv", tmp_path / "luna_excluded.csv"
    )
    assert (m["n_scans"], m["n_nodules"], m["nodules_in_scans_not_usable"]) == (3, 4, 1)
