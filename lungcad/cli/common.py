"""Helpers shared by the commands: failing with a clear message."""

from __future__ import annotations

from pathlib import Path

import typer


def fail(message: str, code: int = 2) -> None:
    """Print ``error: message`` in red on stderr and exit with ``code``."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=code)


def require_tracking() -> None:
    """Exit with one clear line when the MLflow tracking server or database is unreachable
    (before any work starts)."""
    from lungcad.tracking.mlflow_run import TrackingUnreachableError, check_tracking

    try:
        check_tracking()
    except TrackingUnreachableError as exc:
        fail(str(exc))


def require_tracking_for(model: object) -> None:
    """``require_tracking`` when ``model`` is a registry reference (``models:/``, ``runs:/``)
    or absent (the default is the registry's champion): its server must answer."""
    if model is None or str(model).startswith(("models:/", "runs:/")):
        require_tracking()


def run_id_of(run_info: Path | None) -> str | None:
    """The MLflow run id a ``train_run.json`` names (``lungcad train`` writes it beside the
    model), None when there is no such file; exits with one clear line when the file is not
    one (before any work starts)."""
    import json

    if run_info is None or not run_info.exists():
        return None
    try:
        run_id = json.loads(run_info.read_text())["run_id"]
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
        run_id = None
    if not isinstance(run_id, str) or not run_id:
        fail(
            f"--run-info {run_info} is not a train_run.json (JSON naming a run_id): point it "
            "at the one `lungcad train` wrote beside the model, or leave it out"
        )
    return run_id
