"""The realism picture: a real slice beside the phantom of the same scan at the same z."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lungcad.core.io.series import CtVolume
from lungcad.realism.domain import Patches

LUNG_WINDOW = (-1350, 150)


def realism_figure(
    real: dict[str, CtVolume],
    paired: dict[str, CtVolume],
    real_patches: Patches | None,
    phantom_patches: Patches | None,
    metrics: dict,
    out: Path,
    n_patches: int = 5,
) -> None:
    """Real and paired phantom slice at the real slab's middle z, and zoomed lung patches.

    Without a real volume (``metrics["skipped"]``), a picture that says why.
    """
    if not real:
        fig, ax = plt.subplots(figsize=(8, 2))
        ax.text(0.5, 0.5, metrics.get("skipped", "nothing to show"), ha="center", wrap=True)
        ax.axis("off")
        fig.savefig(out, dpi=70)
        plt.close(fig)
        return
    uid = next((u for u in real if u in paired), next(iter(real)))
    volumes = [(real[uid], "real")] + (
        [(paired[uid], "phantom of the same scan")] if uid in paired else []
    )
    z = float(np.median(real[uid].z_positions_mm))
    fig = plt.figure(figsize=(13, 9.2))
    grid = fig.add_gridspec(3, 2 * n_patches, height_ratios=[5, 1, 1])
    for j, (vol, label) in enumerate(volumes):
        ax = fig.add_subplot(grid[0, j * n_patches : (j + 1) * n_patches])
        k = int(np.argmin(np.abs(vol.z_positions_mm - z)))
        ax.imshow(vol.hu[k], cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1])
        ax.set_title(f"{label}: {vol.patient_id}, z = {vol.z_positions_mm[k]:.1f} mm")
        ax.axis("off")
    rng = np.random.default_rng(0)
    for row, (patches, label) in enumerate(((real_patches, "real"), (phantom_patches, "phantom"))):
        pick = rng.choice(
            len(patches.images), size=min(2 * n_patches, len(patches.images)), replace=False
        )
        for j, i in enumerate(pick):
            ax = fig.add_subplot(grid[1 + row, j])
            ax.imshow(patches.images[i], cmap="gray", vmin=-1100, vmax=-300)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 0:
                ax.set_ylabel(label, fontsize=9)
    targets = metrics["targets"]["paired"] or metrics["targets"]["all"]
    parts = [
        f"{k.replace('_', ' ')} {v['phantom']:.3g} vs {v['real']:.3g}" for k, v in targets.items()
    ]
    fig.suptitle(
        "Lung window -600/1500 HU; patches 22.5 mm, window -700/800 HU. "
        f"Domain classifier AUC {metrics['domain_classifier']['auc']:.2f}\n" + "; ".join(parts),
        fontsize=9,
    )
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=70)
    plt.close(fig)
