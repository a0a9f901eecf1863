"""Pictures of heat maps: the three orthogonal slices through a cube's centre, the CT in a
lung window with the map over it (beside the axial CT alone), and a gallery of such rows.
The figures assume 1 mm cubes (voxel offsets are printed as mm)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from lungcad.core.masks import MasksMissingError, read_masks  # noqa: E402
from lungcad.core.model.cam import DEFAULT_LAYER, CamSettings, CubeExplainer  # noqa: E402
from lungcad.core.model.network import NoduleNet  # noqa: E402

LUNG_WINDOW = (-1350.0, 150.0)  # level -600, width 1500

#: Map values below this share of the maximum are not drawn (the CT shows through).
SHOW_ABOVE = 0.2
VIEWS = ("axial", "coronal", "sagittal")


def _planes(volume: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial (rows y, columns x), coronal (rows z, columns x) and sagittal (rows z, columns y)
    planes of a (z, y, x) LPS cube: patient right on the left of axial and coronal, anterior
    at the top of axial and on the left of sagittal."""
    z, y, x = centre
    return [volume[z], volume[:, y, :], volume[:, :, x]]


def draw_cube_row(
    axes,
    cube_hu: np.ndarray,
    cam: np.ndarray,
    mask: np.ndarray | None = None,
    label: str = "",
) -> None:
    """Draw one cube on four axes: the axial CT alone, then axial, coronal and sagittal with
    the map in 'jet' where it is at least ``SHOW_ABOVE`` of its maximum; the readers'
    consensus outlined in green, the map's maximum marked with a white cross where it lies
    in the slice shown."""
    centre = tuple(n // 2 for n in cube_hu.shape)
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape) if cam.max() > 0 else None
    ct_planes, cam_planes = _planes(cube_hu, centre), _planes(cam, centre)
    outlines = _planes(mask, centre) if mask is not None else [None] * 3
    # Where the peak falls in each plane's (row, column), and the plane's own coordinate.
    peak_in = [((1, 2), 0), ((0, 2), 1), ((0, 1), 2)]
    panels = [("axial CT", 0, False)] + [(v, i, True) for i, v in enumerate(VIEWS)]
    for ax, (title, i, overlay) in zip(axes, panels):
        origin = "upper" if i == 0 else "lower"  # superior up in coronal and sagittal
        ax.imshow(
            ct_planes[i], cmap="gray", vmin=LUNG_WINDOW[0], vmax=LUNG_WINDOW[1], origin=origin
        )
        if overlay:
            shown = np.ma.masked_less(cam_planes[i], SHOW_ABOVE)
            ax.imshow(shown, cmap="jet", vmin=0.0, vmax=1.0, alpha=0.4, origin=origin)
            (r, c), k = peak_in[i]
            if peak is not None and abs(peak[k] - centre[k]) <= 1:
                ax.plot(peak[c], peak[r], "w+", markersize=9, markeredgewidth=1.5)
        if outlines[i] is not None and outlines[i].any():
            ax.contour(outlines[i].astype(float), levels=[0.5], colors="lime", linewidths=1.0)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(title, fontsize=8)
    if label:
        axes[0].set_ylabel(label, fontsize=8)
    if peak is not None:
        offset = np.subtract(peak, np.array(centre) - 0.5)
        axes[-1].text(
            1.03,
            0.5,
            "map max\n{:+.1f}, {:+.1f}, {:+.1f}\nmm (z, y, x)\nfrom centre".format(*offset),
            transform=axes[-1].transAxes,
            fontsize=7,
            va="center",
        )


def cube_figure(
    cube_hu: np.ndarray,
    cam: np.ndarray,
    path: str | Path,
    title: str,
    mask: np.ndarray | None = None,
) -> Path:
    """One cube's three slices with the map over them, ``title`` (the scores) on top."""
    fig, axes = plt.subplots(1, 4, figsize=(12.0, 3.5))
    draw_cube_row(axes, cube_hu, cam, mask)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 0.93, 0.95))
    return _save(fig, path, dpi=90)


def gallery_figure(
    rows: list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]],
    path: str | Path,
    title: str,
) -> Path:
    """A gallery: one row of four panels (``draw_cube_row``) per (label, cube, map, mask)."""
    fig, axes = plt.subplots(len(rows), 4, figsize=(10.4, 2.6 * len(rows)), squeeze=False)
    for ax_row, (label, cube, cam, mask) in zip(axes, rows):
        draw_cube_row(ax_row, cube, cam, mask, label)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0, 0.9, 0.98))
    return _save(fig, path, dpi=80)


def _save(fig, path: str | Path, dpi: int) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    plt.close(fig)
    return path


def gallery_rows(pred: pd.DataFrame, threshold: float, per_kind: int = 2) -> list[tuple[str, Any]]:
    """Test cubes worth looking at, with what they are: true positives, false positives and
    false negatives (most confident first), the most and the least malignant nodules."""
    nod = pred[pred["label"] == 1]
    neg = pred[pred["label"] == 0]
    picks = [
        ("true positive", nod[nod["nodule_prob"] >= threshold].nlargest(per_kind, "nodule_prob")),
        ("false positive", neg[neg["nodule_prob"] >= threshold].nlargest(per_kind, "nodule_prob")),
        ("false negative", nod[nod["nodule_prob"] < threshold].nsmallest(per_kind, "nodule_prob")),
        ("most malignant", nod.nlargest(1, "malignancy_pred")),
        ("least malignant", nod.nsmallest(1, "malignancy_pred")),
    ]
    return [(kind, row) for kind, frame in picks for row in frame.itertuples()]


def write_gallery(
    pred: pd.DataFrame,
    cubes: np.ndarray,
    dataset_dir: str | Path,
    model: NoduleNet,
    window_hu: tuple[float, float],
    threshold: float,
    path: str | Path,
    layer: str = DEFAULT_LAYER,
) -> Path | None:
    """The evaluation report's gallery (``gallery_rows``) as one picture; None when the
    split has no cube to show."""
    chosen = gallery_rows(pred, threshold)
    if not chosen:
        return None
    # Each cube once (a nodule can be both a true positive and the most malignant).
    unique = np.unique([row.cube_index for _, row in chosen])
    position = {c: i for i, c in enumerate(unique)}
    batch = np.asarray(cubes[unique])
    maps = CubeExplainer(model, window_hu, CamSettings("detection", "gradcam", layer))(batch)
    try:
        masks = read_masks(dataset_dir, unique, batch.shape[-1])
    except MasksMissingError:  # a dataset built before masks: pictures without outlines
        masks = None
    rows = []
    for kind, row in chosen:
        j = position[row.cube_index]
        label = f"{kind}\nP {row.nodule_prob:.2f}, mal. {row.malignancy_pred:.1f}"
        outline = masks[j] if masks is not None and row.label == 1 else None
        rows.append((label, batch[j], maps[j], outline))
    return gallery_figure(rows, path, f"Grad-CAM of the detection logit ({layer}), test cubes")
