"""The "before" row of BENCHMARKS.md's CPU training table: the same measures as
``bench/train_throughput.py`` (20 timed steps after 3 warm-up; 2 epochs, the last timed)
through the Trainer API as it was before issue 10 (MONAI per-sample augmentation in a
DataLoader rebuilt every epoch, a host sync every step). It only runs against that code:

    git worktree add /tmp/before-issue10 c9c7207
    PYTHONPATH=/tmp/before-issue10 python bench/train_throughput_before_issue10.py \\
        --tree /tmp/before-issue10
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tree", required=True, help="worktree of commit c9c7207")
    parser.add_argument("--dataset", default="data/processed")
    parser.add_argument("--splits", default="data/splits.json")
    args = parser.parse_args()
    sys.path.insert(0, f"{args.tree}/bench")
    from train_throughput import _cycle, _repeat, _run  # the old benchmark's helpers

    import lungcad
    from lungcad.training.config import TrainConfig
    from lungcad.training.data import load_cube_data
    from lungcad.training.trainer import Trainer

    if not lungcad.__file__.startswith(args.tree):
        raise SystemExit(f"lungcad comes from {lungcad.__file__}: set PYTHONPATH={args.tree}")
    data = load_cube_data(args.dataset, args.splits)
    trainer = Trainer(
        TrainConfig.from_params(f"{args.tree}/params.yaml"),
        data,
        "/tmp/lungcad-bench-before",
        progress=False,
    )
    trainer.on_train_start()
    pipeline = _run(trainer, _cycle(trainer), 20, 3)
    in_memory = _run(trainer, _repeat(next(iter(trainer.on_epoch_start(0)))), 20, 3)
    for epoch in range(2):
        started = time.perf_counter()
        trainer.train_epoch(epoch, trainer.on_epoch_start(epoch))
        train_s = time.perf_counter() - started
        started = time.perf_counter()
        trainer.validate()
        val_s = time.perf_counter() - started
    n = len(trainer.train_set)
    print(
        f"before issue 10, {torch.get_num_threads()} threads: in-memory {in_memory:.1f}, "
        f"pipeline {pipeline:.1f}, epoch {n / train_s:.1f}, e2e {n / (train_s + val_s):.1f} "
        f"cubes/s; epoch + val {train_s + val_s:.2f} s (val {val_s:.2f} s)"
    )


if __name__ == "__main__":
    main()
