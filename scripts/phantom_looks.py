"""Draw the phantom guide's figure: one phantom slice under each drawn kernel and background.

The same scan, slice and seed (LIDC-IDRI-0963's grid and its anterior nodule, so that a
dependent band has room behind it), drawn with the default look and with one setting of
``phantom.randomise`` changed at a time, so that only what that setting draws differs
between the panels.

Usage:
    python scripts/phantom_looks.py --out docs/phantom_looks.png
"""

from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.phantom.acquisition import Acquisition
from lungcad.phantom.thorax import ThoraxPhantom
from lungcad.phantom.writer import choose_slab

PATIENT = "LIDC-IDRI-0963"
LOOKS = {
    "default look (standard kernel)": Acquisition(),
    "soft kernel": Acquisition(kernel="soft"),
    "lung kernel, 3x noise variance": Acquisition(kernel="lung", dose_factor=3.0),
    "emphysema": Acquisition(background="emphysema", background_extent=0.3),
    "ground glass": Acquisition(background="ground_glass", background_extent=0.3),
    "fibrosis": Acquisition(background="fibrosis", background_extent=0.3),
    "dependent atelectasis": Acquisition(background="atelectasis", background_extent=0.25),
    "pleural effusion": Acquisition(background="effusion", background_extent=0.25),
    "contrast 300 HU, motion 4 mm, +25 HU": Acquisition(
        contrast=True, blood_hu=300.0, motion_mm=4.0, motion_band_mm=(0.0, 1000.0), hu_offset=25
    ),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("docs/phantom_looks.png"))
    args = parser.parse_args()
    db = LidcDatabase()
    [scan] = [s for s in db.scans if s.patient_id == PATIENT][:1]
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    z_lo, z_hi = choose_slab(nodules, 3, 34.0)
    ks = np.flatnonzero((scan.z_positions_mm >= z_lo) & (scan.z_positions_mm <= z_hi))
    ks = ks[len(ks) // 2 - 2 : len(ks) // 2 + 2]
    fig, axes = plt.subplots(3, 3, figsize=(12, 12.6))
    for ax, (title, acquisition) in zip(axes.ravel(), LOOKS.items()):
        phantom = ThoraxPhantom(
            (512, 512),
            scan.pixel_spacing_mm,
            scan.slice_thickness_mm,
            nodules,
            scan.z_positions_mm,
            scan.contrast_used,
            seed=1,
            acquisition=acquisition,
        )
        hu = phantom.slab_hu(ks)[2]
        ax.imshow(hu[60:452, 40:472], cmap="gray", vmin=-1150, vmax=350)
        ax.set_title(title, fontsize=11)
        ax.axis("off")
    fig.suptitle(
        f"One phantom slice ({PATIENT}'s grid), one drawn setting changed per panel "
        "(window -1150..350 HU)",
        fontsize=11,
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=70)


if __name__ == "__main__":
    main()
