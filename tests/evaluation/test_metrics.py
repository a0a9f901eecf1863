"""Metric functions against sklearn/scipy on known arrays; bootstrap CIs by patient."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    precision_score,
    recall_score,
    roc_auc_score,
)

from lungcad.core.metrics import (
    bootstrap_ci,
    detection_metrics,
    malignancy_metrics,
    paired_difference,
    spread_calibration,
    validation_objective,
    youden_threshold,
)

Y = np.array([0, 0, 1, 1, 0, 1, 0, 1, 1, 0])
P = np.array([0.1, 0.4, 0.35, 0.8, 0.2, 0.9, 0.6, 0.7, 0.3, 0.05])


def test_detection_metrics_match_sklearn() -> None:
    m = detection_metrics(Y, P, threshold=0.5)
    pred = P >= 0.5
    assert m["auc"] == pytest.approx(roc_auc_score(Y, P))
    assert m["accuracy"] == pytest.approx(accuracy_score(Y, pred))
    assert m["precision"] == pytest.approx(precision_score(Y, pred))
    assert m["recall"] == pytest.approx(recall_score(Y, pred))
    assert m["f1"] == pytest.approx(f1_score(Y, pred))
    assert m["specificity"] == pytest.approx(4 / 5)
    assert (m["tp"], m["fp"], m["tn"], m["fn"]) == (3, 1, 4, 2)


def test_youden_threshold_maximises_sensitivity_plus_specificity() -> None:
    t = youden_threshold(Y, P)
    best = max(recall_score(Y, c <= P) + recall_score(1 - Y, c > P) for c in np.unique(P))
    assert recall_score(Y, t <= P) + recall_score(1 - Y, t > P) == pytest.approx(best)


def test_malignancy_metrics_match_scipy() -> None:
    true = np.array([1.0, 2.0, 2.5, 3.0, 4.0, 4.5, 5.0, 1.5])
    pred = np.array([1.5, 2.2, 3.0, 2.5, 3.5, 4.8, 4.1, 2.0])
    m = malignancy_metrics(true, pred)
    assert m["mae"] == pytest.approx(np.abs(true - pred).mean())
    assert m["rmse"] == pytest.approx(np.sqrt(((true - pred) ** 2).mean()))
    assert m["pearson"] == pytest.approx(stats.pearsonr(true, pred)[0])
    assert m["spearman"] == pytest.approx(stats.spearmanr(true, pred)[0])
    keep = (true <= 2) | (true >= 4)  # 2.5 and 3.0 are excluded
    assert m["n_binary"] == 6
    assert m["binary_auc"] == pytest.approx(roc_auc_score(true[keep] >= 4, pred[keep]))


def test_validation_objective_formula() -> None:
    assert validation_objective(0.9, 0.8) == pytest.approx(0.7)
    assert validation_objective(float("nan"), 0.4) == pytest.approx(-0.1)


def test_patient_bootstrap_brackets_the_point_estimate() -> None:
    rng = np.random.default_rng(1)
    patients = np.repeat(np.arange(40), 5)
    y = rng.integers(0, 2, len(patients))
    p = np.clip(y * 0.4 + rng.normal(0.3, 0.25, len(y)), 0, 1)
    point = roc_auc_score(y, p)
    ci = bootstrap_ci(patients, lambda i: {"auc": roc_auc_score(y[i], p[i])}, 300, seed=0)["auc"]
    assert ci[0] < point < ci[1]
    assert 0.02 < ci[1] - ci[0] < 0.3
    # Resampling patients, not cubes: one patient's rows always travel together.
    seen = []
    bootstrap_ci(patients, lambda i: seen.append(np.bincount(patients[i], minlength=40)) or {}, 5)
    assert all((counts % 5 == 0).all() for counts in seen)


def test_paired_difference_of_two_predictors_on_the_same_nodules() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(8), 3)  # 8 patients, 3 nodules each
    true = rng.uniform(1, 5, len(groups))
    error = rng.normal(0, 0.3, len(groups))
    good = true + error
    worse = true + error + np.where(np.arange(len(groups)) % 2, 0.6, -0.6)  # 0.6 off more
    d = paired_difference(true, good, worse, groups, n_resamples=300, seed=1)
    expected = np.abs(error).mean() - np.abs(error + np.where(np.arange(24) % 2, 0.6, -0.6)).mean()
    assert d["n"] == 24 and d["mae_diff"] == pytest.approx(expected)
    low, high = d["mae_diff_ci"]
    assert low <= d["mae_diff"] <= high < 0  # the better predictor: CI entirely below 0
    assert d["pearson_diff"] > 0
    # Swapping the predictors mirrors the difference and its CI (same resamples).
    swapped = paired_difference(true, worse, good, groups, n_resamples=300, seed=1)
    assert swapped["mae_diff"] == pytest.approx(-d["mae_diff"])
    assert swapped["mae_diff_ci"] == pytest.approx([-high, -low])
    # A predictor against itself: exactly 0, with a CI of [0, 0].
    same = paired_difference(true, good, good, groups, n_resamples=50)
    assert same["mae_diff"] == 0 and same["mae_diff_ci"] == [0.0, 0.0]


def test_spread_calibration_on_hand_made_readers() -> None:
    # Four nodules, readers' (mean, sd); the prediction gets every mean right and predicts
    # sd 0.5 where the readers' sd is 0.5 and 1.0 where it is 1.0: calibrated.
    reader_mean = np.array([2.0, 3.0, 4.0, 5.0])
    reader_sd = np.array([0.5, 0.5, 1.0, 1.0])
    exact = spread_calibration(reader_mean, reader_sd, reader_mean, reader_sd, bins=2)
    assert exact["mean_z2"] == pytest.approx(1.0) and exact["sd_mae"] == 0
    assert exact["spearman_pred_vs_reader_sd"] == pytest.approx(1.0)
    assert [r["observed_rms"] for r in exact["reliability"]] == pytest.approx([0.5, 1.0])
    assert [r["n"] for r in exact["reliability"]] == [2, 2]
    expected_nll = np.mean(np.log(reader_sd) + 0.5 * np.log(2 * np.pi) + 0.5)
    assert exact["nll"] == pytest.approx(expected_nll)

    # Means off by 1 and sd halved: overconfident, z² = (sd² + 1) / (sd / 2)².
    off = spread_calibration(reader_mean, reader_sd, reader_mean + 1, reader_sd / 2, bins=2)
    assert off["mean_z2"] == pytest.approx(np.mean((reader_sd**2 + 1) / (reader_sd / 2) ** 2))
    assert off["nll"] > exact["nll"] and off["sd_mae"] == pytest.approx(0.375)
    assert off["reliability"][0]["observed_rms"] == pytest.approx(np.sqrt(1.25))
