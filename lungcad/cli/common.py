"""Helpers shared by the commands: failing with a clear message."""

from __future__ import annotations

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
