"""Detection, malignancy, Dice and pointing-game metrics, the validation objective, and
patient bootstrap CIs."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from scipy import ndimage, stats
from sklearn.metrics import roc_auc_score

#: Binarised malignancy convention of the LIDC literature and NoduleMNIST3D:
#: mean rating <= 2 is benign, >= 4 malignant, anything between is left out.
BENIGN_MAX, MALIGNANT_MIN = 2.0, 4.0


def safe_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """ROC-AUC, or NaN when only one class is present."""
    y_true = np.asarray(y_true)
    if len(np.unique(y_true)) < 2:
        return float("nan")
    return float(roc_auc_score(y_true, score))


def youden_threshold(y_true: np.ndarray, prob: np.ndarray) -> float:
    """Probability threshold maximising sensitivity + specificity - 1 (Youden's J).

    Every threshold between the best cut score and the next lower score gives the same
    decisions on this split; the midpoint of that interval is returned (a max-margin
    choice), not its edge, which would overfit a small validation split.
    """
    y_true, prob = np.asarray(y_true).astype(bool), np.asarray(prob, dtype=float)
    if len(np.unique(y_true)) < 2:
        return 0.5
    cuts = np.unique(prob)
    j = np.array([(prob[y_true] >= c).mean() + (prob[~y_true] < c).mean() - 1 for c in cuts])
    i = int(np.flatnonzero(j == j.max())[0])
    return float((cuts[i] + cuts[i - 1]) / 2 if i > 0 else cuts[0] / 2)


def detection_metrics(y_true: np.ndarray, prob: np.ndarray, threshold: float) -> dict[str, float]:
    """AUC and the threshold-dependent metrics, with the confusion matrix counts."""
    y_true = np.asarray(y_true).astype(int)
    pred = (np.asarray(prob) >= threshold).astype(int)
    tp = int(np.sum((pred == 1) & (y_true == 1)))
    fp = int(np.sum((pred == 1) & (y_true == 0)))
    tn = int(np.sum((pred == 0) & (y_true == 0)))
    fn = int(np.sum((pred == 0) & (y_true == 1)))

    def ratio(a: float, b: float) -> float:
        return float(a / b) if b else float("nan")

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    return {
        "auc": safe_auc(y_true, prob),
        "accuracy": ratio(tp + tn, len(y_true)),
        "precision": precision,
        "recall": recall,
        "specificity": ratio(tn, tn + fp),
        "f1": ratio(2 * precision * recall, precision + recall),
        "threshold": float(threshold),
        "tp": int(tp),
        "fp": int(fp),
        "tn": int(tn),
        "fn": int(fn),
    }


def malignancy_metrics(true_mean: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """MAE, RMSE, Pearson, Spearman, and the binarised (<=2 vs >=4) malignancy AUC."""
    true_mean, pred = np.asarray(true_mean, float), np.asarray(pred, float)
    if len(true_mean) == 0:
        return {k: float("nan") for k in ("mae", "rmse", "pearson", "spearman", "binary_auc")}
    err = pred - true_mean
    varied = len(true_mean) > 2 and np.std(true_mean) > 0 and np.std(pred) > 0
    keep = (true_mean <= BENIGN_MAX) | (true_mean >= MALIGNANT_MIN)
    return {
        "mae": float(np.abs(err).mean()),
        "rmse": float(np.sqrt((err**2).mean())),
        "pearson": float(stats.pearsonr(true_mean, pred)[0]) if varied else float("nan"),
        "spearman": float(stats.spearmanr(true_mean, pred)[0]) if varied else float("nan"),
        "binary_auc": safe_auc(true_mean[keep] >= MALIGNANT_MIN, pred[keep]),
        "n_binary": int(keep.sum()),
    }


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks on one grid (1 when both are empty)."""
    inter = np.count_nonzero(np.logical_and(a, b))
    total = np.count_nonzero(a) + np.count_nonzero(b)
    return 2 * inter / total if total else 1.0


def dilate_mm(mask: np.ndarray, radius_mm: float, spacing_mm: float = 1.0) -> np.ndarray:
    """``mask`` grown by a ball of ``radius_mm`` (voxels of ``spacing_mm``)."""
    r = int(np.floor(radius_mm / spacing_mm))
    if r <= 0:
        return mask.astype(bool)
    zz, yy, xx = np.mgrid[-r : r + 1, -r : r + 1, -r : r + 1]
    ball = (zz**2 + yy**2 + xx**2) * spacing_mm**2 <= radius_mm**2
    return ndimage.binary_dilation(mask, structure=ball)


def pointing(cam: np.ndarray, mask: np.ndarray, radius_mm: float, spacing_mm: float = 1.0):
    """The pointing game (Zhang et al., 2018) on one cube: (hit, chance, distance of the
    map's maximum from the mask in mm). A hit is a maximum inside ``mask`` grown by
    ``radius_mm``; chance is the grown mask's share of the cube. ``hit`` is False for a map
    that is zero everywhere (it points nowhere)."""
    grown = dilate_mm(mask, radius_mm, spacing_mm)
    chance = float(grown.mean())
    if not mask.any():
        return False, chance, float("nan")
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    if cam[peak] <= 0:
        return False, chance, float("nan")
    distance = ndimage.distance_transform_edt(~mask.astype(bool), sampling=spacing_mm)[peak]
    return bool(grown[peak]), chance, float(distance)


def validation_objective(auc: float, mae: float) -> float:
    """The single validation score to maximise: detection AUC - malignancy MAE / 4.

    MAE is divided by 4, the width of the 1-5 rating scale, so both terms live on [0, 1];
    a missing term (NaN, e.g. no nodule in the split) counts as its worst value.
    """
    auc = 0.0 if np.isnan(auc) else auc
    mae = 4.0 if np.isnan(mae) else mae
    return float(auc - mae / 4.0)


def bootstrap_ci(
    groups: np.ndarray,
    statistic: Callable[[np.ndarray], dict[str, float]],
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Percentile CIs of every value of ``statistic(row_indices)``, resampling whole groups.

    Args:
        groups: group (patient) id of every row: a resample draws patients with
            replacement and takes all their rows.
        statistic: maps an array of row indices (with repeats) to named numbers.
        n_resamples: bootstrap resamples.
        seed: seeds the resampling.
        level: confidence level.

    Returns:
        name -> (low, high); NaN resamples (e.g. one class only) are left out.
    """
    groups = np.asarray(groups)
    ids, inverse = np.unique(groups, return_inverse=True)
    rows_of = [np.flatnonzero(inverse == g) for g in range(len(ids))]
    rng = np.random.default_rng(seed)
    samples: dict[str, list[float]] = {}
    for _ in range(n_resamples):
        pick = rng.integers(0, len(ids), len(ids))
        for name, value in statistic(np.concatenate([rows_of[g] for g in pick])).items():
            if not np.isnan(value):
                samples.setdefault(name, []).append(value)
    alpha = (1 - level) / 2
    return {
        name: (float(np.quantile(v, alpha)), float(np.quantile(v, 1 - alpha)))
        for name, v in samples.items()
    }


#: Cube detection and malignancy figures reported with patient-bootstrap CIs.
DETECTION_CI = ("auc", "accuracy", "precision", "recall", "specificity", "f1")
MALIGNANCY_CI = ("mae", "rmse", "pearson", "spearman", "binary_auc")


def with_ci(
    point: dict[str, float],
    keys,
    groups: np.ndarray,
    stat_of: Callable[[np.ndarray], dict[str, float]],
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """``point`` with ``ci95``: the group-bootstrap CI of each of ``keys`` of
    ``stat_of(row_indices)`` (NaN without resamples, ``n_boot`` 0)."""

    def statistic(idx: np.ndarray) -> dict[str, float]:
        values = stat_of(idx)
        return {k: values[k] for k in keys}

    cis = bootstrap_ci(groups, statistic, n_boot, seed) if n_boot > 0 else {}
    return {**point, "ci95": {k: list(cis.get(k, (float("nan"), float("nan")))) for k in keys}}


#: Malignancy figures compared between two predictors on the same nodules.
PAIRED_METRICS = ("mae", "rmse", "pearson")


def paired_difference(
    true_mean: np.ndarray,
    pred_a: np.ndarray,
    pred_b: np.ndarray,
    groups: np.ndarray,
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, Any]:
    """Predictor a minus predictor b on the same nodules: the MAE, RMSE and Pearson
    differences, each with a paired patient-bootstrap CI (every resample scores both
    predictors on the same resampled patients, so the CI is that of the difference).

    Returns:
        ``{"mae_diff": d, "mae_diff_ci": [low, high], ...}``; a CI entirely below 0 for
        ``mae_diff`` means a is more accurate than b.
    """
    true_mean, pred_a, pred_b = (np.asarray(v, float) for v in (true_mean, pred_a, pred_b))

    def diff(rows: np.ndarray) -> dict[str, float]:
        a = malignancy_metrics(true_mean[rows], pred_a[rows])
        b = malignancy_metrics(true_mean[rows], pred_b[rows])
        return {f"{k}_diff": a[k] - b[k] for k in PAIRED_METRICS}

    point = diff(np.arange(len(true_mean)))
    ci = bootstrap_ci(groups, diff, n_resamples, seed, level) if n_resamples else {}
    out: dict[str, Any] = {"n": len(true_mean)}
    for name, value in point.items():
        out[name] = value
        out[f"{name}_ci"] = list(ci.get(name, (float("nan"), float("nan"))))
    return out


def spread_calibration(
    reader_mean: np.ndarray,
    reader_sd: np.ndarray,
    pred_mean: np.ndarray,
    pred_sd: np.ndarray,
    bins: int = 3,
) -> dict[str, Any]:
    """How well a predicted Gaussian N(pred_mean, pred_sd²) over one reader's rating matches
    the readers' ratings (mean ``reader_mean``, sd ``reader_sd``, ddof 0), per nodule.

    ``observed`` spread: the root mean squared distance of the readers' ratings from the
    prediction, sqrt(reader_sd² + (reader_mean - pred_mean)²): what ``pred_sd`` estimates.

    Returns: the mean predicted sd, the mean readers' sd, Spearman of predicted vs readers'
    sd, MAE between them, the mean negative log-likelihood of the readers' ratings, the mean
    squared z-score (observed² / pred_sd²: 1 when calibrated, > 1 overconfident), and a
    reliability table: nodules in ``bins`` quantile bins of pred_sd, each with its mean
    predicted sd and its RMS observed spread.
    """
    reader_mean, reader_sd = np.asarray(reader_mean, float), np.asarray(reader_sd, float)
    pred_mean, pred_sd = np.asarray(pred_mean, float), np.asarray(pred_sd, float)
    squared = reader_sd**2 + (reader_mean - pred_mean) ** 2
    varied = len(pred_sd) > 2 and pred_sd.std() > 0 and reader_sd.std() > 0
    order = np.argsort(pred_sd, kind="stable")
    table = [
        {
            "pred_sd": float(pred_sd[i].mean()),
            "observed_rms": float(np.sqrt(squared[i].mean())),
            "reader_sd": float(reader_sd[i].mean()),
            "n": int(len(i)),
        }
        for i in np.array_split(order, min(bins, len(order)))
        if len(i)
    ]
    return {
        "mean_pred_sd": float(pred_sd.mean()),
        "mean_reader_sd": float(reader_sd.mean()),
        "spearman_pred_vs_reader_sd": (
            float(stats.spearmanr(pred_sd, reader_sd)[0]) if varied else float("nan")
        ),
        "sd_mae": float(np.abs(pred_sd - reader_sd).mean()),
        "nll": float(
            reader_nll(
                *(torch.tensor(np.asarray(v)) for v in (pred_mean, pred_sd, reader_mean, reader_sd))
            )
            .mean()
            .item()
        ),
        "mean_z2": float((squared / pred_sd**2).mean()),
        "reliability": table,
        "n": int(len(pred_sd)),
    }


def reader_nll(
    mean: torch.Tensor, sd: torch.Tensor, reader_mean: torch.Tensor, reader_sd: torch.Tensor
) -> torch.Tensor:
    """Per cube: mean negative log-likelihood of its readers' ratings under N(mean, sd²)."""
    squared = reader_sd.square() + (reader_mean - mean).square()
    return sd.log() + 0.5 * math.log(2 * math.pi) + squared / (2 * sd.square())
