"""Checks of a scan's findings against the readers' outlines, for series the LIDC database
knows: the Dice of each reference nodule's detected finding with the readers' consensus, and
the pointing game of the detection map on cubes recut around each nodule, centred and off
its centre, beside a map that always points at the cube's centre.

Both are measured where the whole scan is at hand (``lungcad detect``), so the finding's own
localisation and real anatomy around an off-centre nodule are what is scored; the cube
evaluation's Dice centres each cube on its nodule (oracle localisation).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from lungcad.config import ExplainConfig
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.core.cubes import extract_cube, mirror_pad_z
from lungcad.core.io.series import CtVolume
from lungcad.core.masks import grid_mask_in_cube
from lungcad.core.metrics import dice, dilate_mm, pointing

#: Pointing game tolerance: a map's maximum within this of the consensus mask is a hit (as
#: ``lungcad explain``'s default ``explain.dilate_mm``).
POINTING_RADIUS_MM = ExplainConfig().dilate_mm

DICE_COLUMNS = ["nodule_id", "finding_rank", "finding_probability", "dice"]
POINTING_COLUMNS = ["pointing_hit", "pointing_chance", "pointing_peak_mm", "centre_hit"]


class ReferenceMasks:
    """The readers' consensus mask of each nodule of a series the database knows, resampled
    into any 1 mm cube of that series (as ``masks.npy`` places it in the dataset's cubes)."""

    def __init__(self, volume: CtVolume, db: LidcDatabase) -> None:
        self.volume = volume
        self.scan = db.scan_by_series(volume.series_uid)
        self.nodules = (
            {n.nodule_id: n for n in cluster_nodules(self.scan, db.annotations(self.scan.scan_id))}
            if self.scan is not None
            else {}
        )

    def cube(
        self,
        nodule_id: str,
        size: int,
        spacing_mm: float,
        center_mm: np.ndarray | None = None,
        origin_mm: np.ndarray | None = None,
    ) -> np.ndarray:
        """The nodule's consensus in the ``size``³ cube centred on ``center_mm`` (or with its
        voxel (0, 0, 0) at ``origin_mm``): bool (z, y, x)."""
        n = self.nodules[nodule_id]
        return grid_mask_in_cube(
            n.consensus_offset,
            n.consensus_mask,
            self.scan,
            self.volume.z_positions_mm,
            self.volume.geometry,
            center_mm,
            size,
            spacing_mm,
            origin_mm,
        )


def finding_dice(
    reference: pd.DataFrame,
    findings: pd.DataFrame,
    masks: dict[int, tuple[np.ndarray, np.ndarray, float]],
    readers: ReferenceMasks,
    size: int = 64,
) -> pd.DataFrame:
    """Per reference nodule, the most probable finding whose centre lies within the nodule's
    radius (LUNA16's hit rule) and the Dice of that finding's mask with the readers'
    consensus, both on the finding mask's own 1 mm grid in a ``size``³ cube around the
    nodule (NaN rank, probability and Dice where no finding hits it; Dice 0 for a finding
    without a mask)."""
    rows = []
    centres = findings[["coordX", "coordY", "coordZ"]].to_numpy(float) if len(findings) else None
    for ref in reference.itertuples():
        centre = np.array([ref.coordX, ref.coordY, ref.coordZ], float)
        row = {"nodule_id": ref.nodule_id, "finding_rank": np.nan}
        row.update(finding_probability=np.nan, dice=np.nan)
        if centres is not None and ref.nodule_id in readers.nodules:
            within = np.flatnonzero(np.linalg.norm(centres - centre, axis=1) <= ref.diameter_mm / 2)
            if len(within):
                probability = findings["probability"].to_numpy(float)
                k = int(within[np.argmax(probability[within])])
                row.update(finding_rank=k + 1, finding_probability=float(probability[k]))
                row["dice"] = _mask_dice(masks.get(k), centre, readers, ref.nodule_id, size)
        rows.append(row)
    return pd.DataFrame(rows, columns=DICE_COLUMNS)


def _mask_dice(found, centre: np.ndarray, readers: ReferenceMasks, nodule_id: str, size: int):
    """Dice of a finding's mask (mask, origin of its voxel (0, 0, 0), spacing; None without
    one) with the nodule's consensus, in a cube of the finding grid around ``centre``."""
    if found is None or not found[0].size:
        return 0.0
    mask, origin, spacing = found
    spacing = float(spacing)
    # A cube on the finding mask's grid (voxel centres at origin + k * spacing).
    start = np.round((centre - origin) / spacing).astype(int) - size // 2
    cube_origin = origin + start * spacing
    consensus = readers.cube(nodule_id, size, spacing, origin_mm=cube_origin)
    placed = np.zeros((size,) * 3, bool)
    lo = -start[::-1]  # the finding mask's voxel (0, 0, 0) in the cube, (z, y, x)
    src = tuple(slice(max(0, -lo[i]), min(mask.shape[i], size - lo[i])) for i in range(3))
    dst = tuple(slice(s.start + lo[i], s.stop + lo[i]) for i, s in enumerate(src))
    if all(s.stop > s.start for s in src):
        placed[dst] = mask[src]
    return dice(placed, consensus)


def pointing_check(
    volume: CtVolume,
    centres_mm: np.ndarray,
    nodule_ids: list[str],
    readers: ReferenceMasks,
    explainer,
    size: int,
    spacing_mm: float,
) -> pd.DataFrame:
    """The pointing game of the detection map on each cube (centred on ``centres_mm``, cut
    from the scan as the detector cuts its cubes) against its nodule's consensus, and the
    same game played by a map that always points at the cube's centre."""
    hu, geometry = mirror_pad_z(volume, size * spacing_mm)
    image = geometry.to_sitk(hu)
    middle = (size // 2,) * 3
    rows = []
    for centre, nodule_id in zip(centres_mm, nodule_ids):
        cube = extract_cube(image, centre, size, spacing_mm)
        mask = readers.cube(nodule_id, size, spacing_mm, center_mm=centre)
        cam = explainer(cube[None])[0]
        hit, chance, distance = pointing(cam, mask, POINTING_RADIUS_MM, spacing_mm)
        grown = dilate_mm(mask, POINTING_RADIUS_MM, spacing_mm)
        rows.append(
            {
                "pointing_hit": bool(hit),
                "pointing_chance": chance,
                "pointing_peak_mm": distance,
                "centre_hit": bool(grown[middle]),
            }
        )
    return pd.DataFrame(rows, columns=POINTING_COLUMNS)
