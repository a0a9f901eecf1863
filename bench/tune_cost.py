"""Benchmark: what a finished `lungcad tune` study cost, and how that cost is made up.

Reads the study from its storage (no re-run) and reports, from Optuna's own trial records:
  - trials by state and the epochs each ran (pruned trials stop early),
  - wall seconds per trial, and a least-squares fit  seconds = overhead + epochs x per_epoch,
  - the epochs the whole study ran: the study's cost in units of one training epoch.

The cost of the same study on another machine (a GPU) is then about
  epochs_run x (train cubes / training rate + validation time) + trials x overhead,
with the training rate measured there by `python bench/train_throughput.py`; pass it as
--rate (cubes/s) with --train-cubes to print that projection, labelled as such.

Usage:
    python bench/tune_cost.py [--storage journal:tune/optuna-journal.log] [--study lungcad-tune]
                              [--rate CUBES_PER_S --train-cubes N]
"""

from __future__ import annotations

import argparse

import numpy as np
import optuna

from lungcad.tuning.study import make_storage


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--storage", default="journal:tune/optuna-journal.log")
    parser.add_argument("--study", default="lungcad-tune")
    parser.add_argument("--rate", type=float, help="training cubes/s on the target machine")
    parser.add_argument("--train-cubes", type=int, help="training cubes per epoch there")
    args = parser.parse_args()

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.load_study(study_name=args.study, storage=make_storage(args.storage))
    finished = [t for t in study.trials if t.datetime_complete and t.datetime_start]
    if not finished:
        raise SystemExit(f"study {args.study} in {args.storage} has no finished trial")
    epochs = np.array([max(len(t.intermediate_values), 1) for t in finished], float)
    seconds = np.array([(t.datetime_complete - t.datetime_start).total_seconds() for t in finished])
    print(f"study {args.study}: {len(study.trials)} trials, {len(finished)} finished")
    for state in sorted({t.state.name for t in finished}):
        mask = np.array([t.state.name == state for t in finished])
        print(
            f"  {state:9s} {mask.sum():3d} trials, epochs run {epochs[mask].mean():.1f} each, "
            f"{seconds[mask].mean():6.1f} s each (p95 {np.percentile(seconds[mask], 95):.1f} s)"
        )
    print(f"epochs run by the whole study: {epochs.sum():.0f}; trial time {seconds.sum():.0f} s")
    if len(set(epochs)) > 1:
        design = np.c_[np.ones_like(epochs), epochs]
        overhead, per_epoch = np.linalg.lstsq(design, seconds, rcond=None)[0]
        print(f"fit: seconds per trial = {overhead:.1f} + {per_epoch:.2f} x epochs")
    else:
        overhead, per_epoch = 0.0, float(seconds.sum() / epochs.sum())
        print(f"every trial ran {epochs[0]:.0f} epochs: {per_epoch:.2f} s per epoch")
    if args.rate and args.train_cubes:
        epoch_s = args.train_cubes / args.rate
        projected = epochs.sum() * epoch_s + len(finished) * max(overhead, 0.0)
        print(
            f"projection (not a measurement): {epochs.sum():.0f} epochs x {epoch_s:.1f} s "
            f"training + {len(finished)} x {max(overhead, 0.0):.1f} s overhead = "
            f"{projected / 60:.1f} min, validation time not included"
        )


if __name__ == "__main__":
    main()
