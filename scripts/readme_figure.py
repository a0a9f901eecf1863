"""Draw the README figure: a real LIDC-IDRI-0001 slice beside the phantom slice of the same z.

Usage:
    python scripts/readme_figure.py --real ../shared/data/lidc-slabs --out docs/real_vs_phantom.png
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.core.io.dicom_index import index_lidc_root
from lungcad.core.io.series import read_series
from lungcad.phantom.writer import write_phantom_scan

SERIES_0001 = "1.3.6.1.4.1.14519.5.2.1.6279.6001.179049373636438705059720603192"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--real", type=Path, default=Path("../shared/data/lidc-slabs"))
    parser.add_argument("--out", type=Path, default=Path("docs/real_vs_phantom.png"))
    parser.add_argument("--z", type=float, default=-115.0)
    args = parser.parse_args()

    real = read_series(index_lidc_root(args.real, progress=False).series[SERIES_0001].files)
    db = LidcDatabase()
    scan = db.scan_by_series(SERIES_0001)
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    with tempfile.TemporaryDirectory() as tmp:
        write_phantom_scan(scan, nodules, Path(tmp), seed=0, min_readers=3, margin_mm=34.0)
        phantom = read_series(index_lidc_root(tmp, progress=False).series[SERIES_0001].files)
    fig, axes = plt.subplots(2, 2, figsize=(12, 12.4))
    c, r, _ = nodules[0].centroid_crz
    for j, (vol, title) in enumerate(((real, "real LIDC-IDRI-0001"), (phantom, "lungcad phantom"))):
        k = int(np.argmin(np.abs(vol.z_positions_mm - args.z)))
        ax = axes[0, j]
        ax.imshow(vol.hu[k], cmap="gray", vmin=-1350, vmax=150)
        ax.set_title(f"{title}, z = {vol.z_positions_mm[k]:.1f} mm")
        ax.add_patch(plt.Circle((c, r), 25, fill=False, color="tab:red", lw=1.2))
        ax.add_patch(plt.Rectangle((60, 150), 180, 180, fill=False, color="tab:cyan", lw=1))
        ax.axis("off")
        zoom = axes[1, j]
        zoom.imshow(vol.hu[k][150:330, 60:240], cmap="gray", vmin=-1100, vmax=-300)
        zoom.set_title("right lung, the 127 mm cyan square")
        zoom.axis("off")
    fig.suptitle(
        "Same scan, same z: malignancy-5 nodule (red circle, DB consensus centroid). "
        "Window -600/1500 HU; zoomed -700/800 HU"
    )
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=80)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
