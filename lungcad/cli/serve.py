"""`lungcad serve`: serve the champion (MLflow's scoring protocol, guarded), offline;
`lungcad query`."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking_for
from lungcad.cli.options import ParamsFile


def serve(
    model_uri: Annotated[
        str, typer.Option("--model-uri", help="Registered model to serve.")
    ] = "models:/lungcad@champion",
    port: Annotated[int, typer.Option("--port", "-p", help="Port to listen on.")] = 5001,
    host: Annotated[str, typer.Option("--host", help="Interface to bind.")] = "127.0.0.1",
    workers: Annotated[int, typer.Option("--workers", "-w", min=1, help="Server processes.")] = 1,
    max_body_mb: Annotated[
        float | None,
        typer.Option(
            "--max-body-mb",
            min=0.001,
            help="Larger request bodies get 413 unread (default: limits.serve.max_body_bytes).",
        ),
    ] = None,
    params: ParamsFile = Path("params.yaml"),
) -> None:
    """Serve MODEL over HTTP: MLflow's scoring server (/invocations, /ping, the protocol of
    `mlflow models serve`) behind a guard: the request limits of limits.serve (body size,
    cubes, decoded size, JSON depth), no stack traces in answers."""
    from lungcad.config import load_params, with_changes
    from lungcad.registry.serve_command import serve_command

    limits = load_params(params).limits.serve
    if max_body_mb is not None:
        limits = with_changes(limits, "limits.serve", max_body_bytes=int(max_body_mb * 1024**2))
    require_tracking_for(model_uri)

    cmd, env = serve_command(model_uri, host, port, workers, limits)
    typer.echo(" ".join(cmd))
    raise typer.Exit(subprocess.call(cmd, env=env))


def query(
    cubes: Annotated[
        Path,
        typer.Argument(help="A .npy of HU cubes, (N, 64, 64, 64) or (N, 1, 64, 64, 64)."),
    ],
    url: Annotated[str, typer.Option("--url", help="The served model.")] = "http://127.0.0.1:5001",
    encoding: Annotated[
        str, typer.Option("--encoding", help="Request body: parquet (compact) or json.")
    ] = "parquet",
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Cubes per request.")] = 16,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="Send only the first N cubes.")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Write the predictions as CSV here.")
    ] = None,
) -> None:
    """Send cubes to a served model and print (or write) its predictions."""
    import numpy as np

    from lungcad.registry.client import CONTENT_TYPES, ServingError, predict_remote

    if encoding not in CONTENT_TYPES:
        fail(f"--encoding {encoding!r}: use one of {', '.join(CONTENT_TYPES)}")
    try:
        array = np.load(cubes, mmap_mode="r")
    except (OSError, ValueError) as exc:
        fail(f"{cubes}: not a readable .npy array ({exc})")
    if limit is not None:
        array = array[:limit]
    try:
        table = predict_remote(url, array, encoding, batch_size, progress=True)  # type: ignore[arg-type]
    except ValueError as exc:
        fail(f"{cubes}: {exc}")
    except ServingError as exc:
        fail(str(exc))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index_label="cube")
        typer.echo(f"{len(table)} predictions -> {out}")
    else:
        typer.echo(table.to_string())
