"""`lungcad train`: one tracked training run (one process, or several under torchrun)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking
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
    nproc: Annotated[
        int,
        typer.Option(
            "--nproc",
            min=1,
            help="Processes on this machine (one per GPU; gloo on CPUs): runs this command "
            "under torchrun with DistributedDataParallel. train.batch_size is per process.",
        ),
    ] = 1,
    quiet: Quiet = False,
) -> None:
    """Train the multi-task 3D CNN; every epoch is checkpointed and logged to MLflow."""
    from lungcad.config import load_params, with_changes
    from lungcad.distributed.ddp import destroy_process_group, init_process_group, launch
    from lungcad.errors import LungcadError
    from lungcad.training.tracked import train_tracked

    config = with_changes(load_params(params).train, "train", epochs=epochs, device=device)
    if int(os.environ.get("RANK", 0)) == 0:
        require_tracking()  # before any process starts training
    if nproc > 1 and "WORLD_SIZE" not in os.environ:
        import torch

        gpus = torch.cuda.device_count() if config.device != "cpu" else 0
        if gpus and nproc > gpus:
            fail(f"--nproc {nproc} but this machine has {gpus} GPU(s): one process per GPU")
        argv = ["train", "--dataset", str(dataset), "--splits", str(splits), "--out", str(out)]
        argv += ["--params", str(params)]
        argv += ["--resume"] if resume else []
        argv += ["--epochs", str(epochs)] if epochs is not None else []
        argv += ["--device", device] if device is not None else []
        argv += ["--run-name", run_name] if run_name is not None else []
        argv += ["--quiet"] if quiet else []
        code = launch(nproc, argv)
        if code:
            fail(
                f"distributed training failed (torchrun exit {code}; the failing rank's "
                f"error is above); continue with --resume from {out}/checkpoints/last.pt",
                code,
            )
        return
    try:
        dist = init_process_group(config.device)
        run = train_tracked(
            config,
            dataset,
            splits,
            out,
            resume=resume,
            run_name=run_name,
            progress=not quiet,
            dist=dist,
        )
    except LungcadError as exc:
        fail(f"rank {os.environ['RANK']}: {exc}" if "RANK" in os.environ else str(exc))
    finally:
        destroy_process_group()
    if not dist.is_main:
        return
    r = run.result
    typer.echo(
        f"{r.selected} ({config.select_metric}={r.best_metric:.4f}; best epoch "
        f"{r.best_epoch}) -> {r.best_checkpoint}; MLflow run {run.run_id}"
    )
