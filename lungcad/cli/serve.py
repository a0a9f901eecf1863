"""`lungcad serve`: serve the champion with `mlflow models serve`, offline."""

from __future__ import annotations

import subprocess
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
    from lungcad.registry.serving import serve_command

    cmd, env = serve_command(model_uri, host, port, workers)
    typer.echo(" ".join(cmd))
    raise typer.Exit(subprocess.call(cmd, env=env))
