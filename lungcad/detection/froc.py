"""LUNA16 FROC / CPM of whole-scan detections.

The LUNA16 rules: a finding whose centre lies within the radius (diameter / 2) of a
reference nodule hits it; a nodule hit by several findings counts once, with the highest
probability among them; a finding that hits no reference nodule but lies within the radius
of an *excluded* annotation (outlined by fewer than 3 readers, or under 3 mm; 10 mm across
when its size is unknown, -1) is ignored;
every other finding is a false positive. Sweeping the probability threshold gives the FROC
curve (sensitivity against false positives per scan); the CPM is the mean sensitivity at
1/8, 1/4, 1/2, 1, 2, 4 and 8 false positives per scan, read off the curve by linear
interpolation. Its 95 % CI comes from bootstrapping patients (all of a drawn patient's
scans together), or scans where no patient is given.

MONAI's ``compute_froc_score`` does the interpolation and averaging. The curve itself is
computed here from scikit-learn's ``roc_curve`` over the counted findings (as LUNA16's own
script does) rather than with MONAI's ``compute_froc_curve_data``, which starts at the
second-lowest probability (a CAMELYON convention) and so never counts the lowest-scored
finding, which can be a hit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from monai.metrics import compute_froc_score
from sklearn.metrics import roc_curve

FP_RATES = (0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
COORDS = ["coordX", "coordY", "coordZ"]
#: Diameter LUNA16's evaluation gives an excluded annotation listed with diameter -1.
EXCLUDED_UNKNOWN_DIAMETER_MM = 10.0


@dataclass
class FrocResult:
    """The FROC of a set of scans."""

    fps_per_scan: np.ndarray
    sensitivity: np.ndarray
    sensitivities: dict[float, float]  # at FP_RATES
    cpm: float
    n_nodules: int
    n_scans: int
    n_hits: int  # nodules hit by any finding (the curve's highest sensitivity)
    n_false_positives: int
    n_ignored: int

    def as_dict(self) -> dict:
        return {
            "cpm": self.cpm,
            **{f"sensitivity_at_{r:g}_fp": s for r, s in self.sensitivities.items()},
            "max_sensitivity": self.n_hits / self.n_nodules if self.n_nodules else float("nan"),
            "n_nodules": self.n_nodules,
            "n_scans": self.n_scans,
            "false_positives": self.n_false_positives,
            "ignored_findings": self.n_ignored,
        }


def label_findings(
    findings: pd.DataFrame, annotations: pd.DataFrame, excluded: pd.DataFrame
) -> pd.DataFrame:
    """Each finding labelled ``hit`` (with the nodule it hits), ``ignored`` or ``fp``.

    All three tables have LUNA16's columns: ``seriesuid, coordX, coordY, coordZ`` (and
    ``probability`` for findings, ``diameter_mm`` for the annotations).
    """
    out = findings.copy()
    out["label"] = "fp"
    out["nodule"] = -1
    annotations = annotations.reset_index(drop=True)
    for uid, group in out.groupby("seriesuid", sort=False):
        pts = group[COORDS].to_numpy(dtype=float)
        nod = annotations[annotations["seriesuid"] == uid]
        exc = excluded[excluded["seriesuid"] == uid]
        labels = np.full(len(group), "fp", dtype=object)
        which = np.full(len(group), -1)
        if len(exc):
            d = np.linalg.norm(pts[:, None] - exc[COORDS].to_numpy(float)[None], axis=2)
            diameter = exc["diameter_mm"].to_numpy(float)
            # LUNA16 lists some excluded findings without a size (-1): it takes 10 mm.
            diameter = np.where(diameter < 0, EXCLUDED_UNKNOWN_DIAMETER_MM, diameter)
            near = d < diameter[None] / 2
            labels[near.any(axis=1)] = "ignored"
        if len(nod):
            d = np.linalg.norm(pts[:, None] - nod[COORDS].to_numpy(float)[None], axis=2)
            inside = d < nod["diameter_mm"].to_numpy(float)[None] / 2
            hit = inside.any(axis=1)
            # A finding inside two nodules is given to the nearer one.
            nearest = np.where(inside, d, np.inf).argmin(axis=1)
            labels[hit] = "hit"
            which[hit] = nod.index.to_numpy()[nearest[hit]]
        out.loc[group.index, "label"] = labels
        out.loc[group.index, "nodule"] = which
    return out


def froc(
    findings: pd.DataFrame,
    annotations: pd.DataFrame,
    excluded: pd.DataFrame,
    series_uids: list[str] | np.ndarray,
) -> FrocResult:
    """FROC and CPM of ``findings`` on the scans ``series_uids`` (see module docstring).

    Findings and annotations of other scans are left out; a scan with no finding still
    counts in the false positives per scan and its nodules are missed.
    """
    series = pd.Index(pd.unique(np.asarray(series_uids, dtype=object)))
    findings = findings[findings["seriesuid"].isin(series)].reset_index(drop=True)
    annotations = annotations[annotations["seriesuid"].isin(series)].reset_index(drop=True)
    excluded = excluded[excluded["seriesuid"].isin(series)]
    labelled = label_findings(findings, annotations, excluded)
    tp_probs = best_hit_per_nodule(findings, annotations)
    fp_probs = labelled.loc[labelled["label"] == "fp", "probability"].to_numpy(float)
    n_nodules, n_scans = len(annotations), len(series)
    fps, sens = froc_curve(tp_probs, fp_probs, n_nodules, n_scans)
    # The curve runs from many false positives down to none, as compute_froc_score expects.
    at = {r: float(np.interp(r, fps[::-1], sens[::-1])) for r in FP_RATES}
    cpm = float(compute_froc_score(fps, sens, eval_thresholds=FP_RATES)) if n_nodules else np.nan
    return FrocResult(
        fps,
        sens,
        at,
        cpm,
        n_nodules,
        n_scans,
        len(tp_probs),
        len(fp_probs),
        int((labelled["label"] == "ignored").sum()),
    )


def best_hit_per_nodule(findings: pd.DataFrame, annotations: pd.DataFrame) -> np.ndarray:
    """For each nodule hit by a finding, the highest probability among the findings inside
    its radius (a finding inside two overlapping nodules hits both, as in LUNA16)."""
    best = []
    for uid, nod in annotations.groupby("seriesuid", sort=False):
        group = findings[findings["seriesuid"] == uid]
        if len(group) == 0:
            continue
        pts = group[COORDS].to_numpy(float)
        prob = group["probability"].to_numpy(float)
        d = np.linalg.norm(pts[:, None] - nod[COORDS].to_numpy(float)[None], axis=2)
        inside = d < nod["diameter_mm"].to_numpy(float)[None] / 2
        for j in np.flatnonzero(inside.any(axis=0)):
            best.append(prob[inside[:, j]].max())
    return np.array(best, dtype=float)


def froc_curve(
    tp_probs: np.ndarray, fp_probs: np.ndarray, n_nodules: int, n_scans: int
) -> tuple[np.ndarray, np.ndarray]:
    """(false positives per scan, sensitivity) at every threshold, in *decreasing* FP order
    (the order ``compute_froc_score`` reverses), from (all findings) down to (none)."""
    if n_nodules == 0 or n_scans == 0:
        return np.array([0.0]), np.array([np.nan])
    if len(tp_probs) == 0 or len(fp_probs) == 0:
        # A single class: the curve is a step at the counts of the one that is present.
        return np.array([len(fp_probs) / n_scans, 0.0]), np.array([len(tp_probs) / n_nodules, 0.0])
    labels = np.r_[np.ones(len(tp_probs)), np.zeros(len(fp_probs))]
    fpr, tpr, _ = roc_curve(labels, np.r_[tp_probs, fp_probs], drop_intermediate=False)
    fps = fpr * len(fp_probs) / n_scans
    sens = tpr * len(tp_probs) / n_nodules
    return fps[::-1], sens[::-1]


def bootstrap_cpm(
    findings: pd.DataFrame,
    annotations: pd.DataFrame,
    excluded: pd.DataFrame,
    series_uids: list[str],
    n: int = 1000,
    seed: int = 0,
    patients: list[str] | None = None,
) -> dict[str, float]:
    """95 % percentile CI of the CPM and of each sensitivity, resampling patients with
    replacement (``patients[i]`` is the patient of ``series_uids[i]``; a patient drawn
    twice counts all of its scans' findings and nodules twice), or scans without
    ``patients``."""
    rng = np.random.default_rng(seed)
    series = np.asarray(pd.unique(np.asarray(series_uids, dtype=object)))
    if n <= 0 or len(series) == 0:
        return {}
    owner = dict(zip(series_uids, patients)) if patients is not None else {}
    units = pd.unique(np.asarray([owner.get(u, u) for u in series], dtype=object))
    unit_of = {u: owner.get(u, u) for u in series}
    # Each scan's contribution is fixed (its nodules' best hits, its false positives), so
    # it is computed once; a bootstrap sample only concatenates scans.
    per_scan = []
    for u in series:
        f = findings[findings["seriesuid"] == u]
        a = annotations[annotations["seriesuid"] == u]
        e = excluded[excluded["seriesuid"] == u]
        labels = label_findings(f, a, e)["label"].to_numpy()
        fp = f["probability"].to_numpy(float)[labels == "fp"]
        per_scan.append((best_hit_per_nodule(f, a), fp, len(a)))
    # One resampling unit per patient: its scans' hits, false positives, nodules and scans.
    per_unit = []
    for unit in units:
        mine = [per_scan[i] for i, u in enumerate(series) if unit_of[u] == unit]
        per_unit.append(
            (
                np.concatenate([m[0] for m in mine]),
                np.concatenate([m[1] for m in mine]),
                sum(m[2] for m in mine),
                len(mine),
            )
        )
    samples = []
    for _ in range(n):
        draw = rng.integers(len(units), size=len(units))
        tp = np.concatenate([per_unit[i][0] for i in draw])
        fp = np.concatenate([per_unit[i][1] for i in draw])
        n_nodules = sum(per_unit[i][2] for i in draw)
        if n_nodules == 0:
            continue
        fps, sens = froc_curve(tp, fp, n_nodules, sum(per_unit[i][3] for i in draw))
        at = [float(np.interp(r, fps[::-1], sens[::-1])) for r in FP_RATES]
        samples.append([float(np.mean(at)), *at])
    arr = np.array(samples, dtype=float)
    names = ["cpm", *[f"sensitivity_at_{r:g}_fp" for r in FP_RATES]]
    out = {}
    for j, name in enumerate(names):
        col = arr[:, j][np.isfinite(arr[:, j])]
        if len(col):
            out[f"{name}_ci_low"] = float(np.percentile(col, 2.5))
            out[f"{name}_ci_high"] = float(np.percentile(col, 97.5))
    return out
