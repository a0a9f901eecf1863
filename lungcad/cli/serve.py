"""`lungcad serve`: serve the champion with `mlflow models serve`, offline."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Annotated

import typer


def serve(
    model_uri: Annotated[
        str, typer.Option("--model-uri", help="Registered model to serve.")
    ] = "models:/lungcad@champion",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 5001,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Server processes.")] = 1,
) -> None:
    """Run `mlflow models serve -m MODEL --env-manager local` (no internet needed)."""
    from lungcad.tracking.mlflow_run import tracking_uri

    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(workers),
    ]
    typer.echo(" ".join(cmd))
    bin_dir = os.path.dirname(sys.executable)  # mlflow starts uvicorn by name from PATH
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    raise typer.Exit(subprocess.call(cmd, env=env))
