"""`lungcad benchmark …`: the sealed benchmark (build it once; score a model on it)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking_for
from lungcad.cli.options import Dataset, ParamsFile, Quiet, Splits

app = typer.Typer(
    no_args_is_help=True,
    help="The sealed benchmark: whole-length scans of patients the dataset does not hold.",
)

Root = Annotated[Path, typer.Option("--data", help="The benchmark's folder.")]


@app.command()
def build(
    out: Annotated[Path, typer.Option("--out", help="The benchmark's folder.")] = Path(
        "data/benchmark"
    ),
    index: Annotated[
        Path,
        typer.Option(
            "--index", help="index.csv of the dataset: the benchmark holds none of its patients."
        ),
    ] = Path("data/processed/index.csv"),
    params: ParamsFile = Path("params.yaml"),
    quiet: Quiet = False,
) -> None:
    """Write the benchmark (benchmark.* in params.yaml): whole-length phantom scans of LIDC
    patients the dataset does not hold, in LUNA16's layout."""
    from lungcad.benchmark.build import build_benchmark, dataset_patients
    from lungcad.config import load_params

    c = load_params(params).benchmark
    if not index.is_file():
        fail(f"{index} does not exist: run `lungcad data build` (DVC stage `preprocess`) first")
    try:
        excluded = dataset_patients(index)
    except (ValueError, KeyError) as exc:
        fail(f"{index} is not a dataset index ({exc}): re-run `lungcad data build`")
    try:
        table = build_benchmark(
            out, excluded, c.scans, c.seed, c.subsets, c.max_slices, c.workers, not quiet
        )
    except ValueError as exc:
        fail(str(exc))
    empty = int((table["reference_nodules"] == 0).sum())
    typer.echo(
        f"wrote {len(table)} whole-length scans of {table['patient_id'].nunique()} patients "
        f"({empty} without a reference nodule, {int(table['reference_nodules'].sum())} reference "
        f"nodules; none of the dataset's {len(excluded)} patients) -> {out}"
    )
    skipped = json.loads((out / "benchmark.json").read_text())["skipped"]
    for item in skipped:
        typer.echo(f"skipped {item['seriesuid']}: {item['reason']}")


@app.command()
def score(
    model: Annotated[
        str,
        typer.Option("--model", help="Checkpoint (a fold ensemble too) or models:/ URI to score."),
    ] = "models/best.pt",
    data: Root = Path("data/benchmark"),
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports/benchmark"),
    dataset: Dataset = Path("data/processed"),
    splits: Splits = Path("data/splits.json"),
    params: ParamsFile = Path("params.yaml"),
    quiet: Quiet = False,
) -> None:
    """Score a model on the benchmark: LUNA16 FROC / CPM with patient-bootstrap CIs, per
    nodule figures, malignancy of detected nodules beside its baselines, time and memory."""
    import pandas as pd

    from lungcad.benchmark.score import score_benchmark
    from lungcad.config import load_params
    from lungcad.core.splits import load_splits
    from lungcad.detection.batch import DetectSettings
    from lungcad.tracking.model_ref import resolve_checkpoint

    p = load_params(params)
    settings = DetectSettings(p.detect, figures=False, dicom=False, read=p.limits.read)
    train = None
    if (dataset / "index.csv").is_file() and splits.is_file():
        index = pd.read_csv(dataset / "index.csv", dtype={"patient_id": str})
        train_patients = set(load_splits(splits)["train"])
        train = index[(index["label"] == 1) & index["patient_id"].isin(train_patients)]
    require_tracking_for(model)
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, label = resolve_checkpoint(model, tmp)
        try:
            m = score_benchmark(
                data,
                checkpoint,
                out,
                settings,
                p.benchmark.workers,
                p.detect.bootstrap,
                p.detect.seed,
                train,
                label,
                not quiet,
            )
        except ValueError as exc:
            fail(str(exc))
    f = m["froc"]
    cpm = "n/a" if f["cpm"] is None else f"{f['cpm']:.3f}"
    ci = "" if f.get("cpm_ci_low") is None else f" ({f['cpm_ci_low']:.3f}–{f['cpm_ci_high']:.3f})"
    typer.echo(
        f"CPM {cpm}{ci} on {f['n_scans']} scans / {f['n_nodules']} nodules; "
        f"{m['seconds_per_scan'] or float('nan'):.1f} s per scan, peak {m['peak_rss_mb']:.0f} MB "
        f"-> {out / 'metrics.json'}"
    )
    if m["scans_failed"]:
        typer.echo(f"{m['scans_failed']} scan(s) failed and count as scans without findings")
