"""Lung mask on volumes whose slice count is not a multiple of the block size."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.lung_mask import lung_mask, pleural_envelope


@pytest.mark.parametrize("slices", [20, 21, 23])
def test_lungs_are_found_whatever_the_slice_count(slices) -> None:
    n, pixel, slice_mm = 160, 1.0, 1.25  # 1.25 mm slices: blocks of two slices
    c = np.arange(n) - (n - 1) / 2
    y, x = np.meshgrid(c, c, indexing="ij")
    plane = np.where((x / 70) ** 2 + (y / 55) ** 2 <= 1, 40, -1000)
    for cx in (-30, 30):
        plane[((x - cx) / 22) ** 2 + (y / 35) ** 2 <= 1] = -850
    hu = np.repeat(plane[None], slices, axis=0).astype(np.int16)
    geometry = VolumeGeometry(
        np.array([c[0], c[0], 0.0]), np.array([pixel, pixel, slice_mm]), np.eye(3), hu.shape
    )
    masks = lung_mask(hu, geometry)
    # Both lungs, on every block slice, and none of the air around the body.
    lung_blocks = np.minimum(masks.block_centres(masks.parenchyma), np.array(hu.shape) - 1)
    assert masks.parenchyma.any(axis=(1, 2)).all()
    assert (hu[tuple(lung_blocks.T)] == -850).mean() > 0.9
    assert (np.sign(x[lung_blocks[:, 1], lung_blocks[:, 2]]) > 0).mean() == pytest.approx(
        0.5, abs=0.05
    )


def _thorax(lesions: list[tuple[float, float, float, float]]) -> tuple[np.ndarray, VolumeGeometry]:
    """A body of soft tissue, two ellipsoidal lungs (x ±85 mm, a 60 mm mediastinum between
    them) and solid lesions
    (x, y, z, diameter in mm) on 1 mm pixels and 2.5 mm slices."""
    n, slices, slice_mm = 384, 64, 2.5
    c = np.arange(n) - (n - 1) / 2
    z = (np.arange(slices) - (slices - 1) / 2) * slice_mm
    zz, y, x = np.meshgrid(z, c, c, indexing="ij")
    hu = np.where((x / 155) ** 2 + (y / 120) ** 2 <= 1, 40.0, -1000.0)
    for cx in (-85.0, 85.0):
        hu[((x - cx) / 55) ** 2 + (y / 90) ** 2 + (zz / 95) ** 2 <= 1] = -860.0
    for lx, ly, lz, diameter in lesions:
        hu[(x - lx) ** 2 + (y - ly) ** 2 + (zz - lz) ** 2 <= (diameter / 2) ** 2] = 30.0
    geometry = VolumeGeometry(
        np.array([c[0], c[0], z[0]]), np.array([1.0, 1.0, slice_mm]), np.eye(3), hu.shape
    )
    return hu.astype(np.int16), geometry


def _share_in_region(masks, geometry, lesion) -> float:
    """Share of a lesion's voxels (sampled every 2 mm) inside the lung region."""
    lx, ly, lz, diameter = lesion
    g = np.arange(-diameter / 2, diameter / 2 + 1e-6, 2.0)
    p = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    p = p[np.linalg.norm(p, axis=1) <= diameter / 2] + [lx, ly, lz]
    index = np.rint(geometry.mm_to_index(p)).astype(int)[:, ::-1]
    return float(masks.region[masks.block_of(index)].mean())


@pytest.mark.parametrize(
    "lesion",
    [
        (122.0, 0.0, 0.0, 60.0),  # a 60 mm mass grown 12 mm into the chest wall
        (48.0, 10.0, 5.0, 60.0),  # a 60 mm mass grown 12 mm into the mediastinum
        (-138.0, 5.0, 0.0, 8.0),  # an 8 mm nodule on the other lung's costal pleura
    ],
    ids=["mass-chest-wall", "mass-mediastinum", "juxtapleural-8mm"],
)
def test_the_lung_region_keeps_lesions_against_the_pleura(lesion) -> None:
    hu, geometry = _thorax([lesion])
    masks = lung_mask(hu, geometry)
    # The lesion's centre and all of it but what lies beyond the pleura (a 60 mm mass's
    # 12 mm cap past the lung's outline, 0.1 of it) are in the region.
    assert _share_in_region(masks, geometry, (*lesion[:3], 0.0)) == 1.0
    assert _share_in_region(masks, geometry, lesion) >= 0.9
    # The mediastinum between the lungs and the chest wall beyond them stay outside.
    for outside in ([0.0, 0.0, 0.0], [0.0, 60.0, 0.0], [153.0, 0.0, 0.0], [-153.0, 0.0, 0.0]):
        index = np.rint(geometry.mm_to_index(np.array([outside]))).astype(int)[:, ::-1]
        assert not masks.region[masks.block_of(index)].any(), outside


@pytest.mark.parametrize("seed", range(6))
def test_the_pleural_envelope_is_each_sides_hull_on_every_slice_within_its_reach(seed) -> None:
    from scipy import ndimage
    from skimage.morphology import convex_hull_image

    rng = np.random.default_rng(seed)
    # two blobby "lungs" per slice, some slices with a speck or a line, some empty
    lungs = ndimage.binary_opening(rng.random((7, 40, 50)) > 0.55, iterations=1)
    lungs[:, :, 23:27] = False
    lungs[1] = False
    lungs[2, 5, 3:9] = True  # collinear pixels on their own
    lungs[3] = False
    lungs[3, 10, 10] = lungs[3, 11, 11] = lungs[3, 30, 40] = True
    sampling = np.array([2.5, 2.1, 1.9])
    got = pleural_envelope(lungs, sampling, reach_mm=12.0)

    # the definition, over whole sides of whole slices
    columns = np.flatnonzero(lungs.any(axis=(0, 1)))
    midline = (columns[0] + columns[-1] + 1) // 2
    expected = np.zeros_like(lungs)
    for k in range(len(lungs)):
        for cols in (slice(0, midline), slice(midline, None)):
            side = lungs[k, :, cols]
            if side.sum() >= 3:
                try:
                    expected[k, :, cols] = convex_hull_image(side)
                except (ValueError, RuntimeError):
                    expected[k, :, cols] = side
        if expected[k].any():
            near = ndimage.distance_transform_edt(~lungs[k], sampling=sampling[1:]) <= 12.0
            expected[k] &= near
    assert np.array_equal(got, expected)
