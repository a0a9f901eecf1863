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

With ``--benchmark data/benchmark`` each seed's ``best.pt`` is also scored on the sealed
benchmark by ``lungcad benchmark score`` (a folder that already holds its score is not
scored again: copy the benchmark pipeline's ``reports/benchmark/metrics.json`` into
``seed0/benchmark/`` to reuse its score of the pipeline's model), and ``--summary`` gets the
benchmark figures per seed with their spread: the results page reads it.

``--cpu-isa avx2`` trains and scores in folders ``seed<k>-avx2`` with PyTorch's and oneDNN's
kernels held to AVX2 (``ATEN_CPU_CAPABILITY``, ``ONEDNN_MAX_CPU_ISA``): the same cubes and
seed computed as a CPU without AVX-512 computes them, the spread between machines.

Writes <out>/seed_spread.json (every figure) and prints the table: per seed and
selection the test AUC, MAE and CPM, and their spread (max - min) and sd over seeds.

Usage (in a clone whose ``dvc repro`` and ``dvc repro benchmark/dvc.yaml`` have run):
    python bench/seed_spread.py --seeds 0 1 2 --out bench/results/seeds \
        --benchmark data/benchmark --summary reports/benchmark/seeds.json
    python bench/seed_spread.py --seeds 0 --cpu-isa avx2 --selections average
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

CHECKPOINTS = {"average": "best.pt", "best_epoch": "best_epoch.pt"}

#: Environment that holds PyTorch's and oneDNN's CPU kernels to an instruction set.
CPU_ISA = {
    "avx2": {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2"},
    "default": {"ATEN_CPU_CAPABILITY": "default", "ONEDNN_MAX_CPU_ISA": "SSE41"},
}
ENV = dict(os.environ)


def lungcad(*args: str) -> None:
    cmd = ["lungcad", *args]
    print("+", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=ENV)


def benchmark_score(checkpoint: Path, out: Path, data: Path, params: Path) -> dict:
    """The benchmark's score of one checkpoint (``lungcad benchmark score``)."""
    if not (out / "metrics.json").is_file():
        lungcad(
            "benchmark",
            "score",
            "--model",
            str(checkpoint),
            "--data",
            str(data),
            "--out",
            str(out),
            "--dataset",
            "data/processed",
            "--splits",
            "data/splits.json",
            "--params",
            str(params),
            "--quiet",
        )
    m = json.loads((out / "metrics.json").read_text())
    f, per = m["froc"], m.get("per_nodule") or {}
    dice = (m.get("finding_dice") or {}).get("detected") or {}
    return {
        "model": m["model"],
        "cpm": f["cpm"],
        "cpm_ci95": [f.get("cpm_ci_low"), f.get("cpm_ci_high")],
        "sensitivity_at_threshold": per.get("sensitivity_at_threshold"),
        "finding_dice_detected": dice.get("mean"),
        "n_scans": f["n_scans"],
        "n_nodules": f["n_nodules"],
    }


def strict(value):
    """``value`` with NaN as None: the summary is strict JSON."""
    if isinstance(value, dict):
        return {k: strict(v) for k, v in value.items()}
    if isinstance(value, list):
        return [strict(v) for v in value]
    if isinstance(value, float) and value != value:
        return None
    return value


def spread_of(values: list[float]) -> dict[str, float]:
    v = np.array([x for x in values if x is not None], float)
    if not len(v):
        return {}
    return {
        "mean": float(v.mean()),
        "sd": float(v.std(ddof=1)) if len(v) > 1 else float("nan"),
        "spread": float(v.max() - v.min()),
    }


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
    parser.add_argument("--selections", nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--cpu-isa", choices=sorted(CPU_ISA), default=None)
    parser.add_argument("--benchmark", type=Path, default=None)
    parser.add_argument("--summary", type=Path, default=None)
    args = parser.parse_args()
    if args.cpu_isa:
        ENV.update(CPU_ISA[args.cpu_isa])
    tail = f"-{args.cpu_isa}" if args.cpu_isa else ""
    checkpoints = {k: v for k, v in CHECKPOINTS.items() if k in args.selections}
    raw_root = yaml.safe_load(args.params.read_text())["data"]["raw_root"]
    figures: dict[str, dict[int, dict]] = {name: {} for name in checkpoints}
    bench: dict[int, dict] = {}
    seconds = {}
    for seed in args.seeds:
        folder = args.out / f"seed{seed}{tail}"
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
        for selection, name in checkpoints.items():
            figures[selection][seed] = score(folder / name, folder / selection, params, raw_root)
        if args.benchmark:
            bench[seed] = benchmark_score(
                folder / "best.pt", folder / "benchmark", args.benchmark, params
            )
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
    doc = {
        "seeds": args.seeds,
        "cpu_isa": args.cpu_isa or "native",
        "per_seed": figures,
        "summary": summary,
        "train_seconds": seconds,
    }
    if bench:
        doc["benchmark"] = {
            "per_seed": bench,
            "spread": {
                key: spread_of([b[key] for b in bench.values()])
                for key in ("cpm", "sensitivity_at_threshold", "finding_dice_detected")
            },
        }
        print("\nbenchmark: " + ", ".join(f"seed {k} CPM {b['cpm']:.3f}" for k, b in bench.items()))
    doc = strict(doc)
    out = args.out / f"seed_spread{tail}.json"
    out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"-> {out}")
    if args.summary:
        args.summary.parent.mkdir(parents=True, exist_ok=True)
        args.summary.write_text(json.dumps(doc, indent=2, default=str))
        print(f"-> {args.summary}")


if __name__ == "__main__":
    sys.exit(main())
