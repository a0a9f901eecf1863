"""MLflow tracking: where runs go, what context they carry, per-epoch logging.

Default tracking is ``sqlite:///mlflow.db`` with artifacts under ``mlruns/`` (both relative
to the working directory, the repo root for DVC stages), so ``mlflow ui`` started there
shows every run; ``MLFLOW_TRACKING_URI`` points lungcad at a remote server instead
(``http://host:5000``, see the README's team setup) and ``check_tracking`` says at once, with
the password hidden, when it cannot be reached. Several commands starting at once on a new
local ``mlflow.db`` create it one after the other (a file lock), since two concurrent schema
migrations of one SQLite file fail. Only lungcad's own settings, versions and metrics are
logged: no DICOM header field is.
"""

from __future__ import annotations

import os
import platform
import subprocess
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import mlflow
import torch
import yaml
from filelock import FileLock
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lungcad.errors import LungcadError

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
ARTIFACT_ROOT = "mlruns"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI", DEFAULT_TRACKING_URI)


#: Seconds ``check_tracking`` waits for a server or database to answer.
CHECK_TIMEOUT_S = 10.0
_READY: set[str] = set()


class TrackingUnreachableError(LungcadError, RuntimeError):
    """The tracking server or database does not answer; the message names it (no password)."""


def redact_uri(uri: str) -> str:
    """``uri`` (a tracking URI, a database or storage URL) with any password replaced by
    ``***``, fit for messages, logs, MLflow and bug reports; a URL that does not parse keeps
    only its scheme."""
    try:
        parts = urllib.parse.urlsplit(uri)
        if parts.password is None:
            return uri
        netloc = f"{parts.username}:***@{parts.hostname or ''}"
        netloc += f":{parts.port}" if parts.port else ""
    except ValueError:  # e.g. a port that is not a number
        return uri.split("://", 1)[0] + "://***" if "://" in uri else uri
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def _sqlite_lock(uri: str) -> FileLock | None:
    path = uri[len("sqlite:///") :] if uri.startswith("sqlite:///") else ""
    return FileLock(f"{path}.lock") if path and path != ":memory:" else None


def _with_store_lock(uri: str, action):
    """``action()`` under the local SQLite store's file lock (no lock for other stores)."""
    lock = _sqlite_lock(uri)
    if lock is None:
        return action()
    with lock:
        return action()


def setup_tracking() -> str:
    """Point MLflow at the configured store, creating a new local SQLite store under a file
    lock (its schema migration is not safe to run twice at once); returns the URI."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    if uri not in _READY and _sqlite_lock(uri) is not None:
        _with_store_lock(uri, lambda: MlflowClient(uri).search_experiments(max_results=1))
    _READY.add(uri)
    return uri


def check_tracking(uri: str | None = None, timeout_s: float = CHECK_TIMEOUT_S) -> str:
    """Fail fast when the tracking server (``http(s)://``) or database (``postgresql://``,
    ``mysql://``, ...) does not answer within ``timeout_s``; local stores pass.

    Returns:
        The URI with its password hidden.

    Raises:
        TrackingUnreachableError: naming the URI (password hidden) and what to check.
    """
    uri = uri or tracking_uri()
    shown = redact_uri(uri)
    scheme = urllib.parse.urlsplit(uri).scheme.split("+")[0]
    try:
        if scheme in ("http", "https"):
            parts = urllib.parse.urlsplit(uri)
            netloc = (parts.hostname or "") + (f":{parts.port}" if parts.port else "")
            health = urllib.parse.urlunsplit((parts.scheme, netloc, "/health", "", ""))
            with urllib.request.urlopen(health, timeout=timeout_s) as answer:
                if answer.status != 200:
                    raise OSError(f"HTTP {answer.status} from {health}")
        elif scheme in ("postgresql", "mysql", "mssql"):
            import sqlalchemy

            args = {"connect_timeout": int(timeout_s)}
            engine = sqlalchemy.create_engine(uri, connect_args=args)
            try:
                with engine.connect():
                    pass
            finally:
                engine.dispose()
    except Exception as exc:  # any failure to connect: say which URI and stop
        reason = str(exc).replace(uri, shown).splitlines()[0] if str(exc) else type(exc).__name__
        raise TrackingUnreachableError(
            f"MLflow tracking at {shown} is unreachable ({reason[:300]}): start the server or "
            "database, or set MLFLOW_TRACKING_URI to one that runs (unset: local "
            f"{DEFAULT_TRACKING_URI})"
        ) from None
    return shown


def ensure_experiment(name: str) -> str:
    """Id of experiment ``name``, created with artifacts under ./mlruns if new (when two
    commands create it at once, both get the same experiment)."""
    uri = setup_tracking()
    client = MlflowClient()

    def get_or_create() -> str:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        location = None
        if uri.startswith("sqlite:"):
            location = Path(ARTIFACT_ROOT).resolve().as_uri()
        try:
            return client.create_experiment(name, artifact_location=location)
        except MlflowException:  # created meanwhile by another command on a shared server
            experiment = client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    return _with_store_lock(uri, get_or_create)


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
        mlflow.set_tag("lungcad.selected", result.selected)


def log_evaluation(run_id: str, report_dir: str | Path, doc: dict[str, Any]) -> None:
    """Attach an evaluation (metrics.json document and report folder) to a finished run."""
    setup_tracking()
    metrics = {}
    for section in ("detection", "malignancy"):
        for key, value in doc[section].items():
            if isinstance(value, (int, float)) and value == value:
                metrics[f"test_{section}_{key}"] = float(value)
    metrics["test_threshold"] = float(doc["threshold"]["value"])
    for name, values in doc.get("attributes_test", {}).items():
        if isinstance(values, dict):
            for key in ("mae", "spearman", "train_mean_mae"):
                if values[key] == values[key]:
                    metrics[f"test_attr_{name}_{key}"] = float(values[key])
    for key, value in (doc.get("spread_test") or {}).items():
        if isinstance(value, (int, float)) and value == value:
            metrics[f"test_spread_{key}"] = float(value)
    for key, value in (doc.get("segmentation_test") or {}).items():
        if isinstance(value, (int, float)) and value == value:
            metrics[f"test_seg_{key}"] = float(value)
    for baseline, diff in doc.get("cnn_minus_baseline_test", {}).items():
        for key, value in diff.items():
            if key.endswith("_diff") and value == value:
                metrics[f"test_malignancy_{key}_vs_{baseline}"] = float(value)
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
    for k, v in (metrics.get("per_nodule") or {}).items():  # duplicates, size error
        if isinstance(v, (int, float)) and not isinstance(v, bool) and v == v:
            values[f"test_scan_nodule_{k}"] = float(v)
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


def log_cross_validation(
    experiment: str, fold_run_ids: list[str], report_dir: str | Path, doc: dict[str, Any]
) -> tuple[str, list[str]]:
    """One parent run holding a cross-validation's out-of-fold metrics and report, with the
    fold runs nested under it (MLflow's ``mlflow.parentRunId`` tag). Returns its id and the
    fold runs this tracking store does not hold (left unnested)."""
    setup_tracking()
    experiment_id = ensure_experiment(experiment)
    metrics = {}
    for section, values in (
        ("oof_detection", doc["cubes"]["detection"]),
        ("oof_malignancy", doc["cubes"]["malignancy"]),
        ("oof_scan", doc["detection"]),
    ):
        for key, value in values.items():
            if isinstance(value, (int, float)) and not isinstance(value, bool) and value == value:
                metrics[f"{section}_{key}"] = float(value)
    client = MlflowClient()
    absent = []
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"cv-{doc['n_folds']}-folds"
    ) as run:
        mlflow.set_tags({"lungcad.kind": "cross-validation", "lungcad.folds": doc["n_folds"]})
        mlflow.log_metrics(metrics)
        mlflow.log_artifacts(str(report_dir), artifact_path="cross_validation")
        for run_id in fold_run_ids:
            try:
                client.set_tag(run_id, "mlflow.parentRunId", run.info.run_id)
            except MlflowException:
                absent.append(run_id)
    return run.info.run_id, absent
