from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lungcad.core.splits import SplitLeakError, check_no_leak, load_splits
from lungcad.splits.patient_split import make_splits, patient_strata, write_splits


def _index(n_patients: int = 40, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(n_patients):
        pid = f"LIDC-IDRI-{p:04d}"
        for _ in range(rng.integers(0, 4)):  # 0..3 nodules, several cubes per patient
            rows.append({"patient_id": pid, "label": 1, "malignancy_mean": rng.uniform(1, 5)})
        for _ in range(2):
            rows.append({"patient_id": pid, "label": 0, "malignancy_mean": np.nan})
    return pd.DataFrame(rows)


def test_every_patient_in_exactly_one_split() -> None:
    index = _index()
    splits = make_splits(index, 0.15, 0.2, seed=0)
    sets = [set(splits[s]) for s in ("train", "val", "test")]
    assert set().union(*sets) == set(index["patient_id"])
    assert sum(len(s) for s in sets) == index["patient_id"].nunique()
    assert len(splits["test"]) == 8 and len(splits["val"]) == 6
    for name in ("val", "test"):
        cubes = index[index["patient_id"].isin(splits[name])]
        assert cubes["patient_id"].isin(splits["train"]).sum() == 0


def test_split_is_seeded_and_stratified() -> None:
    index = _index(80)
    assert make_splits(index, 0.15, 0.2, 3) == make_splits(index, 0.15, 0.2, 3)
    assert make_splits(index, 0.15, 0.2, 3) != make_splits(index, 0.15, 0.2, 4)
    strata = patient_strata(index)
    splits = make_splits(index, 0.15, 0.2, 0)
    overall = strata.value_counts(normalize=True)
    test_mix = strata.loc[splits["test"]].value_counts(normalize=True)
    for stratum, share in overall.items():
        assert abs(test_mix.get(stratum, 0) - share) < 0.15


def test_overlap_fails_loudly(tmp_path) -> None:
    with pytest.raises(SplitLeakError, match="LIDC-IDRI-0007 in train and test"):
        check_no_leak({"train": ["LIDC-IDRI-0007"], "val": [], "test": ["LIDC-IDRI-0007"]})
    path = tmp_path / "splits.json"
    path.write_text(json.dumps({"train": ["a", "b"], "val": ["b"], "test": []}))
    with pytest.raises(SplitLeakError):
        load_splits(path)


def test_written_splits_round_trip_with_counts(tmp_path) -> None:
    index = _index()
    splits = make_splits(index, 0.15, 0.2, 0)
    doc = write_splits(splits, index, tmp_path / "splits.json", seed=0)
    assert load_splits(tmp_path / "splits.json") == splits
    assert sum(doc["summary"][s]["cubes"] for s in ("train", "val", "test")) == len(index)


def test_too_few_patients_or_bad_fractions_are_errors() -> None:
    with pytest.raises(ValueError, match="cannot fill"):
        make_splits(_index(2), 0.15, 0.2, 0)
    with pytest.raises(ValueError, match="sum to less than 1"):
        make_splits(_index(), 0.5, 0.5, 0)
