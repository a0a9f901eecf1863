"""`lungcad doctor`: the environment facts a bug report needs."""

from __future__ import annotations

import json
from typing import Annotated

import typer


def doctor(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of text.")] = False,
) -> None:
    """Versions, device (CUDA, bf16, GPU memory), tracking URI and whether it answers, the
    registered champion, the DVC remote: paste it into a bug report (no passwords)."""
    from lungcad.doctor.report import collect, format_report

    doc = collect()
    typer.echo(json.dumps(doc, indent=2) if as_json else format_report(doc))
