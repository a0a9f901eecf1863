"""A tracked run holds its params, per-epoch metrics, report and a working pyfunc model."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from mlflow.tracking import MlflowClient

from lungcad.config import EvaluateConfig
from lungcad.core.findings.cube import CUBE_FINDING_COLUMNS
from lungcad.core.model.attributes import ATTRIBUTES
from lungcad.core.model.loading import load_model
from lungcad.core.model.network import SPREAD_FLOOR
from lungcad.core.model.predict import predict_hu_cubes
from lungcad.evaluation.cube_evaluation import evaluate_model
from lungcad.tracking.mlflow_run import log_evaluation
from lungcad.training.tracked import train_tracked
from tests.conftest import make_tiny_dataset, tiny_train_config


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("tracked")
    tiny_dataset = make_tiny_dataset(tmp_path / "dataset")
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp_path)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
        # Both optional heads: the attributes and the readers' spread.
        model = {"widths": [4, 8, 8, 16], "feature_dim": 16, "attributes": True, "spread": True}
        config = tiny_train_config(epochs=2, experiment="test-exp", lambda_attr=0.5, model=model)
        run = train_tracked(config, *tiny_dataset, tmp_path / "models", progress=False)
        doc = evaluate_model(
            *tiny_dataset,
            tmp_path / "models" / "best.pt",
            tmp_path / "reports",
            EvaluateConfig(bootstrap=50),
        )
        log_evaluation(run.run_id, tmp_path / "reports", doc)
        yield run, tmp_path, tiny_dataset


def _artifact_paths(client: MlflowClient, run_id: str, path: str = "") -> set[str]:
    out = set()
    for item in client.list_artifacts(run_id, path):
        out.add(item.path)
        if item.is_dir:
            out |= _artifact_paths(client, run_id, item.path)
    return out


def test_run_has_params_tags_epoch_metrics_report_and_model(tracked, monkeypatch) -> None:
    run, tmp_path, _ = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    client = MlflowClient()
    data = client.get_run(run.run_id).data
    assert (
        data.params["train.lr"] == "0.003" and data.params["train.model.widths"] == "[4, 8, 8, 16]"
    )
    assert data.params["train.lambda_det"] == "1.0"
    for tag in ("git_commit", "dvc_data_md5", "device", "torch_version", "cuda_version"):
        assert tag in data.tags
    assert data.tags["device"] == "cpu"
    assert data.tags["amp_dtype"] == "fp32"  # the resolved dtype: amp=auto is fp32 on a CPU
    assert data.tags["data_on_device"] == "true"  # the tiny cube set fits in RAM
    metrics = ("train_loss", "train_loss_det", "train_loss_mal", "val_auc", "val_mae", "lr")
    for metric in (*metrics, "train_cubes_per_s", "epoch_train_s", "epoch_val_s"):
        history = client.get_metric_history(run.run_id, metric)
        assert [m.step for m in history] == [1, 2], metric
    assert data.metrics["train_cubes_per_s"] > 0
    assert "test_detection_auc" in data.metrics and "test_malignancy_mae" in data.metrics
    assert "test_spread_mean_z2" in data.metrics and "test_attr_texture_mae" in data.metrics
    artifacts = _artifact_paths(client, run.run_id)
    assert {
        "evaluation/report.md",
        "evaluation/metrics.json",
        "evaluation/figures/confusion.png",
        "checkpoint/best.pt",
        "history.json",
    } <= artifacts
    assert (tmp_path / "mlruns").is_dir()  # artifacts live under ./mlruns
    # No DICOM header field leaks into the run: patient ids appear nowhere in params/tags.
    assert not any("LIDC-IDRI" in str(v) for v in {**data.params, **data.tags}.values())


def test_pyfunc_model_gives_the_torch_model_outputs(tracked, monkeypatch) -> None:
    run, tmp_path, (dataset_dir, _) = tracked
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.chdir(tmp_path)
    uri = f"runs:/{run.run_id}/model"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path / "dl")))
    assert not list(local.rglob("*.pkl"))  # logged from code: no pickled Python object
    assert (local / "artifacts" / "best.pt").exists()
    pyfunc = mlflow.pyfunc.load_model(uri)
    spec = pyfunc.metadata.get_input_schema().inputs[0]
    assert spec.type == np.dtype(np.float32) and spec.shape == (-1, 1, 32, 32, 32)
    cubes = np.load(dataset_dir / "cubes.npy")[:6].astype(np.float32)[:, None]
    out = pyfunc.predict(cubes)
    # the attributes on their LIDC scales, then the spread: as in detections.csv
    named = [f"attr_{a.name}" for a in ATTRIBUTES] + ["attr_malignancy_sd"]
    model, config = load_model(tmp_path / "models" / "best.pt")
    # the outlined nodule's sizes, type and Lung-RADS category, with the segmentation head
    found = list(CUBE_FINDING_COLUMNS) if model.segments else []
    assert list(out.columns) == ["nodule_prob", "malignancy", *named, *found] and len(out) == 6
    outputs = [c.name for c in pyfunc.metadata.get_output_schema().inputs]
    assert outputs == ["nodule_prob", "malignancy", *named, *found]
    assert out["lung_rads"].isin(["0", "2", "3", "4A", "4B"]).all() if found else True
    prob, mal, extra = predict_hu_cubes(
        model, cubes, config.window_hu, torch.device("cpu"), named_outputs=True
    )
    np.testing.assert_allclose(out["nodule_prob"], prob, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["malignancy"], mal, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out[named].to_numpy(), extra, rtol=1e-5, atol=1e-5)
    for a in ATTRIBUTES:
        assert out[f"attr_{a.name}"].between(a.low, a.high).all(), a.name
    assert (out["attr_malignancy_sd"] >= SPREAD_FLOOR).all()
    explained = pyfunc.predict(cubes, params={"explain": True})
    assert list(explained.columns) == [
        "nodule_prob",
        "malignancy",
        *named,
        *found,
        "detection_map",
    ]
    np.testing.assert_allclose(explained["nodule_prob"], prob, rtol=1e-5, atol=1e-6)
    maps = np.array(explained["detection_map"].tolist())
    assert maps.shape == (6, 8, 8, 8) and maps.max() <= 1.0 and (maps.max(axis=(1, 2, 3)) > 0).any()
    # In-process (a notebook, a batch job) any number of cubes goes in one call; the
    # 32-cube limit belongs to `lungcad serve` (tests/hardening/test_hostile_requests.py).
    many = np.resize(cubes, (50, *cubes.shape[1:]))
    out = pyfunc.predict(many)
    prob, _ = predict_hu_cubes(model, many, config.window_hu, torch.device("cpu"))
    assert len(out) == 50
    np.testing.assert_allclose(out["nodule_prob"], prob, rtol=1e-5, atol=1e-6)


def test_evaluation_outputs(tracked) -> None:
    _, tmp_path, _ = tracked
    reports = tmp_path / "reports"
    import json

    doc = json.loads((reports / "metrics.json").read_text())
    for key in ("auc", "accuracy", "f1", "precision", "recall", "specificity"):
        assert key in doc["detection"] and key in doc["detection"]["ci95"]
    for key in ("mae", "rmse", "pearson", "spearman", "binary_auc"):
        assert key in doc["malignancy"]
    assert doc["reference_real_lidc"]["detection"]["auc"] == 0.906
    for name in ("roc.csv", "pr.csv", "confusion.csv", "malignancy.csv", "calibration.csv"):
        assert (reports / "plots" / name).exists(), name
    report = (reports / "report.md").read_text()
    assert "semantic oracle" in report and "figures/roc_pr.png" in report
    # The optional heads are evaluated: attributes against the train mean, the spread's
    # calibration against the readers' spread, with its figure.
    assert doc["attributes_test"]["n_beating_train_mean"] >= 0
    spread = doc["spread_test"]
    assert spread["n"] == doc["malignancy"]["n_nodules"] and spread["mean_pred_sd"] >= 0.1
    assert sum(r["n"] for r in spread["reliability"]) == spread["n"]
    assert "## Readers' spread" in report and (reports / "figures/malignancy_spread.png").exists()
