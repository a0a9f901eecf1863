"""Benchmark: `lungcad train` in one process vs `lungcad train --nproc N` (DDP over gloo).

Trains the configuration users run (params.yaml's train section, on the dataset of
`dvc repro`) for a few epochs, once per process count, each into its own folder and its own
MLflow store, and prints per-epoch wall time and the last epoch's validation metrics.
On a CPU the point is correctness (the same code path as on GPUs), not speed: N processes
share the same cores (torchrun gives each one OMP thread), and the global batch is
N × train.batch_size, so the metrics after the same number of epochs differ.

Usage:
    python bench/ddp_cpu.py [--epochs 3] [--nproc 1 2] [--out /tmp/lungcad-ddp-bench]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path


def run(nproc: int, epochs: int, out: Path) -> dict:
    folder = out / f"nproc{nproc}"
    folder.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "lungcad.cli.main", "train", "--epochs", str(epochs)]
    cmd += ["--out", str(folder / "models"), "--nproc", str(nproc), "--quiet"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{folder}/mlflow.db"}
    started = time.perf_counter()
    subprocess.run(cmd, env=env, check=True, stdout=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    history = json.loads((folder / "models" / "history.json").read_text())
    return {"nproc": nproc, "wall_s": wall, "history": history}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--nproc", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--out", type=Path, default=Path("/tmp/lungcad-ddp-bench"))
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, epochs: {args.epochs}")
    print(
        "| processes | wall (s) | train s/epoch (mean) | val s/epoch | "
        "last val AUC | last val MAE | last val objective |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for nproc in args.nproc:
        r = run(nproc, args.epochs, args.out)
        h = r["history"]
        train_s = sum(e["epoch_train_s"] for e in h) / len(h)
        val_s = sum(e["epoch_val_s"] for e in h) / len(h)
        last = h[-1]
        print(
            f"| {nproc} | {r['wall_s']:.0f} | {train_s:.1f} | {val_s:.1f} | "
            f"{last['val_auc']:.3f} | {last['val_mae']:.3f} | {last['val_objective']:.3f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
