"""The cross-validation pipeline end to end: `dvc repro crossval/dvc.yaml` with 2 folds on a
4-scan phantom (tiny network, 2 epochs): the folds, each fold's train, evaluate and detect
stage, and the out-of-fold report, its figures checked against the fold models themselves."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
import torch
import yaml

from tests.conftest import REPO, cube_detect_settings

pytestmark = pytest.mark.slow  # a DVC pipeline: phantom, preprocess, 2 x (train, evaluate, detect)


def _run(cwd: Path, *cmd: str) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1200)
    assert proc.returncode == 0, (" ".join(cmd), (proc.stdout + proc.stderr)[-4000:])
    return proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cv")
    shutil.copytree(
        REPO / "lungcad", root / "lungcad", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("dvc.yaml", "params.yaml", "crossval/dvc.yaml"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["phantom"]["scans"] = 4
    params["preprocess"].update(negatives_per_positive=2.0, candidate_negative_fraction=0.0)
    params["candidates"]["max_candidates"] = 10  # an untrained decoder's masks are slow to merge
    params["cv"]["folds"] = [0, 1]
    params["train"].update(
        epochs=2, batch_size=4, seg_cubes=0, channels_last=False, lambda_attr=0.0
    )
    params["train"]["model"].update(
        widths=[4, 8, 8, 16], feature_dim=16, decoder_widths=[8, 8, 4, 4], attributes=False
    )
    params["evaluate"]["bootstrap"] = 50
    params["detect"].update(bootstrap=50, threshold=0.5)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(root, "git", "init", "-q", ".")
    _run(root, sys.executable, "-m", "dvc", "init", "-q")
    _run(root, sys.executable, "-m", "dvc", "repro", "crossval/dvc.yaml")
    return root


def test_every_patient_is_tested_once_by_a_model_that_never_trained_on_it(project) -> None:
    folds = [json.loads((project / f"data/cv/fold{k}.json").read_text()) for k in (0, 1)]
    index = pd.read_csv(project / "data/processed/index.csv")
    assert sorted(folds[0]["test"] + folds[1]["test"]) == sorted(index["patient_id"].unique())
    for f in folds:
        assert not set(f["test"]) & (set(f["train"]) | set(f["val"]))
    oof = pd.read_csv(project / "reports/cv/summary/predictions.csv")
    assert len(oof) == len(index) and oof["cube_index"].is_unique
    for k, f in enumerate(folds):
        assert set(oof.loc[oof["fold"] == k, "patient_id"]) == set(f["test"])


def test_out_of_fold_predictions_are_each_fold_models_own(project) -> None:
    from lungcad.core.dataset import load_cube_data
    from lungcad.core.model.loading import load_model
    from lungcad.core.model.predict import predict_rows

    oof = pd.read_csv(project / "reports/cv/summary/predictions.csv")
    for k in (0, 1):
        data = load_cube_data(project / "data/processed", project / f"data/cv/fold{k}.json")
        model, config = load_model(project / f"models/cv/fold{k}/best.pt", torch.device("cpu"))
        own = predict_rows(
            model, data.cubes, data.subset("test"), config.window_hu, torch.device("cpu"), 8, None
        ).sort_values("cube_index")
        mine = oof[oof["fold"] == k].sort_values("cube_index")
        assert mine["cube_index"].tolist() == own["cube_index"].tolist()
        np.testing.assert_allclose(mine["nodule_prob"], own["nodule_prob"], atol=1e-5)
        np.testing.assert_allclose(mine["malignancy_pred"], own["malignancy_pred"], atol=1e-4)


def test_the_pooled_figures_cover_every_scan_and_fold(project) -> None:
    doc = json.loads((project / "reports/cv/summary/metrics.json").read_text())
    assert doc["n_folds"] == doc["folds_done"] == 2 and doc["n_patients"] == 4
    assert doc["detection"]["n_scans"] == 4 and not doc["missing"]
    # the pooled FROC counts every held-out scan's reference nodules, from both folds
    refs = sum(
        len(pd.read_csv(project / f"reports/cv/detect/fold{k}/annotations.csv")) for k in (0, 1)
    )
    assert doc["detection"]["n_nodules"] == refs > 0
    auc = doc["cubes"]["detection"]["auc"]
    low, high = doc["cubes"]["detection"]["ci95"]["auc"]
    assert 0 <= low <= auc <= high <= 1
    folds = pd.read_csv(project / "reports/cv/summary/folds.csv")
    assert folds["fold"].tolist() == [0, 1]
    assert folds["test_nodules"].sum() == doc["cubes"]["malignancy"]["n_nodules"]
    report = (project / "reports/cv/summary/report.md").read_text()
    assert "2 folds, out of fold" in report and "detection/froc.png" in report
    assert (project / "reports/cv/summary/detection/froc.png").is_file()
    # the report says why the pooled CPM is what it is, with the folds' own scales
    low, high = folds["threshold"].min(), folds["threshold"].max()
    assert f"run from {low:.3f} to {high:.3f}" in report
    assert "the scores are not recalibrated" in report


def test_one_mlflow_parent_run_holds_the_fold_runs(project) -> None:
    doc = json.loads((project / "reports/cv/summary/metrics.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    parent = client.get_run(doc["mlflow_parent_run"])
    assert parent.data.tags["lungcad.kind"] == "cross-validation"
    assert parent.data.metrics["oof_detection_auc"] == pytest.approx(
        doc["cubes"]["detection"]["auc"]
    )
    for k in (0, 1):
        run_id = json.loads((project / f"models/cv/fold{k}/train_run.json").read_text())["run_id"]
        tags = client.get_run(run_id).data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        # trained on patients of the default test split: never a promotion candidate
        assert (
            "lungcad.has_model" not in tags
            and "cv.holdout: none" in tags["lungcad.not_a_candidate"]
        )


def test_the_fold_ensemble_is_one_model_that_detects_like_any_other(project, tmp_path) -> None:
    from typer.testing import CliRunner

    from lungcad.cli.main import app
    from lungcad.core.model.checkpoint import load_checkpoint

    checkpoint = project / "models/ensemble/best.pt"
    state = load_checkpoint(checkpoint)
    assert [m["source"] for m in state["members"]] == [f"models/cv/fold{k}/best.pt" for k in (0, 1)]
    info = json.loads((project / "models/ensemble/ensemble_run.json").read_text())
    client = mlflow.MlflowClient(f"sqlite:///{project / 'mlflow.db'}")
    run = client.get_run(info["run_id"])
    folds = [
        json.loads((project / f"models/cv/fold{k}/train_run.json").read_text()) for k in (0, 1)
    ]
    assert run.data.tags["lungcad.members"] == ",".join(f["run_id"] for f in folds)
    # Its folds covered every patient (cv.holdout: none): not a promotion candidate.
    assert "lungcad.has_model" not in run.data.tags and not info["promotion_candidate"]
    out = tmp_path / "detect"
    # The cube detector: the candidates give the untrained members findings to explain,
    # where their maps hold none for the dense detector.
    params = tmp_path / "cubes.yaml"
    overlay = {"extends": str(project / "params.yaml"), "detect": cube_detect_settings()}
    params.write_text(yaml.safe_dump(overlay))
    args = ["detect", str(project / "data/raw/LIDC-IDRI"), "--model", str(checkpoint)]
    args += ["--out", str(out), "--splits", str(project / "data/cv/fold0.json"), "--split"]
    args += ["test", "--params", str(params), "--workers", "0", "--quiet"]
    args += ["--threshold", "0"]  # every finding reported, and explained (the members' maps)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    fold0 = json.loads((project / "data/cv/fold0.json").read_text())
    findings = pd.read_csv(out / "detections.csv")
    assert set(findings["patient_id"]) <= set(fold0["test"]) and len(findings) > 0
    scans = pd.read_csv(out / "scans.csv")
    assert (scans["status"] == "ok").all(), scans["reason"].tolist()
    assert list((out / "figures").glob("*_cam.png")) and list((out / "maps").glob("*.nii.gz"))


def test_a_second_repro_reruns_nothing(project) -> None:
    out = _run(project, sys.executable, "-m", "dvc", "status", "crossval/dvc.yaml")
    assert "up to date" in out, out


def test_a_fold_without_its_evaluation_is_named_and_left_out(project, tmp_path) -> None:
    from typer.testing import CliRunner

    from lungcad.cli.main import app

    evaluations = tmp_path / "evaluate"
    shutil.copytree(project / "reports/cv/evaluate/fold0", evaluations / "fold0")
    out = tmp_path / "summary"
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    args = ["cv", "report", "--folds", str(project / "data/cv"), "--models"]
    args += [str(project / "models/cv"), "--evaluations", str(evaluations), "--detections"]
    args += [str(project / "reports/cv/detect"), "--dataset", str(project / "data/processed")]
    args += ["--out", str(out), "--params", str(project / "params.yaml")]
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "metrics.json").read_text())
    fold0 = json.loads((project / "data/cv/fold0.json").read_text())
    assert doc["folds_done"] == 1 and doc["n_patients"] == len(fold0["test"])
    evaluate, store = doc["missing"]  # fold 1's evaluation; fold 0's run is in another store
    assert "fold1/predictions.csv is missing" in evaluate
    assert "not in this MLflow store" in store and "mlflow.db" in store
    assert "evaluate@1" in (out / "report.md").read_text()
    shutil.rmtree(evaluations / "fold0")
    result = CliRunner().invoke(app, args, env=env)
    assert result.exit_code == 2 and "no fold has its evaluation" in result.output
