"""`lungcad evaluate`: test-split report of a trained model, attached to its MLflow run."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking, run_id_of
from lungcad.cli.options import Dataset, ParamsFile, Splits


def evaluate(
    dataset: Dataset = Path("data/processed"),
    splits: Splits = Path("data/splits.json"),
    model: Annotated[Path, typer.Option("--model", help="Checkpoint to evaluate.")] = Path(
        "models/best.pt"
    ),
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports"),
    params: ParamsFile = Path("params.yaml"),
    run_info: Annotated[
        Path | None,
        typer.Option(
            "--run-info",
            help="train_run.json naming the MLflow run to attach the report to (default: the "
            "one beside --model, the training that wrote it; none there: not attached).",
        ),
    ] = None,
) -> None:
    """Detection and malignancy metrics with patient-bootstrap CIs, baselines, plots, report."""

    from lungcad.config import load_params
    from lungcad.evaluation.cube_evaluation import evaluate_model
    from lungcad.tracking.mlflow_run import log_evaluation

    config = load_params(params).evaluate
    # A report belongs to the run that trained this model, never to another model's run.
    run_info = run_info if run_info is not None else model.parent / "train_run.json"
    run_id = run_id_of(run_info)
    if run_id is not None:
        require_tracking()
    if not model.is_file():
        fail(f"--model {model} does not exist: train one first (`dvc repro train`)")
    doc = evaluate_model(dataset, splits, model, out, config)
    if run_id is not None:
        log_evaluation(run_id, out, doc)
        typer.echo(f"report attached to MLflow run {run_id}")
    d, m = doc["detection"], doc["malignancy"]
    typer.echo(
        f"test: detection AUC {d['auc']:.3f} recall {d['recall']:.3f} F1 {d['f1']:.3f}; "
        f"malignancy MAE {m['mae']:.3f} Pearson {m['pearson']:.3f} -> {out / 'report.md'}"
    )
