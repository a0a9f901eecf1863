"""Benchmark: does the dense detector find a nodule wherever it sits in a sliding-window patch?

Runs the dense detector of `lungcad detect` over a split's scans several times, each time
with the 1 mm grid widened on every side (``GRID_MARGIN_MM`` 16, 40 and 64 mm): the grid
starts further from the lungs, so every nodule lands 24 and 48 voxels further into the
patches (a quarter and a half of a 96-voxel patch), while the lung region, the model and
every other setting stay (``--margins`` sets other widenings: 16, 17, 18 and 20 mm move each
nodule by 1, 2 and 4 voxels, less than the network's strides). Scores each run against the
readers like `lungcad evaluate-detection` and prints, per nodule, its best finding's
probability in each run; then the sensitivity at the threshold and the CPM per run, and how
much a nodule's probability moves from one patch position to another.

Usage:
    python bench/dense_patch_position.py --model models/best.pt \
        --params params.yaml --split test --out /tmp/patch-position
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

import lungcad.detection.dense as dense
from lungcad.config import load_params
from lungcad.core.splits import load_splits
from lungcad.detection.batch import DetectSettings, detect_scans
from lungcad.detection.froc import froc, label_findings
from lungcad.detection.froc_report import read_runs

MARGINS_MM = (16.0, 40.0, 64.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/best.pt")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--scans", default="data/raw/LIDC-IDRI")
    parser.add_argument("--splits", default="data/splits.json")
    parser.add_argument("--split", default="test")
    parser.add_argument("--out", required=True)
    parser.add_argument("--margins", type=float, nargs="+", default=list(MARGINS_MM))
    args = parser.parse_args()
    margins = tuple(args.margins)
    params = load_params(args.params)
    patients = set(load_splits(args.splits)[args.split])
    settings = DetectSettings(detect=params.detect, figures=False, explain=False, dicom=False)
    best, figures = {}, {}
    for margin in margins:
        dense.GRID_MARGIN_MM = margin
        run = Path(args.out) / f"margin{margin:g}"
        detect_scans(args.scans, run, args.model, settings, patients=patients, progress=True)
        tables = read_runs([run])
        uids = tables["scans"]["seriesuid"].astype(str).tolist()
        reference = tables["annotations"].reset_index(drop=True)
        result = froc(tables["detections"], reference, tables["excluded"], uids)
        labelled = label_findings(tables["detections"], reference, tables["excluded"])
        hits = labelled[labelled["label"] == "hit"].groupby("nodule")["probability"].max()
        best[margin] = hits.reindex(reference.index).fillna(0.0)
        found = best[margin] >= params.detect.threshold
        figures[margin] = {"cpm": result.cpm, "sensitivity_at_threshold": float(found.mean())}
        print(f"margin {margin:g} mm: CPM {result.cpm:.3f}, at the threshold {found.mean():.3f}")
    table = pd.DataFrame(best)
    table.insert(0, "diameter_mm", reference["diameter_mm"].round(1))
    spread = table[list(margins)].max(axis=1) - table[list(margins)].min(axis=1)
    flips = (table[list(margins)] >= params.detect.threshold).nunique(axis=1) > 1
    print(table.round(3).to_string())
    summary = {
        "runs": {f"{m:g}": f for m, f in figures.items()},
        "nodules": len(table),
        "median_spread": float(np.median(spread)),
        "max_spread": float(spread.max()),
        "nodules_found_in_some_positions_only": int(flips.sum()),
    }
    print(json.dumps(summary, indent=1))
    (Path(args.out) / "summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
