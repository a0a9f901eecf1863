"""`lungcad promote`: register the best run as the champion, unless it is worse."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking, run_id_of
from lungcad.cli.options import Dataset, ParamsFile, Splits


def promote(
    dataset: Dataset = Path("data/processed"),
    splits: Splits = Path("data/splits.json"),
    params: ParamsFile = Path("params.yaml"),
    run_id: Annotated[
        str | None, typer.Option("--run-id", help="Promote this run instead of the best.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Replace the champion even if the candidate is worse.")
    ] = False,
    out: Annotated[
        Path, typer.Option("--out", help="Decision and candidate report folder.")
    ] = Path("reports/promotion"),
    detection_metrics: Annotated[
        Path | None,
        typer.Option(
            "--detection-metrics",
            help="metrics.json of `lungcad evaluate-detection` on models/best.pt: its CPM "
            "becomes a tag of the new version when that model's run is the one promoted.",
        ),
    ] = None,
    run_info: Annotated[
        Path, typer.Option("--run-info", help="train_run.json of the detection's model.")
    ] = Path("models/train_run.json"),
) -> None:
    """Evaluate the candidate and the champion on the test split; register the better one."""

    from lungcad.config import EvaluateConfig, load_params
    from lungcad.registry.promote import promote as run_promotion
    from lungcad.registry.promote import write_decision
    from lungcad.tracking.mlflow_run import setup_tracking

    config = load_params(params)
    require_tracking()
    setup_tracking()
    detection = None
    if detection_metrics is not None:
        import json

        if not detection_metrics.is_file() or not run_info.is_file():
            fail(f"--detection-metrics {detection_metrics} or --run-info {run_info}: no such file")
        try:
            metrics = json.loads(detection_metrics.read_text())
        except (OSError, UnicodeDecodeError, ValueError):
            metrics = None
        if not isinstance(metrics, dict):
            fail(
                f"--detection-metrics {detection_metrics} is not a metrics.json of "
                "`lungcad evaluate-detection`: point it at the one that command wrote"
            )
        detection = (run_id_of(run_info), metrics)
    try:
        decision = run_promotion(
            dataset,
            splits,
            experiment=config.train.experiment,
            criterion=config.promote.criterion,
            run_id=run_id,
            force=force,
            report_dir=out,
            eval_config=EvaluateConfig(
                bootstrap=config.promote.bootstrap, seed=config.evaluate.seed
            ),
            detection=detection,
        )
    except (LookupError, FileNotFoundError) as exc:
        fail(str(exc))
    write_decision(decision, out / "decision.json")
    color = typer.colors.GREEN if decision.promoted else typer.colors.YELLOW
    typer.secho(
        ("promoted: " if decision.promoted else "not promoted: ") + decision.reason, fg=color
    )
