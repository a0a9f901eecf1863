"""`lungcad tune`: Optuna sweep of lambda_det, lambda_mal and the learning rate."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking
from lungcad.cli.options import Dataset, ParamsFile, Splits


def tune(
    trials: Annotated[
        int | None,
        typer.Option("--trials", min=1, help="Trials in the study (all workers together)."),
    ] = None,
    dataset: Dataset = Path("data/processed"),
    splits: Splits = Path("data/splits.json"),
    params: ParamsFile = Path("params.yaml"),
    study_name: Annotated[
        str | None, typer.Option("--study-name", help="Resume or create this study.")
    ] = None,
    storage: Annotated[
        str | None,
        typer.Option(
            "--storage",
            help="journal:<file> (default, one machine) or an RDB URL (postgresql://…).",
        ),
    ] = None,
    timeout: Annotated[
        float | None,
        typer.Option("--timeout", min=1, help="Stop asking for trials after this many seconds."),
    ] = None,
    n_jobs: Annotated[
        int, typer.Option("--n-jobs", min=1, help="Trials run in parallel in this process.")
    ] = 1,
    epochs: Annotated[
        int | None, typer.Option("--epochs", min=1, help="Epochs per trial (tune.epochs).")
    ] = None,
) -> None:
    """Sweep loss weights and learning rate; each trial is a nested MLflow run."""
    from lungcad.config import load_params, with_changes
    from lungcad.core.dataset import load_cube_data
    from lungcad.tuning.study import run_study

    config = load_params(params)
    tune_config = with_changes(
        config.tune, "tune", trials=trials, study_name=study_name, storage=storage, epochs=epochs
    )
    load_cube_data(dataset, splits)  # fail before the study starts
    require_tracking()
    result = run_study(tune_config, config.train, dataset, splits, n_jobs=n_jobs, timeout_s=timeout)
    typer.echo(
        f"study {result.study_name}: {result.n_trials} trials {result.states} in "
        f"{result.seconds:.0f} s; parent MLflow run {result.parent_run_id}"
    )
    if result.best_params_file:
        typer.echo(f"best val objective {result.best_value:.4f} with {result.best_params}")
        typer.echo(f"apply them: lungcad apply-params {result.best_params_file} && dvc repro")


def apply_params(
    best: Annotated[
        Path, typer.Argument(help="YAML with sections to merge (tune/best_params.yaml).")
    ],
    params: ParamsFile = Path("params.yaml"),
) -> None:
    """Merge the keys of BEST into params.yaml, keeping its comments and order."""
    import io

    import yaml as plain_yaml
    from ruamel.yaml import YAML

    from lungcad.config import Params, validate_section
    from lungcad.core.outputs import write_text_atomic

    for path, hint in ((best, "run `lungcad tune` first"), (params, "pass --params")):
        if not path.is_file():
            fail(f"{path} does not exist: {hint}")
    yaml = YAML()
    target = yaml.load(params.read_text())
    for section, values in (yaml.load(best.read_text()) or {}).items():
        target.setdefault(section, {})
        for key, value in values.items():
            target[section][key] = value
            typer.echo(f"{section}.{key} = {value}")
    text = io.StringIO()
    yaml.dump(target, text)
    # the merged file must be valid before it replaces the old one
    validate_section(Params, plain_yaml.safe_load(text.getvalue()) or {}, str(params), "")
    write_text_atomic(params, text.getvalue(), "the params file")
    typer.echo(f"updated {params}")
