from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from lungcad.core.splits import SplitLeakError, check_no_leak, load_splits
from lungcad.splits.patient_split import (
    make_folds,
    make_splits,
    patient_strata,
    write_folds,
    write_splits,
)


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


@pytest.mark.parametrize(("n_patients", "k"), [(40, 5), (60, 10), (7, 3)])
def test_folds_test_every_patient_once_and_never_train_on_it(n_patients, k) -> None:
    index = _index(n_patients)
    folds = make_folds(index, k, 0.15, seed=0)
    assert len(folds) == k
    tested = [pid for f in folds for pid in f["test"]]
    assert sorted(tested) == sorted(index["patient_id"].unique())  # each exactly once
    for f in folds:
        check_no_leak(f)
        assert set(f["train"]) | set(f["val"]) | set(f["test"]) == set(index["patient_id"])
        assert f["train"] and f["val"]
    sizes = [len(f["test"]) for f in folds]
    assert max(sizes) - min(sizes) <= 1 if n_patients >= 40 else min(sizes) >= 1
    # every fold tests patients with nodules
    with_nodules = set(index.loc[index["label"] == 1, "patient_id"])
    assert all(with_nodules & set(f["test"]) for f in folds)
    assert make_folds(index, k, 0.15, seed=0) == folds
    assert make_folds(index, k, 0.15, seed=1) != folds


def test_folds_are_stratified_on_malignancy() -> None:
    index = _index(100)
    strata = patient_strata(index)
    overall = strata.value_counts(normalize=True)
    for f in make_folds(index, 5, 0.15, seed=0):
        mix = strata.loc[f["test"]].value_counts(normalize=True)
        for stratum, share in overall.items():
            assert abs(mix.get(stratum, 0) - share) < 0.1


def test_more_folds_than_patients_with_nodules_names_both_numbers() -> None:
    index = _index(12)
    n = int((patient_strata(index) != "no_nodule").sum())
    with pytest.raises(ValueError, match=f"lists {n + 1} folds but only {n} patient"):
        make_folds(index, n + 1, 0.15, 0)
    with pytest.raises(ValueError, match="needs >= 2"):
        make_folds(index, 1, 0.15, 0)


def test_written_folds_are_splits_files(tmp_path) -> None:
    index = _index(30)
    folds = make_folds(index, 3, 0.15, 0)
    doc = write_folds(folds, index, tmp_path, seed=0)
    for k, f in enumerate(folds):
        assert load_splits(tmp_path / f"fold{k}.json") == f
        assert all(doc["test_fold"][pid] == k for pid in f["test"])
        written = json.loads((tmp_path / f"fold{k}.json").read_text())
        assert written["fold"] == k and written["promotion_candidate"] is False
    assert json.loads((tmp_path / "folds.json").read_text())["folds"] == 3
    with pytest.raises(ValueError, match="every patient exactly once"):
        write_folds(folds[:2], index, tmp_path / "bad", seed=0)


def test_cv_split_with_too_many_folds_is_one_error_line(tmp_path) -> None:
    from typer.testing import CliRunner

    from lungcad.cli.main import app

    index = _index(6)
    index.to_csv(tmp_path / "index.csv", index=False)
    n = int((patient_strata(index) != "no_nodule").sum())
    params = tmp_path / "params.yaml"
    params.write_text(f"cv:\n  folds: {list(range(n + 1))}\n")
    result = CliRunner().invoke(
        app,
        [
            "cv",
            "split",
            "--index",
            str(tmp_path / "index.csv"),
            "--out",
            str(tmp_path / "cv"),
            "--params",
            str(params),
        ],
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "index.csv" in lines[0]
    assert f"lists {n + 1} folds but only {n} patient(s) have nodules" in lines[0]
    assert not (tmp_path / "cv").exists()


def _cv_split(tmp_path, params_text: str, splits) -> object:
    from typer.testing import CliRunner

    from lungcad.cli.main import app

    params = tmp_path / "params.yaml"
    params.write_text(params_text)
    args = ["cv", "split", "--index", str(tmp_path / "index.csv"), "--out", str(tmp_path / "cv")]
    return CliRunner().invoke(app, [*args, "--splits", str(splits), "--params", str(params)])


def test_holdout_keeps_the_default_val_and_test_patients_out_of_every_fold(tmp_path) -> None:
    index = _index(40)
    index.to_csv(tmp_path / "index.csv", index=False)
    split = make_splits(index, 0.15, 0.2, 0)
    write_splits(split, index, tmp_path / "splits.json", 0)
    result = _cv_split(
        tmp_path, "cv:\n  folds: [0, 1, 2]\n  holdout: default_split\n", tmp_path / "splits.json"
    )
    assert result.exit_code == 0, result.output
    apart = set(split["val"]) | set(split["test"])
    assert f"the {len(apart)} val and test patients" in result.output
    doc = json.loads((tmp_path / "cv" / "folds.json").read_text())
    assert doc["held_out"] == sorted(apart)
    covered = set()
    for k in range(3):
        fold = load_splits(tmp_path / "cv" / f"fold{k}.json")
        members = {pid for part in fold.values() for pid in part}
        assert not members & apart  # no fold trains, validates or tests on them
        assert json.loads((tmp_path / "cv" / f"fold{k}.json").read_text())["promotion_candidate"]
        covered |= set(fold["test"])
    assert covered == set(split["train"])  # the others tested once
    # Without the default split the command says what to run, in one line.
    result = _cv_split(
        tmp_path, "cv:\n  folds: [0, 1, 2]\n  holdout: default_split\n", tmp_path / "none.json"
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "none.json" in lines[0] and "lungcad data split" in lines[0]
