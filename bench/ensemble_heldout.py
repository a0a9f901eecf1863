"""Benchmark: the fold ensemble against each of its fold models, on patients none of them
trained on, and what the ensemble costs at inference.

A K-fold cross-validation over the default dataset trains every fold model on all but a
K-th of its patients, so no patient of that dataset is unseen by all of them. This script
writes ``--fresh`` more phantom scans the way the ``phantom`` stage writes its own: the next
scans of the same seeded choice of LIDC scans (the first ``phantom.scans`` of it are the
dataset's), leaving out any patient who already has a scan in the dataset. It builds them
with ``lungcad data build`` and scores every fold model and the ensemble on them:

  - cube detection AUC and malignancy MAE / Pearson over the built cubes
    (``lungcad.core.model.predict.predict_rows``, the path ``lungcad evaluate`` uses), with
    patient-bootstrap CIs of the ensemble minus the mean single fold;
  - the whole-scan FROC CPM of ``lungcad detect`` + ``lungcad evaluate-detection``, and
    the seconds per scan spent scoring candidates (the ensemble scores each candidate with
    every member).

Writes <out>/ensemble_heldout.json and prints the table.

Usage (in a clone whose ``dvc repro crossval/dvc.yaml`` has run):
    python bench/ensemble_heldout.py --fresh 12 --out bench/results/ensemble
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from lungcad.config import load_params
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.core.metrics import bootstrap_ci, malignancy_metrics, safe_auc
from lungcad.core.model.loading import load_model
from lungcad.core.model.predict import predict_rows
from lungcad.crossval.ensemble import build_fold_ensemble
from lungcad.phantom.writer import select_scans, write_phantom_scan


def lungcad(*args: str) -> None:
    cmd = ["lungcad", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def write_fresh_scans(params, n_fresh: int, root: Path) -> list[str]:
    """``n_fresh`` phantom scans after the dataset's in the phantom's seeded choice, of
    patients the dataset does not hold; returns their patient ids."""
    p = params.phantom
    db = LidcDatabase()
    dataset = select_scans(db, p.scans, p.seed, p.min_readers)
    known = {s.patient_id for s in dataset}
    more = select_scans(db, p.scans + 4 * n_fresh, p.seed, p.min_readers)
    assert [s.series_uid for s in more[: p.scans]] == [s.series_uid for s in dataset]
    fresh = []
    for scan in more[p.scans :]:  # one scan per patient, none of the dataset's patients
        if scan.patient_id not in known and len(fresh) < n_fresh:
            fresh.append(scan)
            known.add(scan.patient_id)
    if len(fresh) < n_fresh:
        raise SystemExit(f"only {len(fresh)} fresh patients found")
    for scan in fresh:
        nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
        write_phantom_scan(scan, nodules, root, p.seed, p.min_readers, p.margin_mm)
    return [s.patient_id for s in fresh]


def cube_scores(models: dict[str, Path], dataset: Path) -> tuple[pd.DataFrame, dict]:
    cubes = np.load(dataset / "cubes.npy", mmap_mode="r")
    index = pd.read_csv(dataset / "index.csv").sort_values("cube_index")
    preds = {}
    for name, checkpoint in models.items():
        model, config = load_model(checkpoint)
        rows = predict_rows(model, cubes, index, config.window_hu, torch.device("cpu"))
        preds[name] = rows
    table = index[["cube_index", "patient_id", "label", "malignancy_mean"]].copy()
    for name, rows in preds.items():
        table[f"{name}_prob"] = rows["nodule_prob"].to_numpy()
        table[f"{name}_mal"] = rows["malignancy_pred"].to_numpy()
    return table, preds


def figures(table: pd.DataFrame, name: str, rows: np.ndarray | None = None) -> dict:
    t = table if rows is None else table.iloc[rows]
    nodules = t[t["label"] == 1]
    mm = malignancy_metrics(
        nodules["malignancy_mean"].to_numpy(), nodules[f"{name}_mal"].to_numpy()
    )
    return {"auc": safe_auc(t["label"].to_numpy(), t[f"{name}_prob"].to_numpy()), **mm}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--models", type=Path, default=Path("models/cv"))
    parser.add_argument("--ensemble", type=Path, default=Path("models/ensemble/best.pt"))
    parser.add_argument("--fresh", type=int, default=12)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/ensemble"))
    args = parser.parse_args()
    params = load_params(args.params)
    k = len(params.cv.folds)
    raw, dataset = args.out / "raw", args.out / "processed"
    if not (args.out / "fresh_patients.json").exists():
        patients = write_fresh_scans(params, args.fresh, raw)
        (args.out / "fresh_patients.json").write_text(json.dumps(patients, indent=2))
    patients = json.loads((args.out / "fresh_patients.json").read_text())
    if not (dataset / "index.csv").exists():
        lungcad(
            "data",
            "build",
            "--raw",
            str(raw),
            "--out",
            str(dataset),
            "--params",
            str(args.params),
            "--quiet",
        )
    if not args.ensemble.exists():
        build_fold_ensemble(args.models, k, args.ensemble.parent)
    models = {f"fold{i}": args.models / f"fold{i}" / "best.pt" for i in range(k)}
    models["ensemble"] = args.ensemble

    table, _ = cube_scores(models, dataset)
    table.to_csv(args.out / "cube_predictions.csv", index=False)
    singles = [f"fold{i}" for i in range(k)]
    doc = {
        "fresh_patients": patients,
        "n_cubes": len(table),
        "n_nodules": int((table["label"] == 1).sum()),
        "models": {},
    }
    for name in models:
        doc["models"][name] = figures(table, name)

    def gain(rows: np.ndarray) -> dict[str, float]:
        ens = figures(table, "ensemble", rows)
        each = [figures(table, s, rows) for s in singles]
        return {
            f"{m}_gain": ens[m] - np.mean([e[m] for e in each]) for m in ("auc", "mae", "pearson")
        }

    point = gain(np.arange(len(table)))
    ci = bootstrap_ci(table["patient_id"].to_numpy(), gain, args.bootstrap, 0)
    doc["ensemble_minus_mean_single"] = {
        n: [v, *ci.get(n, (np.nan, np.nan))] for n, v in point.items()
    }

    for name, checkpoint in models.items():
        run, report = args.out / "detect" / name, args.out / "detection" / name
        if not (report / "metrics.json").exists():
            lungcad(
                "detect",
                str(raw),
                "--model",
                str(checkpoint),
                "--out",
                str(run),
                "--params",
                str(args.params),
                "--workers",
                "0",
                "--quiet",
            )
            lungcad(
                "evaluate-detection",
                "--detections",
                str(run),
                "--out",
                str(report),
                "--params",
                str(args.params),
            )
        froc = json.loads((report / "metrics.json").read_text())
        doc["models"][name].update(
            cpm=froc["cpm"],
            cpm_ci=[froc["cpm_ci_low"], froc["cpm_ci_high"]],
            n_scans=froc["n_scans"],
            n_reference_nodules=froc["n_nodules"],
            seconds_per_scan=froc["seconds_per_scan"],
            seconds_scoring=froc["seconds_scoring"],
        )
    m = doc["models"]
    for key in ("auc", "mae", "pearson", "cpm", "seconds_per_scan", "seconds_scoring"):
        doc.setdefault("mean_single", {})[key] = float(np.mean([m[s][key] for s in singles]))
    (args.out / "ensemble_heldout.json").write_text(json.dumps(doc, indent=2))

    print(
        f"\n{len(patients)} fresh patients, {doc['n_cubes']} cubes, {doc['n_nodules']} nodule "
        f"cubes, {m['ensemble']['n_reference_nodules']} reference nodules"
    )
    print(
        f"{'model':12s} {'AUC':>6s} {'MAE':>6s} {'r':>6s} {'CPM':>6s} {'s/scan':>7s}"
        f" {'scoring':>7s}"
    )
    for name in [*models, "mean_single"]:
        f = doc["mean_single"] if name == "mean_single" else m[name]
        print(
            f"{name:12s} {f['auc']:6.3f} {f['mae']:6.3f} {f['pearson']:6.3f} {f['cpm']:6.3f} "
            f"{f['seconds_per_scan']:7.1f} {f['seconds_scoring']:7.1f}"
        )
    for name, (v, lo, hi) in doc["ensemble_minus_mean_single"].items():
        print(f"ensemble - mean single {name}: {v:+.3f} [{lo:+.3f}, {hi:+.3f}]")
    print(f"-> {args.out / 'ensemble_heldout.json'}")


if __name__ == "__main__":
    sys.exit(main())
