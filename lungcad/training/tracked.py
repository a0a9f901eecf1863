"""One tracked training run: data -> Trainer -> MLflow run with its full context and model."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import mlflow
import numpy as np

from lungcad.config import TrainConfig
from lungcad.core.dataset import CubeData, load_cube_data
from lungcad.core.outputs import write_text_atomic
from lungcad.distributed.ddp import DistContext
from lungcad.tracking.mlflow_run import (
    MlflowEpochLogger,
    dvc_data_hash,
    ensure_experiment,
    git_commit,
    log_params_flat,
    runtime_tags,
    tracking_uri,
)
from lungcad.tracking.pyfunc import log_pyfunc_model
from lungcad.training.telemetry import amp_dtype_name
from lungcad.training.trainer import Trainer, TrainResult

log = logging.getLogger(__name__)

RUN_INFO = "train_run.json"


@dataclass(frozen=True)
class TrackedRun:
    run_id: str
    experiment_id: str
    result: TrainResult


def _example_cube(data: CubeData) -> np.ndarray:
    val = data.subset("val")
    rows = val[val["label"] == 1] if (val["label"] == 1).any() else val
    return np.asarray(data.cubes[int(rows.iloc[0]["cube_index"])], dtype=np.float32)[None, None]


def train_tracked(
    config: TrainConfig,
    dataset_dir: str | Path,
    splits_file: str | Path,
    out_dir: str | Path,
    resume: bool = False,
    run_name: str | None = None,
    callbacks: list | None = None,
    nested: bool = False,
    parent_run_id: str | None = None,
    progress: bool = True,
    log_model: bool = True,
    on_run_start: Callable[[str], None] | None = None,
    dist: DistContext | None = None,
) -> TrackedRun:
    """Train with ``config`` and log everything to MLflow; writes ``<out>/train_run.json``.

    Args:
        config: training settings.
        dataset_dir, splits_file: the cube dataset and its patient splits.
        out_dir: checkpoints, best.pt, history.json and train_run.json.
        resume: continue from ``<out>/checkpoints/last.pt`` and its MLflow run.
        run_name: MLflow run name.
        callbacks: extra Trainer callbacks (e.g. Optuna pruning).
        nested: start the run nested under the active run (tuning trials).
        parent_run_id: the parent run when it is not active in this thread.
        progress: progress bars.
        log_model: log the pyfunc model (tuning trials skip it).
        on_run_start: called with the MLflow run id once the run is open (a tuning trial
            records it, so that the run can be closed if its worker dies).
        dist: this process's place in a torchrun group: only rank 0 opens the MLflow run,
            the other ranks train beside it and return an empty run id.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    data = load_cube_data(dataset_dir, splits_file)
    if dist is not None and not dist.is_main:
        trainer = Trainer(config, data, out_dir, callbacks, progress=False, dist=dist)
        return TrackedRun("", "", trainer.fit(resume=resume))
    experiment_id = ensure_experiment(config.experiment)
    trainer = Trainer(config, data, out_dir, progress=progress, dist=dist)
    previous = trainer.resumable_state() if resume else None
    run_id = (previous or {}).get("mlflow_run_id")
    with mlflow.start_run(
        run_id=run_id,
        experiment_id=experiment_id,
        run_name=run_name,
        nested=nested,
        parent_run_id=parent_run_id,
    ) as run:
        if run_id is None:
            log_params_flat(config.to_dict(), prefix="train.")
            fingerprint = Path(dataset_dir) / "fingerprint.json"
            if fingerprint.exists():
                log_params_flat(
                    json.loads(fingerprint.read_text()).get("preprocess", {}), prefix="preprocess."
                )
            counts = data.index.groupby("split")["label"].agg(["count", "sum"])
            mlflow.set_tags(
                {
                    "git_commit": git_commit(),
                    "dvc_data_md5": dvc_data_hash(dataset_dir),
                    "dataset_dir": str(dataset_dir),
                    **{
                        f"cubes_{s}": f"{int(r['count'])} ({int(r['sum'])} nodules)"
                        for s, r in counts.iterrows()
                    },
                    **runtime_tags(trainer.device),
                    "amp_dtype": amp_dtype_name(trainer.amp_dtype),
                    "data_on_device": str(trainer.data_on_device).lower(),
                    "world_size": str(trainer.dist.world_size),
                }
            )
        else:
            log.info("resuming MLflow run %s", run_id)
        trainer.extra_state["mlflow_run_id"] = run.info.run_id
        if on_run_start is not None:
            on_run_start(run.info.run_id)
        trainer.callbacks += [MlflowEpochLogger(), *(callbacks or [])]
        try:
            result = trainer.fit(resume=resume)
        except Exception as exc:  # say in the run why it ended (it is marked FAILED)
            tag = "pruned" if type(exc).__name__ == "TrialPruned" else "error"
            mlflow.set_tag(tag, f"{type(exc).__name__}: {exc}"[:5000])
            raise
        mlflow.log_artifact(str(result.best_checkpoint), artifact_path="checkpoint")
        mlflow.log_artifact(str(out_dir / "history.json"))
        if log_model:
            log_pyfunc_model(result.best_checkpoint, _example_cube(data))
            candidate = json.loads(Path(splits_file).read_text()).get("promotion_candidate", True)
            if candidate:
                mlflow.set_tag("lungcad.has_model", "true")
            else:  # a fold model whose folds covered the default test split
                mlflow.set_tag(
                    "lungcad.not_a_candidate",
                    f"{splits_file}: a cross-validation fold that trained on patients of the "
                    "default test split (cv.holdout: none)",
                )
        info = {
            "run_id": run.info.run_id,
            "experiment_id": experiment_id,
            "tracking_uri": tracking_uri(),
            "best_epoch": result.best_epoch,
            "best_metric": result.best_metric,
            "select_metric": config.select_metric,
            "selected": result.selected,
        }
        write_text_atomic(out_dir / RUN_INFO, json.dumps(info, indent=2), "the run info")
    return TrackedRun(run.info.run_id, experiment_id, result)
