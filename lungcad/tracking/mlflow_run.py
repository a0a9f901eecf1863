"""MLflow tracking: where runs go, what context they carry, per-epoch logging.

Default tracking is ``sqlite:///mlflow.db`` with artifacts under ``mlruns/`` (both relative
to the working directory, the repo root for DVC stages), so ``mlflow ui`` started there
shows every run; ``MLFLOW_TRACKING_URI`` points lungcad at a remote server instead. Only
lungcad's own settings, versions and metrics are logged: no DICOM header field is.
"""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from mlflow.tracking import MlflowClient

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_ROOT = "mlruns"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


def setup_tracking() -> str:
    """Point MLflow at the configured store; returns the URI."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    return uri


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created with artifacts under ./mlruns if new."""
    setup_tracking()
    client = MlflowClient()
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    location = None
    if tracking_uri().startswith("sqlite:"):
        location = Path(ARTIFACT_ROOT).resolve().as_uri()
    return client.create_experiment(name, artifact_location=location)


def git_commit(repo: str | Path = ".") -> str:
    """HEAD commit, with "-dirty" when tracked files differ from it; "unknown" outside git."""
    try:
        sha = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=repo,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def dvc_data_hash(dataset_dir: str | Path, lock_file: str | Path = "dvc.lock") -> str:
    """The md5 DVC recorded for ``dataset_dir`` in dvc.lock ("untracked" if none)."""
    lock_path = Path(lock_file)
    if not lock_path.exists():
        return "untracked"
    lock = yaml.safe_load(lock_path.read_text()) or {}
    target = Path(dataset_dir).as_posix().rstrip("/")
    for stage in (lock.get("stages") or {}).values():
        for out in stage.get("outs", []):
            if out.get("path", "").rstrip("/") == target:
                return str(out.get("md5", "untracked"))
    return "untracked"


def runtime_tags(device: torch.device) -> dict[str, str]:
    tags = {
        "device": str(device),
        "torch_version": torch.__version__,
        "cuda_version": str(torch.version.cuda),
        "python_version": platform.python_version(),
    }
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        tags["gpu_name"] = props.name
        tags["gpu_memory_gb"] = f"{props.total_memory / 2**30:.1f}"
    return tags


def log_params_flat(params: dict[str, Any], prefix: str = "") -> None:
    """Log a nested dict as ``a.b`` params (MLflow values are strings, 6000 chars max)."""
    flat: dict[str, Any] = {}

    def walk(d: dict[str, Any], pre: str) -> None:
        for k, v in d.items():
            if isinstance(v, dict):
                walk(v, f"{pre}{k}.")
            else:
                flat[f"{pre}{k}"] = v

    walk(params, prefix)
    items = list(flat.items())
    for i in range(0, len(items), 100):  # MLflow's batch limit
        mlflow.log_params(dict(items[i : i + 100]))


class MlflowEpochLogger:
    """Trainer callback: per-epoch metrics with step = epoch."""

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        finite = {k: float(v) for k, v in metrics.items() if v == v}  # drop NaN
        mlflow.log_metrics(finite, step=epoch)

    def on_train_end(self, trainer, result) -> None:
        mlflow.log_metrics({"best_epoch": result.best_epoch, "best_val_metric": result.best_metric})


def log_evaluation(run_id: str, report_dir: str | Path, doc: dict[str, Any]) -> None:
    """Attach an evaluation (metrics.json document and report folder) to a finished run."""
    setup_tracking()
    metrics = {}
    for section in ("detection", "malignancy"):
        for key, value in doc[section].items():
            if isinstance(value, (int, float)) and value == value:
                metrics[f"test_{section}_{key}"] = float(value)
    metrics["test_threshold"] = float(doc["threshold"]["value"])
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(report_dir), artifact_path="evaluation")


def log_detection(run_id: str, report_dir: str | Path, metrics: dict[str, Any]) -> None:
    """Attach a whole-scan detection evaluation (FROC / CPM) to a finished run."""
    setup_tracking()
    values = {
        f"test_scan_{k}": float(v)
        for k, v in metrics.items()
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v
    }
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(values)
        mlflow.log_artifacts(str(report_dir), artifact_path="detection")


def log_explanation(run_id: str, explain_dir: str | Path, doc: dict[str, Any]) -> None:
    """Attach the heat-map checks (pointing game, sanity correlation) to a finished run,
    with metrics.json and the per-cube table (not the maps: they stay in the DVC cache)."""
    setup_tracking()
    metrics = {}
    for target in ("detection", "malignancy"):
        for method, values in doc[target].items():
            if not isinstance(values, dict):
                continue
            for key, value in values.items():
                if (
                    isinstance(value, (int, float))
                    and not isinstance(value, bool)
                    and value == value
                ):
                    metrics[f"explain_{target}_{method}_{key}"] = float(value)
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        for name in ("metrics.json", "cubes.csv"):
            mlflow.log_artifact(str(Path(explain_dir) / name), artifact_path="explain")
