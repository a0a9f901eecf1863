"""Log a realism report to MLflow (experiment ``lungcad-realism``)."""

from __future__ import annotations

from pathlib import Path

import mlflow

from lungcad.tracking.mlflow_run import ensure_experiment

EXPERIMENT = "lungcad-realism"


def _flat(prefix: str, value: object, out: dict[str, float]) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            _flat(f"{prefix}.{k}" if prefix else str(k), v, out)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        out[prefix] = float(value)


def log_realism(report_dir: Path, metrics: dict) -> str:
    """One run with every numeric figure of the report and its files; returns the run id."""
    flat: dict[str, float] = {}
    for key in ("real", "phantom_all", "phantom_same_spacing", "phantom_paired", "wasserstein_hu"):
        _flat(key, metrics.get(key, {}), flat)
    _flat("domain", metrics["domain_classifier"], flat)
    _flat("domain_population", metrics["domain_classifier_population"], flat)
    with mlflow.start_run(experiment_id=ensure_experiment(EXPERIMENT), run_name="realism") as run:
        mlflow.log_metrics(flat)
        mlflow.log_artifacts(str(report_dir), artifact_path="realism")
    return run.info.run_id
