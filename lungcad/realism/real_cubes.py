"""Real cubes from a real LIDC slab: its nodules and lung/vessel negatives far from them.

A phantom-trained model is only worth something if it keeps real vessel crossings and
real lung below its threshold while it still finds the real nodule. A thin slab (the
shared LIDC-IDRI-0001 one is 37.5 mm) cannot hold a 64 mm cube, so the slab is extended
in z by mirroring it at both ends (anatomy continues smoothly; air padding, as
``lungcad data build`` does, would be a cue no training cube ever shows).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import ndimage

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules, nodule_center_mm
from lungcad.core.cubes import extract_cube, mirror_pad_z
from lungcad.core.io.series import CtVolume
from lungcad.realism.stats import core_parenchyma

#: Negatives are at least this far from every annotated nodule centre.
MIN_DISTANCE_MM = 30.0
#: Lung negatives on a grid of this pitch; vessel negatives at least this far apart.
GRID_MM = 12.0
#: Vessel negatives are centred at least this far inside the slab's first and last slice,
#: so the mirror planes do not cut through the centre of their cube.
EDGE_MM = 10.0
VESSEL_MIN_HU = -300.0


@dataclass(frozen=True)
class RealCubes:
    """HU cubes (N, 64, 64, 64) and one row per cube: kind, centre in patient mm, nodule id."""

    cubes: np.ndarray
    rows: pd.DataFrame


def real_cubes(volume: CtVolume, db: LidcDatabase | None = None) -> RealCubes:
    """Cubes of a real series: each DB nodule (≥ 1 reader) and negatives ≥ MIN_DISTANCE_MM away.

    Negatives are of two kinds: ``lung`` (a GRID_MM grid over the core parenchyma of the
    slab's middle slice) and ``vessel`` (the densest vessel voxels, HU > VESSEL_MIN_HU, of
    the core parenchyma, at least GRID_MM apart, ≥ EDGE_MM inside the slab's end slices).
    """
    db = db or LidcDatabase()
    scan = db.scan_by_series(volume.series_uid)
    if scan is None:
        raise ValueError(f"series {volume.series_uid} is not in the LIDC database")
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    rows = []
    centres = []
    for n in nodules:
        c = nodule_center_mm(n, volume)
        if c is not None:
            centres.append(c)
            rows.append({"kind": "nodule", "nodule_id": n.nodule_id, "n_readers": n.n_readers})
    core = core_parenchyma(volume.hu, volume.geometry)
    spacing = volume.geometry.spacing_mm

    def far(points_mm: np.ndarray) -> np.ndarray:
        if not centres:
            return np.ones(len(points_mm), dtype=bool)
        d = np.linalg.norm(points_mm[:, None, :] - np.array(centres)[None], axis=2)
        return d.min(axis=1) >= MIN_DISTANCE_MM

    k_mid = volume.hu.shape[0] // 2
    step = max(1, int(round(GRID_MM / spacing[0])))
    grid = np.zeros_like(core[k_mid])
    grid[step // 2 :: step, step // 2 :: step] = True
    rc = np.argwhere(core[k_mid] & grid)
    lung_idx = np.c_[rc[:, 1], rc[:, 0], np.full(len(rc), k_mid)]  # (col, row, slice)
    lung_mm = volume.geometry.index_to_mm(lung_idx)
    lung_mm = lung_mm[far(lung_mm)]
    # Vessels: local maxima of the densest voxels, greedily kept GRID_MM apart.
    dense = core & (volume.hu > VESSEL_MIN_HU)
    z = volume.z_positions_mm
    dense[(z < z.min() + EDGE_MM) | (z > z.max() - EDGE_MM)] = False
    peaks = dense & (volume.hu == ndimage.maximum_filter(volume.hu, size=(1, 5, 5)))
    kji = np.argwhere(peaks)
    order = np.argsort(-volume.hu[tuple(kji.T)], kind="stable")
    vessel_mm: list[np.ndarray] = []
    for k, j, i in kji[order]:
        p = volume.geometry.index_to_mm(np.array([i, j, k], dtype=float))
        if not far(p[None])[0]:
            continue
        if all(np.linalg.norm(p - q) >= GRID_MM for q in vessel_mm):
            vessel_mm.append(p)
    for kind, points in (("lung", lung_mm), ("vessel", vessel_mm)):
        for p in points:
            centres.append(np.asarray(p))
            rows.append({"kind": kind, "nodule_id": "", "n_readers": 0})
    hu, geometry = mirror_pad_z(volume)
    image = geometry.to_sitk(hu)
    cubes = np.stack([extract_cube(image, c) for c in centres]).astype(np.int16)
    frame = pd.DataFrame(rows)
    frame[["x_mm", "y_mm", "z_mm"]] = np.array(centres)
    return RealCubes(cubes, frame)
