"""A finding's mask moved onto the CT's own voxel grid, checked with known geometry."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.dicom.segments import MARKER_DIAMETER_MM, finding_segment, mask_on_ct, sphere_on_ct

#: An anisotropic CT grid (0.7 x 0.7 x 2.5 mm) with rows running towards -y (a flipped
#: direction), so index and patient axes differ.
CT = VolumeGeometry(
    origin_mm=np.array([-100.0, 50.0, -200.0]),
    spacing_mm=np.array([0.7, 0.7, 2.5]),
    direction=np.diag([1.0, -1.0, 1.0]),
    shape=(40, 160, 180),
)


def _centres(geometry: VolumeGeometry) -> np.ndarray:
    s, r, c = np.indices(geometry.shape)
    return geometry.index_to_mm(np.stack([c, r, s], axis=-1))


@pytest.mark.parametrize("origin_mm", [(-60.2, 10.3, -170.6), (-101.0, 45.0, -202.0)])
def test_a_box_mask_covers_exactly_the_ct_voxels_whose_centres_lie_in_the_box(origin_mm):
    # a 1 mm mask whose voxels 2..7 (x), 3..8 (y), 1..5 (z) are set: the box
    # [origin + 1.5, origin + 7.5) x [origin + 2.5, origin + 8.5) x [origin + 0.5, origin + 5.5)
    mask = np.zeros((8, 12, 10), bool)
    mask[1:6, 3:9, 2:8] = True
    origin = np.array(origin_mm)
    on_ct = mask_on_ct(CT, mask, origin, 1.0)
    p = _centres(CT)
    lo = origin + np.array([1.5, 2.5, 0.5])
    hi = origin + np.array([7.5, 8.5, 5.5])
    expected = np.all((p >= lo) & (p < hi), axis=-1)
    assert expected.any()
    np.testing.assert_array_equal(on_ct, expected)


def test_a_sphere_holds_the_voxels_within_its_radius_and_a_point_sphere_its_nearest_voxel():
    centre = CT.index_to_mm(np.array([90.3, 80.6, 20.2]))
    sphere = sphere_on_ct(CT, centre, 12.0)
    expected = np.linalg.norm(_centres(CT) - centre, axis=-1) <= 6.0
    np.testing.assert_array_equal(sphere, expected)
    assert abs(sphere.sum() * np.prod(CT.spacing_mm) / (np.pi / 6 * 12.0**3) - 1) < 0.1
    tiny = sphere_on_ct(CT, centre, 0.1)
    assert tiny.sum() == 1 and tiny[20, 81, 90]


def test_a_finding_is_its_mask_else_a_sphere_of_its_diameter_else_a_marker():
    centre = CT.index_to_mm(np.array([90.0, 80.0, 20.0]))
    mask = np.ones((6, 6, 6), bool)
    got = finding_segment(CT, centre, 7.0, (mask, centre - 2.5, 1.0))
    assert got.source == "predicted mask" and got.mask.sum() > 0
    got = finding_segment(CT, centre, 7.0, None)
    assert got.source == "sphere" and got.diameter_mm == 7.0
    np.testing.assert_array_equal(got.mask, sphere_on_ct(CT, centre, 7.0))
    got = finding_segment(CT, centre, float("nan"), None)
    assert got.source == "marker" and got.diameter_mm == MARKER_DIAMETER_MM
    outside = mask_on_ct(CT, mask, np.array([500.0, 500.0, 500.0]), 1.0)
    assert not outside.any()
