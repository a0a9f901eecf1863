"""Real cubes of the shared LIDC-IDRI-0001 slab: its nodule and far-away real negatives."""

from __future__ import annotations

import numpy as np

from lungcad.core.cubes import mirror_pad_z
from lungcad.core.io.series import read_series
from lungcad.realism.real_cubes import MIN_DISTANCE_MM, real_cubes


def test_mirroring_keeps_the_slab_in_place_and_extends_it(slab_files) -> None:
    volume = read_series(slab_files)
    hu, geometry = mirror_pad_z(volume)
    grown = (hu.shape[0] - volume.hu.shape[0]) // 2
    assert grown * 2.5 >= 33 and hu.shape[0] > 16
    np.testing.assert_array_equal(hu[grown : grown + 16], volume.hu)
    # The original first slice keeps its patient position.
    np.testing.assert_allclose(
        geometry.index_to_mm(np.array([0, 0, grown])), volume.geometry.origin_mm, atol=1e-6
    )
    np.testing.assert_array_equal(hu[grown - 1], volume.hu[1])  # a mirror, not a copy


def test_slab_gives_its_dense_nodule_and_aerated_negatives_far_from_it(slab_files, db) -> None:
    volume = read_series(slab_files)
    found = real_cubes(volume, db)
    rows = found.rows
    assert found.cubes.shape == (len(rows), 64, 64, 64)
    nodule = np.flatnonzero(rows["kind"] == "nodule")
    assert len(nodule) == 1
    k, r, c = np.meshgrid(*[np.arange(64) - 31.5] * 3, indexing="ij")
    dist = np.sqrt(k * k + r * r + c * c)
    assert found.cubes[nodule[0]][dist < 6].mean() > 0, "the real nodule is dense"
    # The mirrored slab fills the whole cube: no air padding above or below.
    assert (found.cubes[nodule[0]][0] > -1000).any() and (found.cubes[nodule[0]][-1] > -1000).any()
    centres = rows[["x_mm", "y_mm", "z_mm"]].to_numpy()
    far = np.linalg.norm(centres - centres[nodule[0]], axis=1)
    negatives = rows["kind"] != "nodule"
    assert (far[negatives] >= MIN_DISTANCE_MM).all()
    assert (rows["kind"] == "lung").sum() >= 20 and (rows["kind"] == "vessel").sum() >= 10
    centre_hu = found.cubes[:, 31:33, 31:33, 31:33].mean(axis=(1, 2, 3))
    assert np.median(centre_hu[rows["kind"] == "lung"]) < -600
    assert np.median(centre_hu[rows["kind"] == "vessel"]) > -400
