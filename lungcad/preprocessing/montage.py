"""Picture of a cube dataset: the central axial slice of sample cubes of each kind."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd


def cube_montage(
    dataset_dir: str | Path,
    out_png: str | Path,
    per_kind: int = 8,
    seed: int = 0,
    window: tuple[float, float] = (-1000.0, 400.0),
) -> Path:
    """Save a grid (one row per kind) of central axial slices of random cubes.

    Args:
        dataset_dir: folder with cubes.npy and index.csv.
        out_png: image to write.
        per_kind: cubes shown per kind.
        seed: which cubes are drawn.
        window: HU display window (low, high).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dataset_dir = Path(dataset_dir)
    index = pd.read_csv(dataset_dir / "index.csv")
    cubes = np.load(dataset_dir / "cubes.npy", mmap_mode="r")
    kinds = [k for k in ("nodule", "hard", "random") if (index["kind"] == k).any()]
    fig, axes = plt.subplots(
        len(kinds), per_kind, figsize=(1.6 * per_kind, 1.8 * len(kinds)), squeeze=False
    )
    for row, kind in enumerate(kinds):
        rows = index[index["kind"] == kind]
        rows = rows.sample(min(per_kind, len(rows)), random_state=seed)
        for col in range(per_kind):
            ax = axes[row, col]
            ax.axis("off")
            if col >= len(rows):
                continue
            r = rows.iloc[col]
            cube = cubes[int(r["cube_index"])]
            ax.imshow(cube[cube.shape[0] // 2], cmap="gray", vmin=window[0], vmax=window[1])
            title = (
                kind
                if kind != "nodule"
                else f"mal {r['malignancy_mean']:.1f}, {r['diameter_mm']:.0f} mm"
            )
            ax.set_title(f"{r['patient_id'][-4:]} {title}", fontsize=7)
    fig.suptitle(
        f"{dataset_dir}: central axial slice of 64 mm cubes (HU {window[0]:.0f}..{window[1]:.0f})",
        fontsize=9,
    )
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png
