"""`lungcad explain`: Grad-CAM heat maps of dataset cubes or of `lungcad detect` findings,
with the pointing-game and randomisation checks, attached to the model's MLflow run."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking_for, run_id_of
from lungcad.cli.options import Dataset, ParamsFile, Quiet, Splits


def _cube_list(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        fail(f"--cubes {text!r}: give cube indices (index.csv's cube_index) separated by commas")


def explain(
    dataset: Dataset = Path("data/processed"),
    splits: Splits = Path("data/splits.json"),
    split: Annotated[
        str | None, typer.Option("--split", help="Explain this split's cubes (params: test).")
    ] = None,
    cubes: Annotated[
        str | None,
        typer.Option("--cubes", help="Only these cube_index values, e.g. 3,17,20."),
    ] = None,
    findings: Annotated[
        Path | None,
        typer.Option(
            "--findings",
            help="A `lungcad detect` folder: explain its findings instead (needs --raw).",
        ),
    ] = None,
    raw: Annotated[
        Path | None,
        typer.Option("--raw", help="The scans the findings were detected in (with --findings)."),
    ] = None,
    model: Annotated[
        str,
        typer.Option(
            "--model", help="A lungcad checkpoint or a URI like models:/lungcad@champion."
        ),
    ] = "models/best.pt",
    layer: Annotated[
        str | None,
        typer.Option(
            "--layer", help="Network module the maps come from (params: backbone.layer3)."
        ),
    ] = None,
    method: Annotated[
        str | None,
        typer.Option(
            "--method", help="gradcam or gradcampp: the one drawn (params: both measured)."
        ),
    ] = None,
    threshold: Annotated[
        float | None,
        typer.Option(
            "--threshold",
            help="Detection threshold (default: the one `lungcad evaluate` chose, "
            "from --eval-metrics; 0.5 without it).",
        ),
    ] = None,
    eval_metrics: Annotated[
        Path, typer.Option("--eval-metrics", help="metrics.json of `lungcad evaluate`.")
    ] = Path("reports/metrics.json"),
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("reports/explain"),
    params: ParamsFile = Path("params.yaml"),
    run_info: Annotated[
        Path | None,
        typer.Option("--run-info", help="train_run.json: log the checks to that MLflow run."),
    ] = None,
    quiet: Quiet = False,
) -> None:
    """Heat maps (NIfTI in patient mm, pictures) and how right they are (pointing game,
    randomised-weights sanity check, patient-bootstrap CIs)."""
    from lungcad.config import load_params, with_changes
    from lungcad.core.model.loading import load
    from lungcad.explain.cubes import explain_dataset
    from lungcad.tracking.model_ref import resolve_checkpoint

    config = load_params(params).explain
    methods = None
    if method is not None:
        methods = (method, *(m for m in config.methods if m != method))
    config = with_changes(config, "explain", split=split, layer=layer, methods=methods)
    if threshold is None:
        threshold = 0.5
        if eval_metrics.exists():
            try:
                threshold = float(json.loads(eval_metrics.read_text())["threshold"]["value"])
            except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError):
                fail(
                    f"--eval-metrics {eval_metrics} is not the metrics.json of `lungcad "
                    "evaluate` (no threshold value in it): point it at that file, or pass "
                    "--threshold"
                )
    require_tracking_for(model)
    run_id = run_id_of(run_info)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, label = resolve_checkpoint(model, tmp)
        loaded = load(checkpoint)
    net, cut, window = loaded.network, loaded.cut, loaded.window
    if findings is not None:
        from lungcad.core.model.cam import CamSettings
        from lungcad.explain.detections import explain_detection_run

        if raw is None:
            fail("--findings needs --raw: the scans the findings were detected in")
        report = explain_detection_run(
            findings,
            raw,
            net,
            window,
            out,
            threshold,
            CamSettings("detection", config.methods[0], config.layer),
            progress=not quiet,
            cube_size=cut.preprocess.cube_size,
            spacing_mm=cut.preprocess.spacing_mm,
        )
        for r in report.itertuples():
            typer.echo(f"{r.seriesuid}: {r.status}")
        typer.echo(f"{int(report['findings'].fillna(0).sum())} finding(s) explained -> {out}")
        return
    doc = explain_dataset(
        dataset,
        splits,
        net,
        window,
        out,
        config,
        threshold,
        _cube_list(cubes),
        progress=not quiet,
    )
    if doc["skipped"]:
        typer.secho(
            f"{doc['skipped']} requested cube(s) skipped: see {out / 'skipped.csv'}",
            fg=typer.colors.YELLOW,
            err=True,
        )
    if run_id is not None:
        from lungcad.tracking.mlflow_run import log_explanation

        log_explanation(run_id, out, doc)
        typer.echo(f"explanation checks attached to MLflow run {run_id}")
    d = doc["detection"][config.methods[0]]
    n_nodules = doc["detection"]["n_nodule_cubes"]
    typer.echo(
        f"{label}: pointing game {d['pointing_game']:.3f} (chance {d['pointing_chance']:.3f}, "
        f"random weights {d['pointing_game_random_weights']:.3f}) on {n_nodules} "
        f"nodule cubes; sanity rank correlation {d['sanity_rank_correlation']:.3f} -> "
        f"{out / 'metrics.json'}"
    )
