"""Score one model (a checkpoint or a fold ensemble) on the benchmark.

``lungcad detect`` runs on every scan of the benchmark as a user runs it; the FROC is
scored against the benchmark's own LUNA16 tables (``annotations.csv``,
``annotations_excluded.csv``) by LUNA16's rules, with 95 % CIs from resampling patients. A
scan that fails counts as a scan without findings. Beside the CPM:

- per reference nodule at the detection threshold: sensitivity, findings per detected
  nodule, the best finding's size error against the readers' mean diameter (missed and
  unsized nodules counted);
- the Dice of each reference nodule's detected finding with the readers' consensus (the
  finding's own mask and localisation), over the detected nodules and over all of them with
  a missed one counting 0;
- the malignancy of the detected nodules against the readers' mean rating, beside the
  diameter-only baseline (gradient boosting on the dataset's train nodules) fed the model's
  own measured size, the same baseline fed the readers' size (an oracle line), and the
  train nodules' mean rating; paired CIs resample patients;
- seconds per scan and the peak memory of the whole run.
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.benchmark.build import MANIFEST, NODULES
from lungcad.core.metrics import malignancy_metrics
from lungcad.core.model.checkpoint import checkpoint_sha256
from lungcad.core.outputs import write_text_atomic
from lungcad.detection.batch import DetectSettings, detect_scans
from lungcad.detection.froc import label_findings
from lungcad.detection.froc_report import evaluate_detection
from lungcad.evaluation.baselines import diameter_only_model
from lungcad.phantom.luna16 import ANNOTATIONS, EXCLUDED

COORDS = ["coordX", "coordY", "coordZ"]


def detected_nodules(
    findings: pd.DataFrame, nodules: pd.DataFrame, threshold: float
) -> pd.DataFrame:
    """Each reference nodule with its best finding at or above ``threshold`` inside its
    radius (LUNA16's hit rule): ``probability``, ``malignancy_pred`` and ``diameter_pred``
    (NaN where it was missed or the finding is unsized)."""
    out = nodules.reset_index(drop=True).copy()
    out[["probability", "malignancy_pred", "diameter_pred"]] = np.nan
    above = findings[findings["probability"] >= threshold]
    if len(above) == 0 or len(out) == 0:
        return out
    labelled = label_findings(above, out, out.iloc[:0])
    hits = labelled[labelled["label"] == "hit"].sort_values("probability", ascending=False)
    best = hits.groupby("nodule").head(1).set_index("nodule")
    out.loc[best.index, "probability"] = best["probability"].to_numpy(float)
    out.loc[best.index, "malignancy_pred"] = best["malignancy"].to_numpy(float)
    out.loc[best.index, "diameter_pred"] = best["diameter_mm"].to_numpy(float)
    return out


def _paired_ci(
    truth: np.ndarray, a: np.ndarray, b: np.ndarray, groups: np.ndarray, n: int, seed: int
) -> tuple[float, float]:
    """95 % CI of MAE(a) - MAE(b), resampling patients."""
    rng = np.random.default_rng(seed)
    units = np.unique(groups)
    rows = [np.flatnonzero(groups == u) for u in units]
    diffs = []
    for _ in range(n):
        pick = np.concatenate([rows[i] for i in rng.integers(len(units), size=len(units))])
        diffs.append(np.abs(a[pick] - truth[pick]).mean() - np.abs(b[pick] - truth[pick]).mean())
    return float(np.percentile(diffs, 2.5)), float(np.percentile(diffs, 97.5))


def malignancy_of_detected(
    table: pd.DataFrame, train_nodules: pd.DataFrame | None, n_boot: int, seed: int
) -> dict:
    """The model's malignancy on the detected nodules, beside its baselines (module
    docstring). ``table``: ``detected_nodules`` with ``patient_id``."""
    found = table[table["malignancy_pred"].notna()]
    if len(found) < 2:
        return {"n_nodules": int(len(found))}
    truth = found["malignancy"].to_numpy(float)
    model = found["malignancy_pred"].to_numpy(float)
    groups = found["patient_id"].astype(str).to_numpy()
    out: dict = {"n_nodules": int(len(found)), "model": malignancy_metrics(truth, model)}
    if train_nodules is None or len(train_nodules) < 5:
        return out
    fitted = diameter_only_model(train_nodules, seed)
    mean_size = float(train_nodules["diameter_mm"].mean())
    size = found["diameter_pred"].fillna(mean_size).to_numpy(float)  # unsized: a mean nodule
    baselines = {
        "train_mean": np.full(len(found), float(train_nodules["malignancy_mean"].mean())),
        "diameter_only_model_size": np.clip(fitted.predict(size[:, None]), 1, 5),
        "diameter_only_readers_size_oracle": np.clip(
            fitted.predict(found["diameter_mm"].to_numpy(float)[:, None]), 1, 5
        ),
    }
    out["baselines"] = {k: malignancy_metrics(truth, v) for k, v in baselines.items()}
    out["model_minus_baseline_mae_ci95"] = {
        k: _paired_ci(truth, model, v, groups, n_boot, seed) for k, v in baselines.items()
    }
    return out


def _model_name(checkpoint: str | Path, label: str) -> str:
    """A registry URI as given; a file by its name and the first 12 hex digits of its
    SHA-256 (a local path can name a person)."""
    if label.startswith(("models:/", "runs:/")):
        return label
    return f"{Path(checkpoint).name} sha256:{checkpoint_sha256(checkpoint)[:12]}"


def _peak_rss_mb() -> float:
    """Peak resident memory of this process and of its finished children, MB."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    return max(own, children) / 1024


def score_benchmark(
    root: str | Path,
    checkpoint: str | Path,
    out_dir: str | Path,
    settings: DetectSettings,
    workers: int = 1,
    bootstrap: int = 1000,
    seed: int = 0,
    train_nodules: pd.DataFrame | None = None,
    model_label: str = "",
    progress: bool = True,
) -> dict:
    """Detect on every benchmark scan into ``out_dir/detect``, score it into
    ``out_dir/froc`` and write ``out_dir/metrics.json``; returns the metrics.

    Raises:
        ValueError: ``root`` is not a built benchmark (no manifest or tables), naming it.
    """
    root, out_dir = Path(root), Path(out_dir)
    for name in (MANIFEST, ANNOTATIONS, EXCLUDED, NODULES):
        if not (root / name).is_file():
            raise ValueError(
                f"{root} is not a built benchmark ({name} is missing): run `lungcad benchmark "
                "build` (or `dvc repro benchmark/dvc.yaml`)"
            )
    start = time.perf_counter()
    scans = detect_scans(
        root, out_dir / "detect", checkpoint, settings, workers, progress, model_label=model_label
    )
    wall = time.perf_counter() - start
    threshold = settings.detect.threshold
    froc = evaluate_detection(
        out_dir / "detect",
        out_dir / "froc",
        root / ANNOTATIONS,
        root / EXCLUDED,
        bootstrap,
        seed,
        threshold,
    )
    findings = pd.read_csv(out_dir / "detect" / "detections.csv", dtype={"seriesuid": str})
    nodules = pd.read_csv(root / NODULES, dtype={"seriesuid": str})
    owner = pd.read_csv(root / "scans.csv", dtype={"seriesuid": str, "patient_id": str})
    nodules = nodules.merge(owner[["seriesuid", "patient_id"]], on="seriesuid", how="left")
    table = detected_nodules(findings, nodules, threshold)
    table.to_csv(out_dir / "nodules.csv", index=False)
    manifest = json.loads((root / MANIFEST).read_text())
    ok = scans[scans["status"] == "ok"]
    metrics = {
        "benchmark": manifest,
        "model": _model_name(checkpoint, model_label),
        "threshold": threshold,
        "froc": {k: v for k, v in froc.items() if k not in ("per_nodule", "finding_dice")},
        "per_nodule": froc.get("per_nodule"),
        "finding_dice": froc.get("finding_dice"),
        "malignancy_detected": malignancy_of_detected(table, train_nodules, bootstrap, seed),
        "scans_scored": int(len(ok)),
        "scans_failed": int((scans["status"] == "error").sum()),
        "seconds_per_scan": float(ok["seconds_total"].mean()) if len(ok) else None,
        "wall_seconds": wall,
        "workers": workers,
        "peak_rss_mb": _peak_rss_mb(),
    }
    metrics = finite(metrics)
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2), "the metrics")
    return metrics


def finite(value):
    """``value`` with every NaN or infinite number as None (JSON has no NaN), numpy
    numbers as Python ones."""
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if np.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value
