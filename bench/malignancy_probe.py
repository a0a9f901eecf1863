"""Probe: how much of the readers' malignancy rating a network's features hold.

A ridge regression (scikit-learn's ``RidgeCV``) from the backbone's average-pooled deepest
stage of the training split's centred nodule cubes to their readers' mean malignancy,
scored on the validation split's nodules (MAE and Pearson by
``lungcad.core.metrics.malignancy_metrics``), beside the network's own malignancy head on
the same cubes: a probe that beats the head says the head, not the features, falls short.

The heads pool their whole cube, so ``--sizes`` also reads the head on the central S³ of
each nodule cube of both splits, for each S: its mean error (bias), MAE and Pearson against
the readers' rating, what a detector reading its findings in cubes of that size gets.

Usage:
    python bench/malignancy_probe.py --model models/best.pt [--model models/cubes/best.pt] \
        [--sizes 64 56 48 40]
"""

from __future__ import annotations

import argparse
import json

import lungcad  # noqa: F401  (first, as in every lungcad command: its process settings)

# isort: split
import numpy as np
import torch
from sklearn.linear_model import RidgeCV

from lungcad.core.dataset import load_cube_data
from lungcad.core.metrics import malignancy_metrics
from lungcad.core.model.loading import load
from lungcad.core.model.network import window_hu
from lungcad.core.model.predict import predict_hu_cubes


def pooled_features(loaded, cubes: np.ndarray) -> np.ndarray:
    """(N, widths[-1]) the backbone's deepest stage, average-pooled, of HU cubes."""
    net, pooled = loaded.network.eval(), []
    with torch.inference_mode():
        for start in range(0, len(cubes), 32):
            x = window_hu(torch.from_numpy(cubes[start : start + 32])[:, None], loaded.window)
            pooled.append(torch.flatten(net.backbone.avgpool(net.stages(x)[-1]), 1))
    return torch.cat(pooled).numpy()


def by_size(net, window, cubes: np.ndarray, truth, size: int) -> dict:
    """The malignancy head on the central ``size``³ of each cube against ``truth``."""
    lo = (cubes.shape[-1] - size) // 2
    centre = np.ascontiguousarray(cubes[:, lo : lo + size, lo : lo + size, lo : lo + size])
    _, head = predict_hu_cubes(net, centre, window, "cpu", 32, head_only=True)
    truth = np.asarray(truth, float)
    metrics = malignancy_metrics(truth, head)
    return {"bias": float(np.mean(head - truth)), "mae": metrics["mae"], "r": metrics["pearson"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", required=True)
    parser.add_argument("--dataset", default="data/processed")
    parser.add_argument("--splits", default="data/splits.json")
    parser.add_argument("--sizes", type=int, nargs="*", default=[64, 56, 48, 40])
    args = parser.parse_args()
    data = load_cube_data(args.dataset, args.splits)

    def nodules(split: str):
        rows = data.subset(split).sort_values("cube_index")
        rows = rows[rows["label"] == 1]
        return np.ascontiguousarray(data.cubes[rows["cube_index"].to_numpy()]), rows

    (train_cubes, train), (val_cubes, val) = nodules("train"), nodules("val")
    out = {}
    for model in args.model:
        loaded = load(model, torch.device("cpu"))
        net = loaded.network.eval()
        probe = RidgeCV(alphas=np.logspace(-3, 3, 13))
        probe.fit(pooled_features(loaded, train_cubes), train["malignancy_mean"].to_numpy())
        truth = val["malignancy_mean"].to_numpy()
        guess = np.clip(probe.predict(pooled_features(loaded, val_cubes)), 1.0, 5.0)
        _, head = predict_hu_cubes(net, val_cubes, loaded.window, "cpu", 32, head_only=True)
        out[model] = {
            "train_nodules": len(train),
            "val_nodules": len(val),
            "probe": {k: malignancy_metrics(truth, guess)[k] for k in ("mae", "pearson")},
            "head": {k: malignancy_metrics(truth, head)[k] for k in ("mae", "pearson")},
            "alpha": float(probe.alpha_),
            "head_by_cube": {
                split: {
                    size: by_size(net, loaded.window, cubes, rows["malignancy_mean"], size)
                    for size in args.sizes
                }
                for split, cubes, rows in (("train", train_cubes, train), ("val", val_cubes, val))
            },
        }
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
