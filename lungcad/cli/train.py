"""`lungcad train`: one tracked training run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail
from lungcad.cli.options import Dataset, ParamsFile, Quiet, Splits


def train(
    dataset: Dataset = Path("data/processed"),
    splits: Splits = Path("data/splits.json"),
    out: Annotated[
        Path, typer.Option("--out", help="Checkpoints, best.pt, train_run.json.")
    ] = Path("models"),
    params: ParamsFile = Path("params.yaml"),
    resume: Annotated[
        bool, typer.Option("--resume", help="Continue from <out>/checkpoints/last.pt.")
    ] = False,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Override train.epochs.")
    ] = None,
    device: Annotated[
        str | None, typer.Option("--device", help="Override train.device (auto/cpu/cuda).")
    ] = None,
    run_name: Annotated[str | None, typer.Option("--run-name", help="MLflow run name.")] = None,
    quiet: Quiet = False,
) -> None:
    """Train the multi-task 3D CNN; every epoch is checkpointed and logged to MLflow."""
    from lungcad.outputs import OutputError
    from lungcad.training.config import TrainConfig
    from lungcad.training.data import DatasetMissingError
    from lungcad.training.run import train_tracked
    from lungcad.training.trainer import BatchTooLargeError, NonFiniteLossError

    try:
        config = TrainConfig.from_params(params) if params.exists() else TrainConfig()
        overrides = {k: v for k, v in {"epochs": epochs, "device": device}.items() if v is not None}
        if overrides:
            config = config.replace(**overrides)
    except ValueError as exc:
        fail(f"{params}: {exc}")
    try:
        run = train_tracked(
            config, dataset, splits, out, resume=resume, run_name=run_name, progress=not quiet
        )
    except (
        DatasetMissingError,
        NonFiniteLossError,
        BatchTooLargeError,
        OutputError,
        ValueError,
    ) as exc:
        fail(str(exc))
    r = run.result
    typer.echo(
        f"best epoch {r.best_epoch} ({config.select_metric}={r.best_metric:.4f}) -> "
        f"{r.best_checkpoint}; MLflow run {run.run_id}"
    )
