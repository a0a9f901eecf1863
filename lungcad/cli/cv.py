"""`lungcad cv …`: patient-level k-fold cross-validation (folds, then the out-of-fold report)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import pandas as pd
import typer

from lungcad.cli.common import fail
from lungcad.cli.options import Dataset, ParamsFile

app = typer.Typer(
    no_args_is_help=True,
    help="Cross-validation: fold splits, and figures pooled over every held-out patient.",
)


@app.command()
def split(
    index: Annotated[Path, typer.Option("--index", help="index.csv of a built dataset.")] = Path(
        "data/processed/index.csv"
    ),
    out: Annotated[
        Path, typer.Option("--out", help="Folder for fold<k>.json and folds.json.")
    ] = Path("data/cv"),
    splits: Annotated[
        Path,
        typer.Option(
            "--splits",
            help="The default split, whose val and test patients cv.holdout: default_split keeps "
            "out of every fold.",
        ),
    ] = Path("data/splits.json"),
    params: ParamsFile = Path("params.yaml"),
) -> None:
    """Split the patients into cv.folds folds (or one per LUNA16 subset, cv.split_by);
    fold<k>.json is fold k's splits.json."""
    from lungcad.config import load_params
    from lungcad.core.splits import load_splits
    from lungcad.splits.patient_split import make_folds, subset_folds, write_folds

    p = load_params(params)
    if not index.exists():
        fail(f"{index} does not exist: run `lungcad data build` (DVC stage `preprocess`) first")
    table = pd.read_csv(index)
    held_out: list[str] = []
    if p.cv.holdout == "default_split":
        if not splits.is_file():
            fail(
                f"cv.holdout: default_split keeps the val and test patients of {splits} out, "
                "but it does not exist: run `lungcad data split` (DVC stage `split`) first"
            )
        try:
            default = load_splits(splits)
            held_out = sorted({*default["val"], *default["test"]})
        except (ValueError, KeyError) as exc:
            fail(f"{splits} is not a splits.json ({exc}): re-run `lungcad data split`")
        table = table[~table["patient_id"].isin(held_out)]
        typer.echo(f"held out of every fold: the {len(held_out)} val and test patients of {splits}")
    k, notes = len(p.cv.folds), []
    try:
        if p.cv.split_by == "luna16_subsets":
            series_file = index.parent / "series_index.csv"
            if not series_file.is_file():
                fail(f"{series_file} does not exist: build the dataset with `lungcad data build`")
            series = pd.read_csv(series_file, dtype={"folder": str})
            folds, notes = subset_folds(table, series, k, p.split.val_fraction, p.split.seed)
        else:
            folds = make_folds(table, k, p.split.val_fraction, p.split.seed)
    except ValueError as exc:
        fail(f"{index}: {exc}")
    for note in notes:
        typer.echo(f"note: {note}")
    doc = write_folds(folds, table, out, p.split.seed, held_out)
    for k, s in enumerate(doc["summary"]):
        typer.echo(
            f"fold {k}: test {s['test']['patients']:3d} patients {s['test']['nodules']:4d} "
            f"nodules; train {s['train']['patients']:3d}, val {s['val']['patients']:3d} -> "
            f"{out / f'fold{k}.json'}"
        )


@app.command()
def report(
    folds: Annotated[
        Path, typer.Option("--folds", help="Folder written by `lungcad cv split`.")
    ] = Path("data/cv"),
    models: Annotated[
        Path, typer.Option("--models", help="Folder of the fold models (fold<k>/best.pt).")
    ] = Path("models/cv"),
    evaluations: Annotated[
        Path,
        typer.Option("--evaluations", help="Folder of the folds' `lungcad evaluate` outputs."),
    ] = Path("reports/cv/evaluate"),
    detections: Annotated[
        Path,
        typer.Option("--detections", help="Folder of the folds' `lungcad detect` outputs."),
    ] = Path("reports/cv/detect"),
    dataset: Dataset = Path("data/processed"),
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports/cv/summary"),
    params: ParamsFile = Path("params.yaml"),
) -> None:
    """Out-of-fold figures over every patient, the per-fold table, one MLflow parent run."""
    from lungcad.config import load_params
    from lungcad.crossval.report import CvInputs, cross_validation_report

    p = load_params(params)
    inputs = CvInputs(folds, models, evaluations, detections, dataset)
    try:
        doc = cross_validation_report(inputs, out, p)
    except ValueError as exc:
        fail(str(exc))
    for why in doc["missing"]:
        typer.echo(f"not included: {why}")
    c, d = doc["cubes"]["detection"], doc["detection"]
    cpm = "n/a" if d.get("cpm") is None else f"{d['cpm']:.3f}"
    typer.echo(
        f"{doc['n_folds']} folds, out of fold over {doc['n_patients']} patients: cube AUC "
        f"{c['auc']:.3f}, malignancy MAE {doc['cubes']['malignancy']['mae']:.3f}, CPM {cpm} on "
        f"{d['n_scans']} scans / {d['n_nodules']} nodules -> {out / 'report.md'}"
    )


@app.command()
def ensemble(
    models: Annotated[
        Path, typer.Option("--models", help="Folder of the fold models (fold<k>/best.pt).")
    ] = Path("models/cv"),
    folds: Annotated[
        Path, typer.Option("--folds", help="Folder written by `lungcad cv split`.")
    ] = Path("data/cv"),
    out: Annotated[Path, typer.Option("--out", help="Folder for the ensemble's best.pt.")] = Path(
        "models/ensemble"
    ),
    track: Annotated[
        bool,
        typer.Option(
            "--track/--no-track",
            help="Log it as an MLflow run with its pyfunc model (a promotion candidate when "
            "the folds held the default split's val and test patients out, "
            "cv.holdout: default_split).",
        ),
    ] = True,
    dataset: Dataset = Path("data/processed"),
    params: ParamsFile = Path("params.yaml"),
) -> None:
    """The fold models as one model: their outputs averaged (evaluate, detect, explain and
    serve take its best.pt like any checkpoint)."""
    import json

    from lungcad.config import load_params
    from lungcad.core.model.ensemble import EnsembleError
    from lungcad.crossval.ensemble import build_fold_ensemble, log_fold_ensemble

    p = load_params(params)
    k = len(p.cv.folds)
    try:
        checkpoint = build_fold_ensemble(models, k, out, folds)
    except EnsembleError as exc:
        fail(str(exc))
    typer.echo(f"ensemble of {k} fold models -> {checkpoint}")
    if not track:
        return
    import numpy as np

    cubes = dataset / "cubes.npy"
    if not cubes.is_file():
        fail(f"{cubes} does not exist: the ensemble's MLflow model takes the dataset's cube size")
    size = int(np.load(cubes, mmap_mode="r").shape[-1])
    folds_doc = folds / "folds.json"
    held_out = json.loads(folds_doc.read_text()).get("held_out", []) if folds_doc.is_file() else []
    info = log_fold_ensemble(checkpoint, models, k, p.train.experiment, bool(held_out), size)
    why = (
        "a promotion candidate"
        if held_out
        else (
            "not a promotion candidate: its folds covered the val and test patients "
            "(cv.holdout: none)"
        )
    )
    typer.echo(f"MLflow run {info['run_id']}, {why}")
