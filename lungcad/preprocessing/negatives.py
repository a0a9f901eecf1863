"""Choose centres of non-nodule cubes in the lungs, far from every annotated nodule.

Random negatives are uniform over the lung; hard negatives are dense in-lung structures
(vessels, scars) above a HU threshold, the look-alikes a detector must learn to reject.
Every candidate is at least ``min_distance_mm`` from all annotated nodules of the scan
(whatever their reader count), at least ``min_spacing_mm`` from the other negatives, and its
whole cube lies inside the scanned volume, so that negatives are never padded with air
where positives are not.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lungcad.core.io.geometry import VolumeGeometry


@dataclass(frozen=True)
class NegativeSample:
    center_mm: np.ndarray
    kind: str  # "random" or "hard"


def _inside_volume(index_crs: np.ndarray, geometry: VolumeGeometry, half_mm: float) -> np.ndarray:
    margin = half_mm / geometry.spacing_mm
    upper = np.array(geometry.shape[::-1]) - 1 - margin
    return np.all((index_crs >= margin) & (index_crs <= upper), axis=1)


def sample_negatives(
    candidates_zyx: dict[str, np.ndarray],
    counts: dict[str, int],
    geometry: VolumeGeometry,
    nodule_centers_mm: np.ndarray,
    min_distance_mm: float,
    min_spacing_mm: float,
    cube_half_mm: float,
    rng: np.random.Generator,
) -> list[NegativeSample]:
    """Pick ``counts[kind]`` centres for each kind from its candidate voxels.

    Args:
        candidates_zyx: kind -> (K, 3) voxel indices (slice, row, column) allowed as centres.
        counts: kind -> how many to pick.
        geometry: the volume's geometry.
        nodule_centers_mm: (M, 3) centres of every annotated nodule of the scan.
        min_distance_mm: least distance from any nodule centre.
        min_spacing_mm: least distance between two negatives.
        cube_half_mm: half the cube side: the whole cube must lie inside the volume.
        rng: seeded generator.

    Returns:
        The chosen samples; fewer than asked when the scan has too few valid places.
    """
    chosen: list[NegativeSample] = []
    taken = np.zeros((0, 3))
    for kind in ("hard", "random"):
        want = counts.get(kind, 0)
        cand = candidates_zyx.get(kind)
        if want <= 0 or cand is None or len(cand) == 0:
            continue
        index_crs = cand[:, ::-1].astype(np.float64)
        pick_mm = geometry.index_to_mm(index_crs[_inside_volume(index_crs, geometry, cube_half_mm)])
        if len(nodule_centers_mm) and len(pick_mm):
            d = np.min([np.linalg.norm(pick_mm - c, axis=1) for c in nodule_centers_mm], axis=0)
            pick_mm = pick_mm[d >= min_distance_mm]
        pick_mm = pick_mm[rng.permutation(len(pick_mm))]
        n = 0
        for p in pick_mm:
            if n == want:
                break
            if len(taken) and np.linalg.norm(taken - p, axis=1).min() < min_spacing_mm:
                continue
            chosen.append(NegativeSample(p, kind))
            taken = np.vstack([taken, p])
            n += 1
    return chosen
