"""`lungcad params …`: check a params file against the schema."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Check params files (the typed configuration).")


@app.command()
def check(
    params: Annotated[
        Path, typer.Argument(help="params.yaml to check (overlays after it are applied on top).")
    ] = Path("params.yaml"),
    overlays: Annotated[
        list[Path] | None, typer.Argument(help="Overlay files, e.g. configs/real-lidc-gpu.yaml.")
    ] = None,
) -> None:
    """Validate every section and key; print the settings that differ from the defaults."""
    from lungcad.config import Params, load_params

    config = load_params(params, *(overlays or []))
    changed = _differences(config.model_dump(), Params().model_dump())
    typer.echo(f"{' + '.join(map(str, [params, *(overlays or [])]))}: valid")
    for key, value in changed:
        typer.echo(f"  {key} = {value!r}")


def _differences(values: dict, defaults: dict, prefix: str = "") -> list[tuple[str, object]]:
    out = []
    for key, value in values.items():
        if isinstance(value, dict):
            out += _differences(value, defaults[key], f"{prefix}{key}.")
        elif value != defaults[key]:
            out.append((f"{prefix}{key}", value))
    return out
