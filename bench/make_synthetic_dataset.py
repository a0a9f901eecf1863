"""Write a synthetic cube dataset of any size in lungcad's cube contract, for benchmarks.

``cubes.npy`` (N, S, S, S) int16 HU, ``index.csv`` and ``splits.json``, like
``dvc repro split`` writes: noisy lung parenchyma, a soft-tissue sphere in a quarter of the
cubes (the nodules, malignancy 1-5 growing with the radius), a vessel-like tube in the rest.
The content only has to be plausible for the network: benchmarks measure speed, not skill.
The defaults are the size of the real LIDC-IDRI cube set the GPU figures refer to (5,736
cubes of 64^3, 3,825 / 769 / 1,142 train / val / test; 3.0 GB). Written in chunks, so
memory stays small whatever the size.

Usage:
    python bench/make_synthetic_dataset.py --out /tmp/lidc-size [--cubes 5736] [--seed 0]
    python bench/train_throughput.py --dataset /tmp/lidc-size --splits /tmp/lidc-size/splits.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

#: Share of patients per split, as in the real LIDC cube set.
SPLIT_SHARES = {"train": 0.667, "val": 0.134, "test": 0.199}


def write_dataset(
    out: Path, cubes: int, cube_size: int = 64, per_patient: float = 5.6, seed: int = 0
) -> None:
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    n_patients = max(3, round(cubes / per_patient))
    patient = np.sort(rng.integers(0, n_patients, cubes))
    label = (rng.random(cubes) < 0.25).astype(int)
    malignancy = np.where(label == 1, rng.integers(1, 6, cubes).astype(float), np.nan)
    array = np.lib.format.open_memmap(
        out / "cubes.npy", mode="w+", dtype=np.int16, shape=(cubes, *(cube_size,) * 3)
    )
    grid = np.indices((cube_size,) * 3, dtype=np.float32) - (cube_size - 1) / 2
    dist = np.sqrt((grid**2).sum(0))
    chunk = 64
    for start in tqdm(range(0, cubes, chunk), desc="cubes", unit="chunk"):
        stop = min(start + chunk, cubes)
        block = rng.standard_normal((stop - start, *(cube_size,) * 3), dtype=np.float32)
        block = -850 + 40 * block
        for j, i in enumerate(range(start, stop)):
            if label[i]:
                block[j][dist <= 2 + 1.5 * malignancy[i]] = 40
            else:
                dy, dx = rng.integers(-12, 12, 2)
                block[j][np.hypot(grid[1] - dy, grid[2] - dx) <= 2] = 40
        array[start:stop] = block.astype(np.int16)
    array.flush()
    ids = [f"SYN-{p:05d}" for p in range(n_patients)]
    pd.DataFrame(
        {
            "cube_index": np.arange(cubes),
            "patient_id": [ids[p] for p in patient],
            "series_uid": [f"2.25.{p}" for p in patient],
            "nodule_id": [f"{ids[p]}:{i}" for i, p in enumerate(patient)],
            "label": label,
            "kind": np.where(label == 1, "nodule", "random"),
            "malignancy_mean": malignancy,
            "malignancy_median": malignancy,
            "n_readers": np.where(label == 1, 4, 0),
            "diameter_mm": np.where(label == 1, 2 * (2 + 1.5 * np.nan_to_num(malignancy)), np.nan),
        }
    ).to_csv(out / "index.csv", index=False)
    order = rng.permutation(n_patients)
    n_train = round(SPLIT_SHARES["train"] * n_patients)
    n_val = round(SPLIT_SHARES["val"] * n_patients)
    splits = {
        "train": sorted(ids[p] for p in order[:n_train]),
        "val": sorted(ids[p] for p in order[n_train : n_train + n_val]),
        "test": sorted(ids[p] for p in order[n_train + n_val :]),
    }
    (out / "splits.json").write_text(json.dumps(splits, indent=1))
    split_of = np.empty(n_patients, dtype=object)
    for name, members in splits.items():
        split_of[[int(m[4:]) for m in members]] = name
    counts = {name: int((split_of[patient] == name).sum()) for name in splits}
    print(f"{out}: {cubes} cubes ({label.sum()} nodules) of {n_patients} patients; {counts}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--cubes", type=int, default=5736)
    parser.add_argument("--cube-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    write_dataset(args.out, args.cubes, args.cube_size, seed=args.seed)


if __name__ == "__main__":
    main()
