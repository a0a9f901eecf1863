"""The fold models of a cross-validation as one model, logged to MLflow like a training run.

``build_fold_ensemble`` writes ``<out>/best.pt``, an ensemble checkpoint of every fold's
``best.pt`` (``lungcad.core.model.ensemble``); ``lungcad evaluate``, ``detect``,
``explain`` and ``serve`` take it like any checkpoint. ``log_fold_ensemble`` gives it an
MLflow run with the pyfunc model (the members' mean), the fold runs as its members, and
the mean of their validation metrics as ``best_val_metric``. It is tagged as a promotion
candidate (``lungcad.has_model``) only when the folds held the default split's val and
test patients out (``cv.holdout: default_split``): promotion compares candidates on that
val split and reports test, and an ensemble whose members trained on either would win
there unfairly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from lungcad.core.model.checkpoint import load_checkpoint
from lungcad.core.model.ensemble import EnsembleError, write_ensemble
from lungcad.core.outputs import write_text_atomic
from lungcad.core.splits import load_splits

RUN_INFO = "ensemble_run.json"


def fold_checkpoints(models: Path, n_folds: int) -> list[Path]:
    """``fold<k>/best.pt`` for k < n_folds; an EnsembleError names every missing one."""
    paths = [models / f"fold{k}" / "best.pt" for k in range(n_folds)]
    missing = [str(p) for p in paths if not p.is_file()]
    if missing:
        raise EnsembleError(
            f"fold model(s) missing: {', '.join(missing)}; run `dvc repro crossval/dvc.yaml`"
        )
    return paths


def build_fold_ensemble(models: Path, n_folds: int, out: Path, folds: Path | None = None) -> Path:
    """``out/best.pt``: the ensemble of the ``n_folds`` fold models under ``models``; with
    ``folds`` (``lungcad cv split``'s folder), it records every patient a member trained on
    or chose its epoch on (each fold's train and val), so ``lungcad evaluate`` refuses to
    fit its threshold on them."""
    checkpoints = fold_checkpoints(models, n_folds)
    seen = None
    if folds is not None:
        seen = set()
        for k in range(n_folds):
            path = folds / f"fold{k}.json"
            if not path.is_file():
                raise EnsembleError(f"{path} does not exist: run `lungcad cv split` first")
            splits = load_splits(path)
            seen.update(map(str, [*splits["train"], *splits["val"]]))
    out.mkdir(parents=True, exist_ok=True)
    return write_ensemble(checkpoints, out / "best.pt", f"mean of {n_folds} fold models", seen)


def log_fold_ensemble(
    checkpoint: Path,
    models: Path,
    n_folds: int,
    experiment: str,
    candidate: bool,
    cube_size: int = 64,
) -> dict[str, Any]:
    """One MLflow run for the ensemble (see the module docstring; its pyfunc takes cubes of
    ``cube_size``); writes ``ensemble_run.json`` beside the checkpoint and returns it."""
    import mlflow

    from lungcad.tracking.mlflow_run import ensure_experiment, setup_tracking, tracking_uri
    from lungcad.tracking.pyfunc import log_pyfunc_model

    setup_tracking()
    members = [
        json.loads((models / f"fold{k}" / "train_run.json").read_text())
        for k in range(n_folds)
        if (models / f"fold{k}" / "train_run.json").is_file()
    ]
    state = load_checkpoint(checkpoint)
    example = np.full((1, 1, *[cube_size] * 3), -1000.0, np.float32)  # air: no patient's cube
    val = [m["best_metric"] for m in members if m.get("best_metric") is not None]
    experiment_id = ensure_experiment(experiment)
    with mlflow.start_run(experiment_id=experiment_id, run_name=f"cv-ensemble-{n_folds}") as run:
        mlflow.set_tags(
            {
                "lungcad.kind": "fold-ensemble",
                "lungcad.members": ",".join(m["run_id"] for m in members),
                "lungcad.selected": state.get("selected", ""),
            }
        )
        mlflow.log_params(
            {
                "members": n_folds,
                "cv.holdout": "default_split" if candidate else "none",
                "train.window_hu": state["config"].get("window_hu"),
            }
        )
        if val:
            mlflow.log_metric("best_val_metric", float(np.mean(val)))
        mlflow.log_artifact(str(checkpoint), artifact_path="checkpoint")
        log_pyfunc_model(checkpoint, example)
        if candidate:
            mlflow.set_tag("lungcad.has_model", "true")
    info = {
        "run_id": run.info.run_id,
        "experiment_id": experiment_id,
        "tracking_uri": tracking_uri(),
        "members": [m["run_id"] for m in members],
        "best_metric": float(np.mean(val)) if val else None,
        "promotion_candidate": candidate,
    }
    write_text_atomic(checkpoint.parent / RUN_INFO, json.dumps(info, indent=2), "the run info")
    return info
