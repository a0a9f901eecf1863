"""Benchmark: models scored on the sealed benchmark, side by side.

Reads the folders ``lungcad benchmark score`` wrote (``metrics.json``, ``nodules.csv``,
``detect/detections.csv``), one per model and detector, and prints one markdown table of
their figures with the CIs the score computed: CPM, the sensitivities of LUNA16's seven
false-finding rates, the nodules found at any probability, the sensitivity at each one's
threshold (overall and per size band), findings per detected nodule, the median size error,
the Dice at the detected finding, the malignancy of the detected nodules, seconds per scan
and peak memory.

Each run's malignancy is scored on the nodules it detected, so two runs' figures come
from different nodules. The last rows compare them on the nodules every run detected at
its threshold: each run's MAE and Pearson on those, and the difference of each from the
first run's with a 95 % CI from resampling patients (the same nodules, paired).

Writes ``--out`` (JSON, every figure) when given.

Usage (after ``dvc repro benchmark/dvc.yaml``, which scores the pipeline's model):
    lungcad benchmark score --model models/cubes/best.pt --params configs/cubes.yaml \\
        --out reports/benchmark-dense/cube
    python bench/benchmark_side_by_side.py cube=reports/benchmark-dense/cube \\
        dense=reports/benchmark --out reports/benchmark-dense/side_by_side.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.core.metrics import bootstrap_ci, malignancy_metrics

RATES = ("0.125", "0.25", "0.5", "1", "2", "4", "8")


def read_run(folder: Path) -> dict:
    """One benchmark score's metrics and per-nodule table."""
    for name in ("metrics.json", "nodules.csv"):
        if not (folder / name).is_file():
            raise SystemExit(f"{folder}: no {name}; run `lungcad benchmark score --out {folder}`")
    metrics = json.loads((folder / "metrics.json").read_text())
    nodules = pd.read_csv(folder / "nodules.csv", dtype={"seriesuid": str, "patient_id": str})
    return {"metrics": metrics, "nodules": nodules}


def _ci(pair) -> str:
    return "" if not pair else f" ({pair[0]:.3f}–{pair[1]:.3f})"


def _num(value, digits: int = 3) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def rows_of(run: dict) -> dict[str, str]:
    """The table's cells for one run."""
    m = run["metrics"]
    froc, per = m["froc"], m.get("per_nodule") or {}
    dice = (m.get("finding_dice") or {}).get("detected") or {}
    mal = (m.get("malignancy_detected") or {}).get("model") or {}
    n_mal = (m.get("malignancy_detected") or {}).get("n_nodules", 0)
    sens = ", ".join(_num(froc.get(f"sensitivity_at_{r}_fp"), 2) for r in RATES)
    bands = per.get("sensitivity_by_size") or {}
    by_size = "; ".join(
        f"{name} {round(b['sensitivity'] * b['n'])}/{b['n']}" for name, b in bands.items()
    )
    found = froc.get("max_sensitivity")
    scans = max(froc.get("n_scans") or 1, 1)
    return {
        "model": m["model"],
        "threshold": _num(m["threshold"], 2),
        "CPM (95 % CI)": _num(froc["cpm"])
        + _ci([froc["cpm_ci_low"], froc["cpm_ci_high"]] if "cpm_ci_low" in froc else None),
        "sensitivity at 1/8 … 8 false findings per scan": sens,
        "nodules found at any probability": _num(found),
        "false findings per scan at any probability": _num(froc["false_positives"] / scans, 1),
        "sensitivity at the threshold (Wilson 95 % CI)": _num(per.get("sensitivity_at_threshold"))
        + _ci(per.get("sensitivity_at_threshold_ci95")),
        "by size at the threshold": by_size,
        "findings per detected nodule": _num(per.get("findings_per_detected_nodule"), 2),
        "median size error (detected)": _num(per.get("size_error_pct_median_abs"), 1) + " %",
        "Dice at the detected finding": _num(dice.get("mean"))
        + _ci(dice.get("ci95"))
        + f", n {dice.get('n', 0)}",
        "malignancy of the detected nodules: MAE, Pearson": f"{_num(mal.get('mae'))}, "
        f"{_num(mal.get('pearson'))}, n {n_mal}",
        "seconds per scan (workers)": f"{_num(m.get('seconds_per_scan'), 1)} ({m['workers']})",
        "wall, peak RSS": f"{m['wall_seconds'] / 60:.1f} min, {m['peak_rss_mb'] / 1024:.2f} GB",
        "scans scored, failed": f"{m['scans_scored']}, {m['scans_failed']}",
    }


def common_malignancy(runs: dict[str, dict], n_boot: int = 1000, seed: int = 0) -> dict:
    """Every run's malignancy on the nodules all of them detected at their thresholds, and
    each run's difference from the first one's (95 % CI, patients resampled)."""
    names = list(runs)
    first = runs[names[0]]["nodules"]
    for name in names[1:]:
        other = runs[name]["nodules"]
        same = len(other) == len(first) and (other["seriesuid"] == first["seriesuid"]).all()
        if not same:
            raise SystemExit(f"{name}: its nodules.csv is not the same benchmark's as {names[0]}'s")
    preds = np.stack([runs[n]["nodules"]["malignancy_pred"].to_numpy(float) for n in names])
    both = np.isfinite(preds).all(axis=0)
    truth = first["malignancy"].to_numpy(float)[both]
    preds = preds[:, both]
    patients = first["patient_id"].astype(str).to_numpy()[both]
    out: dict = {"n_nodules": int(both.sum()), "n_patients": int(len(np.unique(patients)))}
    if both.sum() < 3:
        return out
    for k, name in enumerate(names):
        out[name] = malignancy_metrics(truth, preds[k])

    def differences(rows: np.ndarray) -> dict[str, float]:
        base = malignancy_metrics(truth[rows], preds[0][rows])
        diff = {}
        for k, name in enumerate(names[1:], start=1):
            m = malignancy_metrics(truth[rows], preds[k][rows])
            diff[f"{name}_mae"] = m["mae"] - base["mae"]
            diff[f"{name}_pearson"] = m["pearson"] - base["pearson"]
        return diff

    out["minus_first_ci95"] = {
        k: list(v) for k, v in bootstrap_ci(patients, differences, n_boot, seed).items()
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="name=folder of a `lungcad benchmark score`")
    parser.add_argument("--out", type=Path, help="JSON of every figure")
    args = parser.parse_args()
    runs = {}
    for item in args.runs:
        name, sep, folder = item.partition("=")
        if not sep:
            raise SystemExit(f"{item}: give each run as name=folder")
        runs[name] = read_run(Path(folder))
    cells = {name: rows_of(run) for name, run in runs.items()}
    common = common_malignancy(runs)
    print("| measure | " + " | ".join(runs) + " |")
    print("| --- |" + " --- |" * len(runs))
    for key in cells[next(iter(runs))]:
        print(f"| {key} | " + " | ".join(cells[n][key] for n in runs) + " |")
    if len(runs) > 1 and common["n_nodules"] >= 3:
        first = next(iter(runs))
        ci = common["minus_first_ci95"]
        for what in ("mae", "pearson"):
            line = [f"{_num(common[first][what])}"]
            for name in list(runs)[1:]:
                line.append(
                    f"{_num(common[name][what])} ({_num(ci[f'{name}_{what}'][0])} to "
                    f"{_num(ci[f'{name}_{what}'][1])} from {first})"
                )
            label = f"malignancy {what.upper() if what == 'mae' else 'Pearson'} on the "
            label += f"{common['n_nodules']} nodules all detected"
            print(f"| {label} | " + " | ".join(line) + " |")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"runs": cells, "common_malignancy": common}, indent=2))


if __name__ == "__main__":
    main()
