"""Patient-level train/val/test split of the cube dataset, seeded and stratified.

Every cube of a patient (all series, nodules and negatives) lands in one set, so no patient
is seen in training and evaluation. Patients are stratified on nodule presence and on their
highest mean malignancy (none / benign-leaning <= 2.5 / indeterminate / malignant-leaning
>= 3.5), so each set sees the same mix.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedKFold, train_test_split

from lungcad.core.outputs import write_text_atomic
from lungcad.core.splits import SPLITS, check_no_leak


def patient_strata(index: pd.DataFrame) -> pd.Series:
    """One stratum label per patient id (see module docstring)."""
    nodules = index[index["label"] == 1]
    worst = nodules.groupby("patient_id")["malignancy_mean"].max()
    patients = pd.Series(sorted(index["patient_id"].unique()), name="patient_id")
    strata = []
    for pid in patients:
        if pid not in worst.index:
            strata.append("no_nodule")
        elif worst[pid] <= 2.5:
            strata.append("benign")
        elif worst[pid] >= 3.5:
            strata.append("malignant")
        else:
            strata.append("indeterminate")
    return pd.Series(strata, index=patients, name="stratum")


def _split_off(ids: np.ndarray, strata: np.ndarray, fraction: float, seed: int):
    if fraction <= 0:
        return ids, np.array([], dtype=ids.dtype)
    n_take = max(1, int(round(fraction * len(ids))))
    if n_take >= len(ids):
        raise ValueError(
            f"{len(ids)} patient(s) cannot give {n_take} to the smaller side of a split and "
            "keep one for the other: build more scans or lower the fraction"
        )
    _, counts = np.unique(strata, return_counts=True)
    # Stratify when every stratum can give a patient to both sides; else fall back to random.
    can_stratify = counts.min() >= 2 and n_take >= len(counts) and len(ids) - n_take >= len(counts)
    keep, take = train_test_split(
        ids, test_size=n_take, random_state=seed, stratify=strata if can_stratify else None
    )
    return np.sort(keep), np.sort(take)


def make_splits(
    index: pd.DataFrame, val_fraction: float, test_fraction: float, seed: int
) -> dict[str, list[str]]:
    """Assign every patient of ``index`` to train, val or test.

    Args:
        index: the dataset's index.csv.
        val_fraction, test_fraction: shares of patients (train gets the rest).
        seed: seeds the assignment.

    Raises:
        ValueError: fractions out of range, or too few patients to fill every split.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ValueError(
            f"val_fraction={val_fraction} and test_fraction={test_fraction} must be "
            "in [0, 1) and sum to less than 1"
        )
    strata = patient_strata(index)
    ids = strata.index.to_numpy()
    needed = 1 + (val_fraction > 0) + (test_fraction > 0)
    if len(ids) < needed:
        raise ValueError(f"{len(ids)} patient(s) cannot fill {needed} splits; build more scans")
    rest, test = _split_off(ids, strata.loc[ids].to_numpy(), test_fraction, seed)
    val_share = val_fraction / (1 - test_fraction)
    train, val = _split_off(rest, strata.loc[rest].to_numpy(), val_share, seed + 1)
    splits = {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}
    check_no_leak(splits)
    return splits


def write_splits(
    splits: dict[str, list[str]],
    index: pd.DataFrame,
    path: str | Path,
    seed: int,
    extra: dict | None = None,
) -> dict:
    """Write splits.json (patient ids per split, cube and nodule counts, and ``extra``
    keys) atomically."""
    check_no_leak(splits)
    summary = {}
    for name in SPLITS:
        part = index[index["patient_id"].isin(splits[name])]
        summary[name] = {
            "patients": len(splits[name]),
            "cubes": int(len(part)),
            "nodules": int((part["label"] == 1).sum()),
        }
    doc = {"seed": seed, "unit": "patient_id", **splits, "summary": summary, **(extra or {})}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(doc, indent=2), "the patient split")
    return doc


def make_folds(
    index: pd.DataFrame, n_folds: int, val_fraction: float, seed: int
) -> list[dict[str, list[str]]]:
    """K-fold patient-level cross-validation: fold k tests on the k-th part of the patients
    and trains on the others, keeping ``val_fraction`` of all patients for validation.

    The parts are stratified like :func:`make_splits` (on nodule presence and malignancy)
    when every stratum has at least ``n_folds`` patients, else drawn at random. Every patient
    is tested in exactly one fold.

    Raises:
        ValueError: fewer than 2 folds, more folds than patients with nodules (a fold
            without nodules has no detection or malignancy figure), or a val share that
            leaves no patient to train on.
    """
    strata = patient_strata(index)
    with_nodules = int((strata != "no_nodule").sum())
    if n_folds < 2:
        raise ValueError(f"cv.folds lists {n_folds} fold(s): a cross-validation needs >= 2")
    if n_folds > with_nodules:
        raise ValueError(
            f"cv.folds lists {n_folds} folds but only {with_nodules} patient(s) have nodules: "
            f"every fold needs one; use at most {with_nodules} folds"
        )
    ids = strata.index.to_numpy()
    labels = strata.to_numpy()
    _, counts = np.unique(labels, return_counts=True)
    if counts.min() >= n_folds:
        parts = StratifiedKFold(n_folds, shuffle=True, random_state=seed).split(ids, labels)
    else:  # still give every fold patients with nodules: deal them out first
        order = np.random.default_rng(seed).permutation(len(ids))
        order = np.r_[order[labels[order] != "no_nodule"], order[labels[order] == "no_nodule"]]
        fold_of = np.empty(len(ids), int)
        fold_of[order] = np.arange(len(ids)) % n_folds
        parts = [
            (np.flatnonzero(fold_of != k), np.flatnonzero(fold_of == k)) for k in range(n_folds)
        ]
    val_share = val_fraction / (1 - 1 / n_folds)
    if val_share >= 1:
        raise ValueError(
            f"split.val_fraction={val_fraction} with {n_folds} folds leaves no patient to train on"
        )
    folds = []
    for k, (rest_idx, test_idx) in enumerate(parts):
        rest = ids[rest_idx]
        train, val = _split_off(rest, labels[rest_idx], val_share, seed + 1 + k)
        splits = {
            "train": train.tolist(),
            "val": val.tolist(),
            "test": np.sort(ids[test_idx]).tolist(),
        }
        check_no_leak(splits)
        folds.append(splits)
    return folds


def subset_folds(
    index: pd.DataFrame,
    series: pd.DataFrame,
    n_folds: int,
    val_fraction: float,
    seed: int,
) -> tuple[list[dict[str, list[str]]], list[str]]:
    """LUNA16's protocol: fold k tests on the patients of the k-th subset folder (in
    natural order: subset0, subset1, ..., subset9) and trains on the others, keeping
    ``val_fraction`` of all patients for validation.

    Args:
        index: the dataset's index.csv.
        series: its series_index.csv (``folder``: each series' subset).

    Returns:
        (the folds, a note for each patient whose scans are in more than one subset: it is
        tested with its first subset, so that no patient is in two folds).

    Raises:
        ValueError: a subset count other than ``n_folds``, or a fold without nodules.
    """
    series = series[series["patient_id"].isin(index["patient_id"])]
    names = sorted(series["folder"].astype(str).unique(), key=_natural)
    if len(names) != n_folds:
        raise ValueError(
            f"cv.folds lists {n_folds} folds but the dataset's scans are in {len(names)} "
            f"subset folder(s) ({', '.join(names[:4])}{', ...' if len(names) > 4 else ''}): "
            "list one fold per subset (cv.split_by luna16_subsets needs a LUNA16 root)"
        )
    rank = {name: k for k, name in enumerate(names)}
    notes, fold_of = [], {}
    for pid, group in series.groupby("patient_id"):
        ks = sorted({rank[str(f)] for f in group["folder"]})
        fold_of[pid] = ks[0]
        if len(ks) > 1:
            notes.append(
                f"{pid} has scans in {', '.join(names[k] for k in ks)}: tested with "
                f"{names[ks[0]]} (a patient is in one fold only)"
            )
    strata = patient_strata(index)
    ids = strata.index.to_numpy()
    labels = strata.to_numpy()
    val_share = val_fraction / (1 - 1 / n_folds)
    folds = []
    for k in range(n_folds):
        test = np.array(sorted(p for p in ids if fold_of[p] == k), dtype=ids.dtype)
        if not (strata.loc[test] != "no_nodule").any():
            raise ValueError(f"{names[k]} has no patient with nodules: every fold needs one")
        rest_mask = np.array([fold_of[p] != k for p in ids])
        train, val = _split_off(ids[rest_mask], labels[rest_mask], val_share, seed + 1 + k)
        splits = {"train": train.tolist(), "val": val.tolist(), "test": test.tolist()}
        check_no_leak(splits)
        folds.append(splits)
    return folds, notes


def _natural(name: str) -> tuple:
    """subset2 before subset10."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def write_folds(
    folds: list[dict[str, list[str]]],
    index: pd.DataFrame,
    out_dir: str | Path,
    seed: int,
    held_out: list[str] = (),
) -> dict:
    """Write ``fold<k>.json`` (a splits.json per fold: its train, val and held-out test
    patients) and ``folds.json`` (each patient's test fold, the per-fold counts, and the
    patients ``held_out`` of every fold). ``index`` holds the patients the folds cover."""
    out_dir = Path(out_dir)
    tested = [pid for f in folds for pid in f["test"]]
    if sorted(tested) != sorted(index["patient_id"].unique()) or len(set(tested)) != len(tested):
        raise ValueError("the folds must test every patient exactly once")
    # A fold model's runs are promotion candidates (compared on the default split's val,
    # reported on its test) only when no fold holds a patient of either.
    extra = {"fold": None, "promotion_candidate": bool(held_out)}
    summary = [
        write_splits(f, index, out_dir / f"fold{k}.json", seed, {**extra, "fold": k})["summary"]
        for k, f in enumerate(folds)
    ]
    doc = {
        "seed": seed,
        "unit": "patient_id",
        "folds": len(folds),
        "test_fold": {pid: k for k, f in enumerate(folds) for pid in f["test"]},
        "held_out": sorted(held_out),
        "summary": summary,
    }
    write_text_atomic(
        out_dir / "folds.json", json.dumps(doc, indent=2), "the cross-validation folds"
    )
    return doc
