"""`lungcad data …`: phantom, build, split — the data stages of the pipeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from lungcad.cli.common import fail
from lungcad.cli.options import ParamsFile, Quiet, Seed, Workers

app = typer.Typer(no_args_is_help=True, help="Make, preprocess and split the CT data.")


@app.command()
def phantom(
    out: Annotated[Path, typer.Option("--out", help="Root to write LIDC-IDRI-XXXX/… into.")] = Path(
        "data/raw/LIDC-IDRI"
    ),
    params: ParamsFile = Path("params.yaml"),
    scans: Annotated[
        int | None,
        typer.Option("--scans", min=1, help="Number of real LIDC scans to mirror (phantom.scans)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (phantom.seed).")] = None,
    min_readers: Annotated[
        int | None,
        typer.Option(
            "--min-readers",
            min=1,
            max=4,
            help="Chosen scans have a nodule outlined by this many readers (phantom.min_readers).",
        ),
    ] = None,
    margin_mm: Annotated[
        float | None,
        typer.Option(
            "--margin-mm",
            min=0,
            help="Slab margin around the nodules in z, >= 32 keeps 64 mm cubes whole "
            "(phantom.margin_mm).",
        ),
    ] = None,
    full: Annotated[
        bool,
        typer.Option("--full", help="Write every slice of each real scan (real size), not a slab."),
    ] = False,
    layout: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="dicom (LIDC-IDRI's layout) or luna16 (subset<k>/<uid>.mhd, annotations.csv) "
            "(phantom.format).",
        ),
    ] = None,
    subsets: Annotated[
        int | None,
        typer.Option("--subsets", min=1, help="LUNA16 subsets (phantom.luna16_subsets)."),
    ] = None,
    workers: Workers = 1,
    quiet: Quiet = False,
) -> None:
    """Write the LIDC-grounded phantom: real LIDC geometry, UIDs and contours, synthetic CT."""
    from lungcad.config import load_params, with_changes
    from lungcad.phantom.writer import write_phantom

    c = with_changes(
        load_params(params).phantom,
        "phantom",
        scans=scans,
        seed=seed,
        min_readers=min_readers,
        margin_mm=margin_mm,
        format=layout,
        luna16_subsets=subsets,
    )
    written = write_phantom(
        out,
        c.scans,
        c.seed,
        c.min_readers,
        c.margin_mm,
        workers,
        progress=not quiet,
        full=full,
        layout=c.format,
        subsets=c.luna16_subsets,
        randomise=c.randomise,
    )
    n_slices = sum(w.n_slices for w in written)
    n_nodules = sum(len(w.nodule_ids) for w in written)
    typer.echo(
        f"wrote {len(written)} scans, {n_slices} slices, {n_nodules} annotated nodules "
        f"in the slabs ({c.format}) -> {out}"
    )


@app.command()
def build(
    raw: Annotated[
        Path,
        typer.Option("--raw", help="LIDC root: a TCIA download, the phantom or any DICOM folder."),
    ],
    out: Annotated[Path, typer.Option("--out", help="Dataset folder to write.")] = Path(
        "data/processed"
    ),
    params: ParamsFile = Path("params.yaml"),
    workers: Workers = 1,
    quiet: Quiet = False,
) -> None:
    """Preprocess every series under --raw into 64³ cubes, index.csv, skipped.csv, fingerprint."""
    from lungcad.config import load_params
    from lungcad.preprocessing.build import build_dataset

    config = load_params(params)
    table = build_dataset(
        raw,
        out,
        config.preprocess,
        config.candidates,
        workers=workers,
        progress=not quiet,
        read=config.limits.read,
    )
    skipped = pd.read_csv(out / "skipped.csv")
    counts = table["kind"].value_counts().to_dict()
    typer.echo(
        f"{len(table)} cubes ({counts}) from {table['series_uid'].nunique()} series, "
        f"{len(skipped)} skipped item(s) listed in {out / 'skipped.csv'}"
    )


@app.command()
def split(
    index: Annotated[Path, typer.Option("--index", help="index.csv of a built dataset.")] = Path(
        "data/processed/index.csv"
    ),
    out: Annotated[Path, typer.Option("--out", help="splits.json to write.")] = Path(
        "data/splits.json"
    ),
    params: ParamsFile = Path("params.yaml"),
    val: Annotated[
        float | None,
        typer.Option("--val", help="Share of patients for validation (split.val_fraction)."),
    ] = None,
    test: Annotated[
        float | None,
        typer.Option("--test", help="Share of patients for test (split.test_fraction)."),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (split.seed).")] = None,
) -> None:
    """Split patients into train/val/test (stratified; fails loudly on any overlap)."""
    from lungcad.config import load_params, with_changes
    from lungcad.splits.patient_split import make_splits, write_splits

    c = with_changes(
        load_params(params).split, "split", val_fraction=val, test_fraction=test, seed=seed
    )
    if not index.exists():
        fail(f"{index} does not exist: run `lungcad data build` (DVC stage `preprocess`) first")
    table = pd.read_csv(index)
    try:
        splits = make_splits(table, c.val_fraction, c.test_fraction, c.seed)
    except ValueError as exc:
        fail(f"{index}: {exc}")
    doc = write_splits(splits, table, out, c.seed)
    for name, s in doc["summary"].items():
        typer.echo(
            f"{name:5s}: {s['patients']:4d} patients, {s['cubes']:5d} cubes, "
            f"{s['nodules']:4d} nodules"
        )


@app.command()
def montage(
    dataset: Annotated[
        Path, typer.Option("--dataset", help="Folder with cubes.npy and index.csv.")
    ] = Path("data/processed"),
    out: Annotated[Path, typer.Option("--out", help="PNG to write.")] = Path("reports/cubes.png"),
    per_kind: Annotated[int, typer.Option("--per-kind", min=1, help="Cubes shown per kind.")] = 8,
    seed: Seed = 0,
) -> None:
    """Draw the central slice of sample nodule, hard and random cubes (a look at the data)."""
    from lungcad.preprocessing.montage import cube_montage

    if not (dataset / "index.csv").exists():
        fail(f"{dataset}/index.csv does not exist: run `lungcad data build` first")
    typer.echo(f"wrote {cube_montage(dataset, out, per_kind, seed)}")


@app.command()
def realism(
    real: Annotated[
        Path | None,
        typer.Option("--real", help="Folder of real CT series (realism.real_root)."),
    ] = None,
    phantom: Annotated[
        Path, typer.Option("--phantom", help="Folder of phantom series (lungcad data phantom).")
    ] = Path("data/raw/LIDC-IDRI"),
    out: Annotated[Path, typer.Option("--out", help="Report folder to write.")] = Path(
        "reports/realism"
    ),
    params: ParamsFile = Path("params.yaml"),
    max_scans: Annotated[
        int | None,
        typer.Option(
            "--max-scans", help="Phantom series measured, first by UID (realism.max_scans)."
        ),
    ] = None,
    patches: Annotated[
        int | None,
        typer.Option(
            "--patches", help="Lung patches per side for the classifier (realism.patches)."
        ),
    ] = None,
    seed: Annotated[int | None, typer.Option("--seed", help="Random seed (realism.seed).")] = None,
    mlflow_log: Annotated[
        bool, typer.Option("--mlflow/--no-mlflow", help="Log the report as an MLflow run.")
    ] = True,
    workers: Workers = 1,
    quiet: Quiet = False,
) -> None:
    """Measure how real the phantom's lungs look against real CT: statistics, HU histogram
    distance, a domain classifier's AUC and a side-by-side picture."""
    from lungcad.config import load_params, with_changes
    from lungcad.realism.report import realism_report

    c = with_changes(
        load_params(params).realism,
        "realism",
        real_root=None if real is None else str(real),
        max_scans=max_scans,
        patches=patches,
        seed=seed,
    )
    try:
        metrics = realism_report(
            Path(c.real_root),
            phantom,
            out,
            c.max_scans,
            c.patches,
            c.seed,
            workers=workers,
            progress=not quiet,
        )
    except ValueError as exc:
        fail(str(exc))
    if "skipped" in metrics:
        typer.secho(f"warning: {metrics['skipped']}; wrote an empty report to {out}", err=True)
        return
    if mlflow_log:
        from lungcad.realism.mlflow_log import log_realism

        log_realism(out, metrics)
    for name, row in (metrics["targets"]["paired"] or metrics["targets"]["all"]).items():
        flag = "ok" if row["within_tolerance"] else "off"
        typer.echo(f"{name:26s} real {row['real']:9.3f}  phantom {row['phantom']:9.3f}  {flag}")
    typer.echo(
        f"domain classifier AUC {metrics['domain_classifier']['auc']:.3f}, "
        f"lung HU Wasserstein {metrics['wasserstein_hu']['all']:.1f} HU -> {out}"
    )
