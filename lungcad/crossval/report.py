"""Out-of-fold figures of a k-fold cross-validation (``crossval/dvc.yaml``).

Every patient is tested once, by the one fold model that did not train on it, so the
figures pool all patients instead of one test split:

- cube detection: the AUC over every held-out cube; accuracy, recall, specificity, F1 with
  each cube judged at its own fold's threshold (Youden's J on that fold's val patients);
- malignancy on every held-out nodule cube, beside the two baselines, each fitted on the
  same fold's train nodules, with paired patient-bootstrap CIs of the differences;
- whole-scan FROC / CPM pooled over every fold's held-out scans (LUNA16 scores its ten
  folds the same way);
- a per-fold table (and the folds' mean and sd) to show how much one split can move.

CIs resample patients (cubes) and scans (FROC). A fold whose outputs are missing is named in
the report and left out; the pooled figures then cover fewer patients, and say how many.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungcad.config import Params
from lungcad.core.metrics import (
    DETECTION_CI,
    MALIGNANCY_CI,
    detection_metrics,
    malignancy_metrics,
    paired_difference,
    safe_auc,
    with_ci,
)
from lungcad.core.outputs import write_text_atomic
from lungcad.detection.froc import froc
from lungcad.detection.froc_report import evaluate_detection, read_runs
from lungcad.evaluation.baselines import fit_predict_baselines

FOLD_COLUMNS = [
    "fold",
    "test_patients",
    "test_nodules",
    "best_epoch",
    "threshold",
    "auc",
    "recall",
    "specificity",
    "mae",
    "pearson",
    "cpm",
    "n_scans",
]


@dataclass(frozen=True)
class CvInputs:
    """Where a cross-validation's pieces are (the crossval pipeline's folders)."""

    folds: Path  # lungcad cv split: folds.json, fold<k>.json
    models: Path  # fold<k>/best.pt, fold<k>/train_run.json
    evaluations: Path  # fold<k>/: lungcad evaluate
    detections: Path  # fold<k>/: lungcad detect of the fold's held-out scans
    dataset: Path  # index.csv of the dataset the folds split


def _fold_detection(y, p, thr) -> dict[str, float]:
    """Cube detection figures with each cube judged at its own fold's threshold."""
    out = detection_metrics(y, (p >= thr).astype(float), 0.5)
    out["auc"] = safe_auc(y, p)
    out.pop("threshold")
    return out


def _read_fold(inputs: CvInputs, k: int) -> tuple[pd.DataFrame, dict, dict] | str:
    """Fold k's held-out predictions, evaluation document and splits; or why not."""
    ev = inputs.evaluations / f"fold{k}"
    for path in (ev / "predictions.csv", ev / "metrics.json"):
        if not path.is_file():
            return f"{path} is missing (run `dvc repro crossval/dvc.yaml:evaluate@{k}`)"
    splits = json.loads((inputs.folds / f"fold{k}.json").read_text())
    preds = pd.read_csv(ev / "predictions.csv")
    test = preds[preds["split"] == "test"].copy()
    if set(test["patient_id"]) != set(splits["test"]) and len(test):
        return (
            f"{ev / 'predictions.csv'}: its test patients are not fold {k}'s held-out patients "
            f"({inputs.folds / f'fold{k}.json'}); the folds changed since it was evaluated: "
            "rerun `dvc repro crossval/dvc.yaml`"
        )
    return test, json.loads((ev / "metrics.json").read_text()), splits


def cross_validation_report(inputs: CvInputs, out_dir: str | Path, params: Params) -> dict:
    """Write metrics.json, folds.csv, predictions.csv, report.md and detection/ (the pooled
    FROC) to ``out_dir``; attach them to one MLflow parent run of the fold runs.

    Raises:
        ValueError: no folds file, a fold count other than ``cv.folds``'s, or no fold with
            its outputs.
    """
    out_dir = Path(out_dir)
    folds_file = inputs.folds / "folds.json"
    if not folds_file.is_file():
        raise ValueError(f"{folds_file}: no such file; run `lungcad cv split` first")
    n_folds = int(json.loads(folds_file.read_text())["folds"])
    if n_folds != len(params.cv.folds):
        raise ValueError(
            f"{folds_file} has {n_folds} folds but cv.folds lists {len(params.cv.folds)}: "
            "rerun `lungcad cv split` (DVC stage crossval/dvc.yaml:folds)"
        )
    index = pd.read_csv(inputs.dataset / "index.csv")
    boot, seed = params.evaluate.bootstrap, params.evaluate.seed

    rows, tests, missing, det_dirs, run_ids = [], [], [], [], []
    baseline_preds: dict[str, list[np.ndarray]] = {}
    for k in range(n_folds):
        got = _read_fold(inputs, k)
        det_dir = inputs.detections / f"fold{k}"
        if isinstance(got, str):
            missing.append(got)
            continue
        test, doc, splits = got
        thr = float(doc["threshold"]["value"])
        test["fold"], test["threshold"] = k, thr
        nodules = test[test["label"] == 1]
        train_nod = index[index["patient_id"].isin(splits["train"]) & (index["label"] == 1)]
        if len(train_nod) >= 5 and len(nodules):
            rated = index.set_index("cube_index").loc[nodules["cube_index"]]
            for name, pred in fit_predict_baselines(train_nod, rated, seed).items():
                baseline_preds.setdefault(name, []).append(pred)
        tests.append(test)
        det = _fold_detection(test["label"].to_numpy(), test["nodule_prob"].to_numpy(), thr)
        mal = malignancy_metrics(nodules["malignancy_mean"], nodules["malignancy_pred"])
        cpm, n_scans = None, 0
        if (det_dir / "scans.csv").is_file():
            det_dirs.append(det_dir)
            run = read_runs([det_dir])
            series = run["scans"].loc[run["scans"]["status"] == "ok", "seriesuid"].tolist()
            result = froc(run["detections"], run["annotations"], run["excluded"], series)
            cpm, n_scans = (None if np.isnan(result.cpm) else result.cpm), len(series)
        else:
            missing.append(f"{det_dir}/scans.csv is missing (detect@{k} did not run)")
        run_file = inputs.models / f"fold{k}" / "train_run.json"
        if run_file.is_file():
            run_ids.append(json.loads(run_file.read_text())["run_id"])
        rows.append(
            {
                "fold": k,
                "test_patients": len(splits["test"]),
                "test_nodules": int(len(nodules)),
                "best_epoch": doc.get("best_epoch"),
                "threshold": thr,
                "auc": det["auc"],
                "recall": det["recall"],
                "specificity": det["specificity"],
                "mae": mal["mae"],
                "pearson": mal["pearson"],
                "cpm": cpm,
                "n_scans": n_scans,
            }
        )
    if not tests:
        raise ValueError("no fold has its evaluation: " + "; ".join(missing))

    oof = pd.concat(tests, ignore_index=True)
    y, p, thr = (oof[c].to_numpy(float) for c in ("label", "nodule_prob", "threshold"))
    cubes_det = with_ci(
        _fold_detection(y, p, thr),
        DETECTION_CI,
        oof["patient_id"].to_numpy(),
        lambda i: _fold_detection(y[i], p[i], thr[i]),
        boot,
        seed,
    )
    cubes_det["n_cubes"] = int(len(oof))
    nod = oof[oof["label"] == 1]
    t, m = nod["malignancy_mean"].to_numpy(float), nod["malignancy_pred"].to_numpy(float)
    groups = nod["patient_id"].to_numpy()
    mal = with_ci(
        malignancy_metrics(t, m),
        MALIGNANCY_CI,
        groups,
        lambda i: malignancy_metrics(t[i], m[i]),
        boot,
        seed,
    )
    mal["n_nodules"] = int(len(nod))
    baselines, versus = {}, {}
    if baseline_preds and all(len(v) == len(tests) for v in baseline_preds.values()):
        for name, parts in baseline_preds.items():
            pred = np.concatenate(parts)
            baselines[name] = malignancy_metrics(t, pred)
            versus[name] = paired_difference(t, m, pred, groups, boot, seed)

    detection: dict[str, Any] = {"n_scans": 0, "n_nodules": 0, "cpm": None}
    if det_dirs:
        detection = evaluate_detection(
            det_dirs,
            out_dir / "detection",
            bootstrap=params.detect.bootstrap,
            seed=params.detect.seed,
            threshold=params.detect.threshold,
        )
    folds = pd.DataFrame(rows, columns=FOLD_COLUMNS)
    spread = {
        col: {
            "mean": float(folds[col].astype(float).mean()),
            "sd": float(folds[col].astype(float).std()),
        }
        for col in ("auc", "mae", "pearson", "cpm")
        if folds[col].notna().sum() >= 2
    }
    doc = {
        "n_folds": n_folds,
        "folds_done": int(len(rows)),
        "n_patients": int(oof["patient_id"].nunique()),
        "cubes": {"detection": cubes_det, "malignancy": mal},
        "baselines": baselines,
        "cnn_minus_baseline": versus,
        "detection": {k: v for k, v in detection.items() if k != "per_nodule"},
        "per_nodule": detection.get("per_nodule", {}),
        "fold_spread": spread,
        "missing": missing,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    folds.to_csv(out_dir / "folds.csv", index=False)
    oof.to_csv(out_dir / "predictions.csv", index=False)
    (out_dir / "report.md").write_text(render_report(doc, folds))
    if run_ids:
        from lungcad.tracking.mlflow_run import log_cross_validation, redact_uri, tracking_uri

        doc["mlflow_parent_run"], absent = log_cross_validation(
            params.train.experiment, run_ids, out_dir, doc
        )
        doc["missing"] += [
            f"fold run {r} is not in this MLflow store ({redact_uri(tracking_uri())}): "
            "not nested under the cross-validation's run"
            for r in absent
        ]
        if absent:
            (out_dir / "report.md").write_text(render_report(doc, folds))
    write_text_atomic(
        out_dir / "metrics.json", json.dumps(_finite(doc), indent=2), "the out-of-fold metrics"
    )
    return doc


def _finite(value):
    """NaN and inf as null (JSON has neither)."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _f(v, digits: int = 3) -> str:
    if v is None or (isinstance(v, float) and not np.isfinite(v)):
        return "n/a"
    return f"{v:.{digits}f}" if isinstance(v, (float, np.floating)) else str(v)


def _with_ci(section: dict, key: str) -> str:
    ci = (section.get("ci95") or {}).get(key)
    if not ci:
        return _f(section[key])
    return f"{_f(section[key])} ({_f(ci[0])}–{_f(ci[1])})"


def pooling_note(folds: pd.DataFrame, pooled: dict) -> str:
    """Why the pooled CPM is what it is: the folds' findings keep their own model's
    probabilities, which are not on one scale."""
    thr = folds["threshold"].dropna() if "threshold" in folds else pd.Series(dtype=float)
    cpm = folds["cpm"].dropna() if "cpm" in folds else pd.Series(dtype=float)
    scale = (
        f" (the folds' cube thresholds, Youden's J on each fold's own val patients, run from "
        f"{_f(float(thr.min()))} to {_f(float(thr.max()))})"
        if len(thr)
        else ""
    )
    mean = f" (the folds' own CPMs average {_f(float(cpm.mean()))})" if len(cpm) else ""
    return (
        "The findings are pooled as LUNA16 pools its ten folds: each keeps the probability of "
        f"the fold model that scored it. Those probabilities are not on one scale{scale}, and "
        "the scores are not recalibrated: a calibration fitted on a fold's validation cubes "
        "would not carry over to whole-scan candidates, which differ from the dataset's "
        "cubes. One threshold over the pooled findings therefore ranks one fold's false "
        "positives among another's nodules, and the pooled CPM "
        f"({_f(pooled.get('cpm'))}) can fall below the folds' own{mean}; the per-fold table "
        "shows each fold on its own scale."
    )


def render_report(doc: dict, folds: pd.DataFrame) -> str:
    """report.md of a cross-validation."""
    d, m, s = doc["cubes"]["detection"], doc["cubes"]["malignancy"], doc["detection"]
    cpm = _f(s.get("cpm"))
    if s.get("cpm_ci_low") is not None:
        cpm += f" ({_f(s['cpm_ci_low'])}–{_f(s['cpm_ci_high'])})"
    lines = [
        f"# Cross-validation: {doc['n_folds']} folds, out of fold",
        "",
        f"Every figure pools the held-out patients of {doc['folds_done']} of {doc['n_folds']} "
        f"folds ({doc['n_patients']} patients), each scored by the one fold model that did "
        "not train on it; 95 % CIs by patient bootstrap (cubes) and scan bootstrap (FROC).",
        "",
        "| figure | out of fold (95 % CI) |",
        "|---|---|",
        f"| cube detection AUC ({d['n_cubes']} cubes) | {_with_ci(d, 'auc')} |",
        f"| recall at each fold's threshold | {_with_ci(d, 'recall')} |",
        f"| specificity | {_with_ci(d, 'specificity')} |",
        f"| malignancy MAE ({m['n_nodules']} nodule cubes) | {_with_ci(m, 'mae')} |",
        f"| malignancy Pearson | {_with_ci(m, 'pearson')} |",
        f"| CPM ({s.get('n_scans', 0)} scans, {s.get('n_nodules', 0)} nodules) | {cpm} |",
        f"| candidate sensitivity | {_f(s.get('candidate_sensitivity'))} |",
    ]
    if doc["baselines"]:
        lines += ["", "Malignancy beside the baselines (each fitted on its fold's train nodules):"]
        lines += [
            "",
            "| predictor | MAE | Pearson | CNN − it: MAE (95 % CI) |",
            "|---|---|---|---|",
        ]
        lines.append(f"| CNN | {_f(m['mae'])} | {_f(m['pearson'])} | |")
        for name, b in doc["baselines"].items():
            v = doc["cnn_minus_baseline"][name]
            lo, hi = v["mae_diff_ci"]
            lines.append(
                f"| {name} | {_f(b['mae'])} | {_f(b['pearson'])} | "
                f"{_f(v['mae_diff'])} ({_f(lo)}–{_f(hi)}) |"
            )
    lines += ["", "## Per fold", "", "| " + " | ".join(FOLD_COLUMNS) + " |"]
    lines.append("|" + "---|" * len(FOLD_COLUMNS))
    for r in folds.to_dict("records"):
        lines.append("| " + " | ".join(_f(r[c]) for c in FOLD_COLUMNS) + " |")
    for col, v in doc["fold_spread"].items():
        lines.append(f"\n{col}: mean {_f(v['mean'])}, sd {_f(v['sd'])} over the folds.")
    if doc["missing"]:
        lines += ["", "## Not included", ""] + [f"- {why}" for why in doc["missing"]]
    if s.get("n_scans"):
        lines += ["", "## Pooled FROC", "", pooling_note(folds, s), ""]
        lines += ["![FROC](detection/froc.png)", ""]
        lines.append("The pooled detection report: [detection/report.md](detection/report.md).")
    return "\n".join(lines) + "\n"
