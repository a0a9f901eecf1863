"""Benchmark: the default phantom's size against what the heads learn and what `dvc repro` costs.

For each phantom size (``phantom.scans``), in a clone of lungcad (its own
folder, its own venv or the current one, its own MLflow store), sets ``phantom.scans``,
runs the pipeline one stage at a time with ``dvc repro --single-item`` and records each
stage's wall time, the dataset's size (scans, nodule cubes, training nodules, test nodules)
and the test metrics of ``evaluate`` (AUC, malignancy MAE / Pearson, the diameter-only and
semantic-oracle baselines, the paired model - diameter difference, attributes better than the
training mean) and, if ``detect`` ran, the CPM.

Every size gets its own patient split, as a user running ``dvc repro`` at that size would:
the test split grows with the dataset, so the metrics of different sizes are measured on
different (nested, larger) test sets.

Usage (in a clone that nothing else is using; it rewrites that clone's params.yaml):
    python bench/dataset_size.py --clone ../lungcad-size --scans 40 60 90 \
        [--stages phantom preprocess split train evaluate] --out bench-dataset-size.jsonl
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import subprocess
import time
from pathlib import Path

STAGES = [
    "phantom",
    "realism",
    "preprocess",
    "split",
    "train",
    "evaluate",
    "explain",
    "detect",
    "evaluate_detection",
    "promote",
]


def set_scans(params: Path, scans: int) -> None:
    text = params.read_text()
    new, count = re.subn(r"(?m)^(phantom:\n(?:  .*\n|\n)*?  scans: )\d+", rf"\g<1>{scans}", text)
    if count != 1:
        raise SystemExit(f"{params}: no phantom.scans to set")
    params.write_text(new)


def dataset_counts(clone: Path) -> dict:
    with (clone / "data/processed/index.csv").open() as f:
        rows = list(csv.DictReader(f))
    splits = json.loads((clone / "data/splits.json").read_text())
    where = {pid: name for name in ("train", "val", "test") for pid in splits.get(name, [])}
    nodules = [r for r in rows if r["label"] == "1"]
    return {
        "scans": len({r["patient_id"] for r in rows}),
        "cubes": len(rows),
        "nodules": len(nodules),
        **{
            f"{s}_nodules": sum(where.get(r["patient_id"]) == s for r in nodules)
            for s in ("train", "val", "test")
        },
    }


def test_metrics(clone: Path, detected: bool) -> dict:
    m = json.loads((clone / "reports/metrics.json").read_text())
    diff = m["cnn_minus_baseline_test"]["diameter_only"]
    out = {
        "test_auc": m["detection"]["auc"],
        "test_recall": m["detection"]["recall"],
        "test_mae": m["malignancy"]["mae"],
        "test_pearson": m["malignancy"]["pearson"],
        "diameter_mae": m["baselines_test"]["diameter_only"]["mae"],
        "diameter_pearson": m["baselines_test"]["diameter_only"]["pearson"],
        "oracle_mae": m["baselines_test"]["semantic_oracle"]["mae"],
        "oracle_pearson": m["baselines_test"]["semantic_oracle"]["pearson"],
        "mae_minus_diameter": diff["mae_diff"],
        "mae_minus_diameter_ci": diff["mae_diff_ci"],
        "attributes_beating_train_mean": sorted(
            name
            for name, a in m.get("attributes_test", {}).items()
            if isinstance(a, dict) and a["beats_train_mean"]
        ),
        "best_epoch": m.get("best_epoch"),
    }
    if detected:  # else the file is the one committed with the clone, not this size's
        out["cpm"] = json.loads((clone / "reports/detection/metrics.json").read_text())["cpm"]
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clone", type=Path, required=True)
    parser.add_argument("--scans", type=int, nargs="+", default=[40, 60, 90])
    parser.add_argument("--stages", nargs="+", default=STAGES[:1] + STAGES[2:6], choices=STAGES)
    parser.add_argument("--out", type=Path, default=Path("bench-dataset-size.jsonl"))
    args = parser.parse_args()
    clone = args.clone.resolve()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "MPLBACKEND": "Agg"}
    for scans in args.scans:
        set_scans(clone / "params.yaml", scans)
        seconds = {}
        for stage in args.stages:
            started = time.perf_counter()
            subprocess.run(
                ["dvc", "repro", "--single-item", stage],
                cwd=clone,
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds[stage] = round(time.perf_counter() - started, 1)
            print(f"scans={scans} {stage}: {seconds[stage]} s", flush=True)
        record = {
            "phantom_scans": scans,
            "seconds": seconds,
            "seconds_total": sum(seconds.values()),
            **dataset_counts(clone),
            **test_metrics(clone, "evaluate_detection" in args.stages),
        }
        with args.out.open("a") as f:
            f.write(json.dumps(record) + "\n")
        print(json.dumps(record, indent=1), flush=True)


if __name__ == "__main__":
    main()
