"""Benchmark: how much the default model's test figures move with the training seed, for
each way of choosing the model (``train.selection``).

For each seed, trains the default configuration on the default split with that
``train.seed`` (MLflow experiment ``lungcad-seeds``, apart from the pipeline's), then
scores both checkpoints every training writes: ``best.pt`` (the weights averaged over the
last ``train.average_last`` epochs) and ``best_epoch.pt`` (the best validation epoch):
``lungcad evaluate`` (cube AUC, malignancy MAE) and ``lungcad detect`` +
``lungcad evaluate-detection`` (FROC CPM) on the test split, exactly as the pipeline's
stages do. A seed folder that already holds both checkpoints is not trained again (copy
the pipeline's ``models/`` there to reuse its training of ``train.seed``).

Writes <out>/seed_spread.json (every figure) and prints the table: per seed and
selection the test AUC, MAE and CPM, and their spread (max - min) and sd over seeds.

Usage (in a clone whose ``dvc repro`` has run):
    python bench/seed_spread.py --seeds 0 1 2 --out bench/results/seeds
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

CHECKPOINTS = {"average": "best.pt", "best_epoch": "best_epoch.pt"}


def lungcad(*args: str) -> None:
    cmd = ["lungcad", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True)


def seed_params(params: Path, seed: int, folder: Path) -> Path:
    doc = yaml.safe_load(params.read_text())
    doc["train"]["seed"] = seed
    doc["train"]["experiment"] = "lungcad-seeds"
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def score(checkpoint: Path, out: Path, params: Path, raw_root: str) -> dict[str, float]:
    """Test cube metrics and CPM of one checkpoint, as the pipeline computes them."""
    if not (out / "detection" / "metrics.json").exists():
        lungcad(
            "evaluate",
            "--model",
            str(checkpoint),
            "--out",
            str(out / "evaluate"),
            "--params",
            str(params),
        )
        lungcad(
            "detect",
            raw_root,
            "--model",
            str(checkpoint),
            "--out",
            str(out / "run"),
            "--splits",
            "data/splits.json",
            "--split",
            "test",
            "--params",
            str(params),
            "--workers",
            "0",
            "--quiet",
        )
        lungcad(
            "evaluate-detection",
            "--detections",
            str(out / "run"),
            "--out",
            str(out / "detection"),
            "--params",
            str(params),
        )
    cubes = json.loads((out / "evaluate" / "metrics.json").read_text())
    froc = json.loads((out / "detection" / "metrics.json").read_text())
    return {
        "auc": cubes["detection"]["auc"],
        "mae": cubes["malignancy"]["mae"],
        "pearson": cubes["malignancy"]["pearson"],
        "cpm": froc["cpm"],
        "selected": cubes.get("selected", f"epoch {cubes['best_epoch']}"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/seeds"))
    args = parser.parse_args()
    raw_root = yaml.safe_load(args.params.read_text())["data"]["raw_root"]
    figures: dict[str, dict[int, dict]] = {name: {} for name in CHECKPOINTS}
    seconds = {}
    for seed in args.seeds:
        folder = args.out / f"seed{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        params = seed_params(args.params, seed, folder)
        if not all((folder / name).exists() for name in CHECKPOINTS.values()):
            started = time.perf_counter()
            lungcad(
                "train",
                "--dataset",
                "data/processed",
                "--splits",
                "data/splits.json",
                "--out",
                str(folder),
                "--params",
                str(params),
                "--run-name",
                f"seed{seed}",
                "--quiet",
            )
            seconds[seed] = time.perf_counter() - started
        for selection, name in CHECKPOINTS.items():
            figures[selection][seed] = score(folder / name, folder / selection, params, raw_root)
    summary = {}
    print(f"\n{'selection':10s} {'seed':>4s} {'model':>22s} {'AUC':>6s} {'MAE':>6s} {'CPM':>6s}")
    for selection, per_seed in figures.items():
        for seed, f in per_seed.items():
            print(
                f"{selection:10s} {seed:4d} {f['selected']:>22s} "
                f"{f['auc']:6.3f} {f['mae']:6.3f} {f['cpm']:6.3f}"
            )
        spread = {}
        for key in ("auc", "mae", "pearson", "cpm"):
            values = np.array([f[key] for f in per_seed.values()])
            spread[key] = {
                "mean": float(values.mean()),
                "sd": float(values.std(ddof=1)) if len(values) > 1 else float("nan"),
                "spread": float(values.max() - values.min()),
            }
        summary[selection] = spread
        print(
            f"{selection:10s} spread (max - min): AUC {spread['auc']['spread']:.3f}, "
            f"MAE {spread['mae']['spread']:.3f}, CPM {spread['cpm']['spread']:.3f}; "
            f"mean AUC {spread['auc']['mean']:.3f}, CPM {spread['cpm']['mean']:.3f}"
        )
    doc = {"seeds": args.seeds, "per_seed": figures, "summary": summary, "train_seconds": seconds}
    (args.out / "seed_spread.json").write_text(json.dumps(doc, indent=2, default=str))
    print(f"-> {args.out / 'seed_spread.json'}")


if __name__ == "__main__":
    sys.exit(main())
