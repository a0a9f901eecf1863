"""Lung mask on volumes whose slice count is not a multiple of the block size."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.lung_mask import lung_mask


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
