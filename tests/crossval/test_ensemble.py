"""The fold ensemble: one checkpoint, one model whose outputs are its members' means."""

from __future__ import annotations

import json

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.tracking import MlflowClient

from lungcad.core.model.cam import CamSettings, CubeExplainer
from lungcad.core.model.checkpoint import load_checkpoint, save_checkpoint
from lungcad.core.model.ensemble import EnsembleError, EnsembleNet, write_ensemble
from lungcad.core.model.loading import load_model
from lungcad.core.model.network import window_hu
from lungcad.core.model.predict import predict_hu_cubes
from lungcad.crossval.ensemble import build_fold_ensemble, fold_checkpoints, log_fold_ensemble
from lungcad.training.tracked import train_tracked
from tests.conftest import TEST_PARAMS, make_tiny_dataset, tiny_train_config


@pytest.fixture(scope="module")
def folds(tmp_path_factory):
    """Two tracked fold trainings of different seeds under models/fold<k>."""
    tmp_path = tmp_path_factory.mktemp("ensemble")
    dataset = make_tiny_dataset(tmp_path / "dataset")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
        runs = [
            train_tracked(
                tiny_train_config(epochs=2, seed=k, experiment="test-exp"),
                *dataset,
                tmp_path / "models" / f"fold{k}",
                progress=False,
            )
            for k in range(2)
        ]
        yield tmp_path, dataset, runs


def _cubes(dataset) -> np.ndarray:
    return np.load(dataset[0] / "cubes.npy")[:6].astype(np.float32)


def test_the_ensemble_outputs_are_its_members_means(folds) -> None:
    tmp_path, dataset, _ = folds
    checkpoint = build_fold_ensemble(tmp_path / "models", 2, tmp_path / "ens")
    model, config = load_model(checkpoint)
    assert isinstance(model, EnsembleNet) and len(model.members) == 2
    members = [load_model(p)[0] for p in fold_checkpoints(tmp_path / "models", 2)]
    cubes = _cubes(dataset)
    prob, mal, _, masks = predict_hu_cubes(
        model, cubes, config.window_hu, "cpu", named_outputs=True, masks=True
    )
    each = [predict_hu_cubes(m, cubes, config.window_hu, "cpu") for m in members]
    np.testing.assert_allclose(prob, np.mean([p for p, _ in each], axis=0), atol=1e-6)
    np.testing.assert_allclose(mal, np.mean([m for _, m in each], axis=0), atol=1e-5)
    assert not np.allclose(each[0][0], each[1][0])  # two different members
    # The outline: the members' mean mask probability.
    x = window_hu(torch.from_numpy(cubes[:, None]), config.window_hu)
    with torch.no_grad():
        mean_mask = torch.stack([torch.sigmoid(m(x, with_mask=True)[4]) for m in members]).mean(0)
        ensemble_mask = torch.sigmoid(model(x, with_mask=True)[4])
    torch.testing.assert_close(ensemble_mask, mean_mask, atol=1e-5, rtol=0)
    assert masks.shape == cubes.shape
    assert load_checkpoint(checkpoint)["selected"] == "mean of 2 fold models"


def test_the_ensembles_pyfunc_is_the_mean_of_its_members_pyfuncs(folds, monkeypatch) -> None:
    tmp_path, dataset, runs = folds
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    checkpoint = build_fold_ensemble(tmp_path / "models", 2, tmp_path / "ens-tracked")
    info = log_fold_ensemble(
        checkpoint, tmp_path / "models", 2, "test-exp", candidate=False, cube_size=32
    )
    cubes = _cubes(dataset)[:, None]
    out = mlflow.pyfunc.load_model(f"runs:/{info['run_id']}/model").predict(cubes)
    members = [mlflow.pyfunc.load_model(f"runs:/{r.run_id}/model").predict(cubes) for r in runs]
    mean = np.mean([m["nodule_prob"].to_numpy() for m in members], axis=0)
    np.testing.assert_allclose(out["nodule_prob"], mean, atol=1e-6)
    mean = np.mean([m["malignancy"].to_numpy() for m in members], axis=0)
    np.testing.assert_allclose(out["malignancy"], mean, atol=1e-5)
    assert list(out.columns) == list(members[0].columns)
    # The run: its members, their mean validation metric; no promotion candidate, since
    # these folds did not hold a test split out.
    run = MlflowClient().get_run(info["run_id"])
    assert run.data.tags["lungcad.members"] == ",".join(r.run_id for r in runs)
    assert "lungcad.has_model" not in run.data.tags
    vals = [r.result.best_metric for r in runs]
    assert run.data.metrics["best_val_metric"] == pytest.approx(np.mean(vals))
    saved = json.loads((checkpoint.parent / "ensemble_run.json").read_text())
    assert saved["run_id"] == info["run_id"] and saved["promotion_candidate"] is False


def test_a_held_out_ensemble_is_promoted_like_any_run(folds, monkeypatch) -> None:
    from lungcad.config import EvaluateConfig
    from lungcad.registry.promote import promote

    tmp_path, dataset, _ = folds
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    checkpoint = build_fold_ensemble(tmp_path / "models", 2, tmp_path / "ens-candidate")
    info = log_fold_ensemble(checkpoint, tmp_path / "models", 2, "test-exp", True, 32)
    assert MlflowClient().get_run(info["run_id"]).data.tags["lungcad.has_model"] == "true"
    decision = promote(
        *dataset,
        experiment="test-exp",
        run_id=info["run_id"],
        report_dir=tmp_path / "promotion",
        eval_config=EvaluateConfig(bootstrap=20),
    )
    assert decision.promoted and decision.candidate_run_id == info["run_id"]
    # The champion is the ensemble: its served outputs are the ensemble's.
    cubes = _cubes(dataset)[:, None]
    champion = mlflow.pyfunc.load_model("models:/lungcad@champion").predict(cubes)
    model, config = load_model(checkpoint)
    prob, _ = predict_hu_cubes(model, cubes, config.window_hu, "cpu")
    np.testing.assert_allclose(champion["nodule_prob"], prob, atol=1e-6)
    assert "nodule" in champion  # with the threshold chosen on validation


def test_the_ensembles_map_is_the_mean_of_its_members_maps(folds) -> None:
    tmp_path, dataset, _ = folds
    checkpoint = build_fold_ensemble(tmp_path / "models", 2, tmp_path / "ens-cam")
    model, config = load_model(checkpoint)
    cubes = _cubes(dataset)[:3]
    maps = CubeExplainer(model, config.window_hu, CamSettings())(cubes)
    each = [CubeExplainer(m, config.window_hu, CamSettings())(cubes) for m in model.members]
    mean = np.mean(each, axis=0)
    peak = mean.reshape(len(mean), -1).max(axis=1).reshape(-1, 1, 1, 1)
    np.testing.assert_allclose(maps, mean / peak, atol=1e-6)
    assert maps.shape == cubes.shape and np.allclose(maps.reshape(3, -1).max(axis=1), 1)


def test_members_that_cannot_form_one_model_are_named(folds) -> None:
    tmp_path, _, _ = folds
    one, two = fold_checkpoints(tmp_path / "models", 2)
    with pytest.raises(EnsembleError, match="at least 2 checkpoints, got 1"):
        write_ensemble([one], tmp_path / "x.pt")
    state = load_checkpoint(two)
    state["cut_settings"] = {**state["cut_settings"], "preprocess": {"spacing_mm": 0.7}}
    save_checkpoint(state, tmp_path / "other-cut.pt")
    with pytest.raises(EnsembleError, match=r"other-cut.pt was trained with other cube settings"):
        write_ensemble([one, tmp_path / "other-cut.pt"], tmp_path / "x.pt")
    nested = write_ensemble([one, two], tmp_path / "nested.pt")
    with pytest.raises(EnsembleError, match="nested.pt is already an ensemble"):
        write_ensemble([one, nested], tmp_path / "x.pt")
    with pytest.raises(EnsembleError, match=r"fold2/best.pt; run `dvc repro crossval"):
        fold_checkpoints(tmp_path / "models", 3)


def test_lungcad_explain_takes_the_ensemble_like_any_checkpoint(folds, tmp_path) -> None:
    from typer.testing import CliRunner

    from lungcad.cli.main import app

    root, dataset, _ = folds
    checkpoint = build_fold_ensemble(root / "models", 2, root / "ens-explain")
    params = tmp_path / "params.yaml"
    params.write_text("explain:\n  bootstrap: 20\n")
    out = tmp_path / "explain"
    args = ["explain", "--dataset", str(dataset[0]), "--splits", str(dataset[1])]
    args += ["--model", str(checkpoint), "--out", str(out), "--params", str(params)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "detection" in json.loads((out / "metrics.json").read_text())
    # every test cube explained, by the ensemble: its own nodule probability
    explained = pd.read_csv(out / "cubes.csv").sort_values("cube_index")
    model, config = load_model(checkpoint)
    cubes = np.load(dataset[0] / "cubes.npy")[explained["cube_index"].to_numpy()]
    prob, _ = predict_hu_cubes(model, cubes, config.window_hu, "cpu")
    np.testing.assert_allclose(explained["nodule_prob"], prob, atol=1e-5)


def _evaluate(dataset, splits, model, out):
    """`lungcad evaluate` through the CLI, as a user runs it."""
    from typer.testing import CliRunner

    from lungcad.cli.main import app

    args = ["evaluate", "--dataset", str(dataset), "--splits", str(splits), "--model", str(model)]
    return CliRunner().invoke(app, [*args, "--out", str(out), "--params", str(TEST_PARAMS)])


def test_an_ensembles_threshold_comes_from_patients_no_member_saw(folds) -> None:
    """A fold ensemble records (as digests) every patient its members trained or chose an
    epoch on; evaluating it on a split whose val patients one of them saw is one line, not
    an optimistic threshold."""

    from lungcad.core.model.ensemble import patient_digest
    from lungcad.evaluation.cube_evaluation import threshold_patients_check

    tmp_path, dataset, _ = folds
    splits = json.loads(dataset[1].read_text())
    val = splits["val"]
    others = splits["train"] + splits["test"]
    fold_dir = tmp_path / "cv-folds"
    fold_dir.mkdir()
    for k, seen in enumerate((others[:2], others[2:])):
        doc = {"train": seen[1:], "val": seen[:1], "test": [val[0]] if k == 0 else []}
        (fold_dir / f"fold{k}.json").write_text(json.dumps(doc))
    checkpoint = build_fold_ensemble(tmp_path / "models", 2, tmp_path / "ens-seen", fold_dir)
    state = load_checkpoint(checkpoint)
    assert sorted(state["seen_patients_sha256"]) == sorted(map(patient_digest, others))
    assert not any(p in json.dumps(state["seen_patients_sha256"]) for p in others)
    rows = pd.DataFrame({"patient_id": val})
    assert "none of whom any member saw" in threshold_patients_check(checkpoint, rows)

    swapped = {**splits, "val": others[:1], "train": [*splits["train"], *val]}
    swapped["train"] = [p for p in swapped["train"] if p != others[0]]
    swapped["test"] = [p for p in splits["test"] if p != others[0]]
    (tmp_path / "swapped.json").write_text(json.dumps(swapped))
    result = _evaluate(dataset[0], tmp_path / "swapped.json", checkpoint, tmp_path / "eval-swapped")
    assert result.exit_code == 2, result.output
    assert (
        "its members trained on (or chose their epoch on) 1 of the val split's 1" in result.output
    )
    assert "Traceback" not in result.output


def test_an_evaluation_is_attached_to_the_run_that_trained_its_model(folds) -> None:
    """`lungcad evaluate --model <a fold's best.pt>` logs to that fold's run (its own
    train_run.json), never to the run of models/train_run.json beside the working folder."""

    tmp_path, dataset, runs = folds
    own = json.loads((tmp_path / "models/fold1/train_run.json").read_text())["run_id"]
    other = json.loads((tmp_path / "models/fold0/train_run.json").read_text())["run_id"]
    (tmp_path / "models/train_run.json").write_text(json.dumps({"run_id": other}))
    result = _evaluate(
        dataset[0], dataset[1], tmp_path / "models/fold1/best.pt", tmp_path / "eval-fold1"
    )
    assert result.exit_code == 0, result.output
    assert f"report attached to MLflow run {own}" in result.output
    client = MlflowClient()
    assert "test_detection_auc" in client.get_run(own).data.metrics
    assert "test_detection_auc" not in client.get_run(other).data.metrics
