"""The picture a reader looks at: an overview of the scan with its findings, and the axial
slice through each top finding with the finding circled and its scores written beside it;
and the FROC curve."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.patches import Circle  # noqa: E402

from lungcad.core.figures import LUNG_WINDOW
from lungcad.core.io.series import CtVolume  # noqa: E402

#: A volume shorter than this in z (a slab) gets an axial overview instead of a coronal one.
AXIAL_OVERVIEW_BELOW_MM = 120.0


def scan_figure(
    volume: CtVolume,
    findings: pd.DataFrame,
    path: str | Path,
    top: int = 4,
    threshold: float = 0.5,
    reference: pd.DataFrame | None = None,
    masks: dict[int, tuple[np.ndarray, np.ndarray, float]] | None = None,
) -> None:
    """An overview (maximum intensity projection: coronal, or axial for a volume shorter
    than ``AXIAL_OVERVIEW_BELOW_MM`` in z) with the ``top`` most probable findings numbered,
    then the axial slice through each of them. Reference nodules, when given, are drawn
    dashed in green; findings below ``threshold`` are marked as such in their title. A
    finding's mask (``masks``: row -> (mask (z, y, x), origin (x, y, z) mm, spacing mm)) is
    outlined in red on its slice; one without is circled."""
    geometry = volume.geometry
    shown = findings.head(top)
    n = 1 + max(len(shown), 1)
    fig, axes = plt.subplots(1, n, figsize=(4.2 * n, 4.8))
    axes = np.atleast_1d(axes)
    sx, sy, sz = geometry.spacing_mm
    ax = axes[0]
    axial = volume.hu.shape[0] * sz < AXIAL_OVERVIEW_BELOW_MM
    if axial:
        ax.imshow(volume.hu.max(axis=0), cmap="gray", vmin=-1000, vmax=300, aspect=sy / sx)
        view = "axial MIP"
    else:  # coronal, over the middle half of the body depth (not the table or the spine)
        rows = volume.hu.shape[1]
        mip = volume.hu[:, rows // 4 : 3 * rows // 4, :].max(axis=1)
        origin = "lower" if geometry.direction[2, 2] > 0 else "upper"
        ax.imshow(mip, cmap="gray", vmin=-1000, vmax=300, origin=origin, aspect=sz / sx)
        view = "coronal MIP"
    n_above = int((findings["probability"] >= threshold).sum())
    ax.set_title(
        f"{volume.patient_id}: {view}\n{n_above} finding(s) ≥ {threshold:.2f}; top {len(shown)}",
        fontsize=9,
    )
    for i, f in enumerate(shown.itertuples(), start=1):
        c, r, k = geometry.mm_to_index([f.coordX, f.coordY, f.coordZ])
        xy = (c, r) if axial else (c, k)
        size = f.diameter_mm if np.isfinite(f.diameter_mm) else 0.0  # "size n/a"
        radius = max(size / 2 + 3, 5) / sx
        ax.add_patch(Circle(xy, radius, fill=False, color="red", lw=1))
        ax.text(xy[0] + radius, xy[1], str(i), color="yellow", fontsize=9)
    ax.axis("off")
    for j, f in enumerate(shown.itertuples(), start=1):
        ax = axes[j]
        c, r, k = geometry.mm_to_index([f.coordX, f.coordY, f.coordZ])
        k_int = int(np.clip(np.rint(k), 0, volume.hu.shape[0] - 1))
        half = int(round(40 / sx))  # an 80 mm field around the finding
        c0 = int(np.clip(round(c) - half, 0, volume.hu.shape[2] - 1))
        r0 = int(np.clip(round(r) - half, 0, volume.hu.shape[1] - 1))
        crop = volume.hu[k_int, r0 : r0 + 2 * half, c0 : c0 + 2 * half]
        ax.imshow(crop, cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1])
        ax.set_xlim(-0.5, 2 * half - 0.5)  # the same 80 mm field at the volume's edge
        ax.set_ylim(2 * half - 0.5, -0.5)
        outlined = (
            masks is not None
            and (j - 1) in masks
            and _outline(ax, masks[j - 1], geometry, k_int, c0, r0)
        )
        if not outlined:
            size = f.diameter_mm if np.isfinite(f.diameter_mm) else 8.0
            radius = max(size / 2 + 3, 5) / sx
            ax.add_patch(Circle((c - c0, r - r0), radius, fill=False, color="red", lw=1.5))
        if reference is not None:
            for ref in reference.itertuples():
                rc, rr, rk = geometry.mm_to_index([ref.coordX, ref.coordY, ref.coordZ])
                if abs(rk - k) * sz <= ref.diameter_mm / 2:
                    ax.add_patch(
                        Circle(
                            (rc - c0, rr - r0),
                            ref.diameter_mm / 2 / sx,
                            fill=False,
                            color="lime",
                            lw=1,
                            ls="--",
                        )
                    )
        below = "" if f.probability >= threshold else " (below threshold)"
        size = "size n/a" if not np.isfinite(f.diameter_mm) else f"{f.diameter_mm:.1f} mm"
        kind = getattr(f, "type", "n/a")
        rads = getattr(f, "lung_rads", "n/a")
        extra = "" if kind == "n/a" else f" {kind}"
        extra += "" if rads == "n/a" else f", Lung-RADS {rads}"
        ax.set_title(
            f"#{j}  p = {f.probability:.3f}{below}  malignancy {f.malignancy:.1f}\n"
            f"{size}{extra} at ({f.coordX:.0f}, {f.coordY:.0f}, {f.coordZ:.0f}) mm",
            fontsize=9,
        )
        ax.axis("off")
    if len(shown) == 0:
        axes[1].text(0.5, 0.5, "no findings", ha="center", va="center")
        axes[1].axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)


def _outline(ax, mask_entry, geometry, k: int, c0: int, r0: int) -> bool:
    """Draw the mask's outline where it crosses axial slice ``k`` of the volume (an axial
    series: its rows and columns along the patient's y and x); whether any of it does."""
    mask, origin, spacing = mask_entry
    z_mm = geometry.index_to_mm(np.array([0.0, 0.0, k]))[2]
    plane = int(round((z_mm - origin[2]) / spacing))
    if not 0 <= plane < mask.shape[0] or not mask[plane].any():
        return False
    ny, nx = mask.shape[1:]
    x_mm = origin[0] + np.arange(-1, nx + 1) * spacing  # one empty voxel around the mask
    y_mm = origin[1] + np.arange(-1, ny + 1) * spacing
    cols = geometry.mm_to_index(
        np.stack([x_mm, np.full_like(x_mm, origin[1]), np.full_like(x_mm, z_mm)], 1)
    )[:, 0]
    rows = geometry.mm_to_index(
        np.stack([np.full_like(y_mm, origin[0]), y_mm, np.full_like(y_mm, z_mm)], 1)
    )[:, 1]
    padded = np.pad(mask[plane].astype(float), 1)
    ax.contour(cols - c0, rows - r0, padded, levels=[0.5], colors="red", linewidths=1.2)
    return True


def froc_figure(
    fps: np.ndarray, sens: np.ndarray, sensitivities: dict[float, float], cpm: float, path
) -> None:
    """The FROC curve on a log FP axis with the seven LUNA16 operating points."""
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    # The curve comes from many false positives down to none; drawn from none up.
    x = np.clip(fps[::-1], 1e-3, None)
    ax.plot(x, sens[::-1], color="C0", lw=1.5, drawstyle="default")
    rates = np.array(list(sensitivities))
    ax.plot(rates, list(sensitivities.values()), "o", color="C3", ms=4)
    ax.set_xscale("log", base=2)
    ax.set_xlim(1 / 16, 16)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("false positives per scan")
    ax.set_ylabel("sensitivity")
    ax.set_title(f"FROC (LUNA16 rules): CPM = {cpm:.3f}")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
