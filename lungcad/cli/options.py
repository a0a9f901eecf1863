"""Option types shared by several commands."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer


def _all_cores_if_zero(value: int) -> int:
    return value if value > 0 else (os.cpu_count() or 1)


Workers = Annotated[
    int,
    typer.Option(
        "--workers",
        "-j",
        min=0,
        callback=_all_cores_if_zero,
        help="Parallel worker processes (0: one per CPU core).",
    ),
]
Seed = Annotated[int, typer.Option("--seed", help="Random seed (results are reproducible).")]
ParamsFile = Annotated[
    Path,
    typer.Option("--params", help="params.yaml whose section for this command gives the defaults."),
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bars.")]
Dataset = Annotated[
    Path,
    typer.Option("--dataset", help="Folder with cubes.npy and index.csv (lungcad data build)."),
]
Splits = Annotated[Path, typer.Option("--splits", help="splits.json (lungcad data split).")]
