"""`lungcad detect` and `lungcad evaluate-detection`: whole-scan nodule detection and its
LUNA16 FROC / CPM."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lungcad.cli.common import fail, require_tracking_for, run_id_of
from lungcad.cli.options import ParamsFile, Quiet, Workers


def detect(
    input_path: Annotated[
        Path | None,
        typer.Argument(
            help="A DICOM series folder, an LIDC root (every series in it), a LUNA16 .mhd "
            "file or a folder of .mhd files (or --dicomweb and --study instead).",
            show_default=False,
        ),
    ] = None,
    model: Annotated[
        str | None,
        typer.Option(
            "--model",
            help="A lungcad checkpoint (.pt) or a registry URI such as models:/lungcad@champion "
            "(default: the registry's champion if there is a registry, else models/best.pt).",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Output folder.")] = Path("detections"),
    threshold: Annotated[
        float | None,
        typer.Option("--threshold", help="Findings at or above this probability are reported."),
    ] = None,
    splits: Annotated[
        Path | None,
        typer.Option("--splits", help="splits.json: detect only the patients of --split."),
    ] = None,
    split: Annotated[
        str | None, typer.Option("--split", help="train | val | test (detect.split).")
    ] = None,
    figures: Annotated[
        bool, typer.Option("--figures/--no-figures", help="A picture per scan.")
    ] = True,
    offcentre_check: Annotated[
        bool,
        typer.Option(
            "--offcentre-check",
            help="Also recut each reference nodule 8-14 mm off-centre and score it "
            "(offcentre.csv; scans the LIDC database knows).",
        ),
    ] = False,
    dicom: Annotated[
        bool,
        typer.Option(
            "--dicom/--no-dicom",
            help="A DICOM SEG and SR (TID 1500) of each scan's findings (scans read from DICOM).",
        ),
    ] = True,
    dicomweb: Annotated[
        str | None,
        typer.Option(
            "--dicomweb",
            help="A DICOMweb root (e.g. http://host:8042/dicom-web) to take the study from; "
            "credentials from LUNGCAD_DICOMWEB_USER/_PASSWORD or LUNGCAD_DICOMWEB_TOKEN.",
        ),
    ] = None,
    study: Annotated[
        str | None,
        typer.Option("--study", help="StudyInstanceUID on --dicomweb: its CT series are detected."),
    ] = None,
    store: Annotated[
        bool,
        typer.Option("--store", help="Store each scan's SEG and SR back into the study (STOW-RS)."),
    ] = False,
    params: ParamsFile = Path("params.yaml"),
    workers: Workers = 1,
    quiet: Quiet = False,
) -> None:
    """Find the nodules in CT scans: candidates, network scores, NMS; CSVs, DICOM SEG and SR,
    pictures, report."""
    from lungcad.config import load_params, with_changes
    from lungcad.detection.batch import DetectSettings, detect_scans, top_findings
    from lungcad.tracking.model_ref import resolve_checkpoint

    if (input_path is None) == (dicomweb is None):
        fail("give a scan path or --dicomweb with --study (one of them)")
    if dicomweb is not None and not study:
        fail("--dicomweb needs --study <StudyInstanceUID>")
    if (study or store) and dicomweb is None:
        fail("--study and --store need --dicomweb <DICOMweb root URL>")
    if store and not dicom:
        fail("--store sends the DICOM SEG and SR: drop --no-dicom")
    all_params = load_params(params)
    config = with_changes(all_params.detect, "detect", threshold=threshold, split=split)
    settings = DetectSettings(
        config,
        figures=figures,
        offcentre=offcentre_check,
        dicom=dicom,
        read=all_params.limits.read,
    )
    pacs = None
    if dicomweb is not None:  # before any work: a bad server or study stops here
        from lungcad.detection.pacs import study_ct_series
        from lungcad.dicom.dicomweb import Pacs

        pacs = Pacs.connect(dicomweb, all_params.limits.dicomweb)
        ct_series = study_ct_series(pacs, study, typer.echo)
    patients = None
    if splits is not None:
        from lungcad.core.splits import load_splits

        try:
            patients = set(load_splits(splits)[config.split])
        except (OSError, KeyError, ValueError) as exc:
            fail(f"--splits {splits} --split {config.split}: {exc}")
    require_tracking_for(model)
    failed_stores = 0
    with tempfile.TemporaryDirectory() as tmp:
        checkpoint, label = resolve_checkpoint(model, tmp)
        if pacs is not None:
            from lungcad.detection.pacs import detect_study

            scans, failed_stores = detect_study(
                pacs,
                study,
                ct_series,
                out,
                checkpoint,
                settings,
                store,
                workers,
                not quiet,
                label,
                typer.echo,
            )
        else:
            scans = detect_scans(
                input_path, out, checkpoint, settings, workers, not quiet, patients, label
            )
    for line in top_findings(out, config.threshold):
        typer.echo(line)
    ok = int((scans["status"] == "ok").sum())
    bad = scans[scans["status"] == "error"]
    if ok + len(bad) == 0:
        fail(f"{input_path}: no scan to detect (check the path, and --splits/--split if given)")
    typer.echo(f"{ok} scan(s) done, {len(bad)} not usable -> {out / 'report.md'}")
    if len(bad):
        names = ", ".join(uid or "-" for uid in bad["seriesuid"].head(10))
        more = f" and {len(bad) - 10} more" if len(bad) > 10 else ""
        fail(f"{len(bad)} of {ok + len(bad)} scan(s) not usable: {names}{more} (reasons above)")
    if failed_stores:
        fail(f"{failed_stores} scan(s)' DICOM objects were not stored (reasons above)")


def evaluate_detection(
    detections: Annotated[
        list[Path] | None,
        typer.Option(
            "--detections",
            help="Folder written by `lungcad detect`; repeat it to pool runs of disjoint scans "
            "(e.g. cross-validation folds) into one FROC.",
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="Report folder.")] = Path("reports/detection"),
    annotations: Annotated[
        Path | None,
        typer.Option(
            "--annotations",
            help="LUNA16 annotations.csv (default: the detection folder's, from the LIDC DB).",
        ),
    ] = None,
    excluded: Annotated[
        Path | None,
        typer.Option("--excluded", help="LUNA16 annotations_excluded.csv (with --annotations)."),
    ] = None,
    params: ParamsFile = Path("params.yaml"),
    run_info: Annotated[
        Path | None,
        typer.Option("--run-info", help="train_run.json: log the metrics to that MLflow run."),
    ] = None,
) -> None:
    """LUNA16 FROC / CPM with bootstrap CIs, candidate sensitivity, seconds per scan."""
    from lungcad.config import load_params
    from lungcad.detection.froc_report import evaluate_detection as run

    if (annotations is None) != (excluded is None) and excluded is not None:
        fail("--excluded needs --annotations")
    config = load_params(params).detect
    run_id = run_id_of(run_info)
    try:
        m = run(
            detections or [Path("detections")],
            out,
            annotations,
            excluded,
            config.bootstrap,
            config.seed,
            config.threshold,
        )
    except ValueError as exc:
        fail(str(exc))
    if run_id is not None:
        from lungcad.tracking.mlflow_run import log_detection

        log_detection(run_id, out, m)
        typer.echo(f"detection report attached to MLflow run {run_id}")
    cpm = "n/a" if m["cpm"] is None else f"{m['cpm']:.3f}"
    cs = m["candidate_sensitivity"]
    typer.echo(
        f"CPM {cpm} on {m['n_scans']} scans / {m['n_nodules']} nodules; candidate sensitivity "
        f"{'n/a' if cs is None else f'{cs:.3f}'} at {m['candidates_per_scan']:.0f} per scan -> "
        f"{out / 'report.md'}"
    )
