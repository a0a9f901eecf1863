"""Cube centring is physically exact: checked on volumes whose content is known in mm."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.cubes import extract_cube, resample_box
from lungcad.core.io.geometry import VolumeGeometry

SPACING = np.array([0.7, 0.9, 2.5])  # anisotropic (column, row, slice)
ORIGIN = np.array([-150.3, -120.8, -310.0])
SHAPE = (60, 200, 240)  # slices, rows, columns


def _geometry() -> VolumeGeometry:
    return VolumeGeometry(ORIGIN, SPACING, np.eye(3), SHAPE)


def _positions_mm(geometry: VolumeGeometry) -> np.ndarray:
    k, r, c = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    return geometry.index_to_mm(np.stack([c, r, k], axis=-1))


def _sphere_volume(center_mm: np.ndarray, radius_mm: float) -> tuple[VolumeGeometry, np.ndarray]:
    geometry = _geometry()
    hu = np.full(SHAPE, -1000, dtype=np.int16)
    # Partial-volume sphere (4x supersampled per axis), as a scanner would image it,
    # computed in a box around the sphere only.
    c_idx = geometry.mm_to_index(center_mm)
    half = np.ceil(radius_mm / SPACING).astype(int) + 2
    lo = np.maximum(np.floor(c_idx).astype(int) - half, 0)
    hi = np.minimum(np.floor(c_idx).astype(int) + half + 1, SHAPE[::-1])
    k, r, c = np.meshgrid(*[np.arange(lo[i], hi[i]) for i in (2, 1, 0)], indexing="ij")
    base = np.stack([c, r, k], axis=-1).astype(float)
    offsets = (np.arange(4) + 0.5) / 4 - 0.5
    frac = np.zeros(base.shape[:3])
    for dx in offsets:
        for dy in offsets:
            for dz in offsets:
                p = geometry.index_to_mm(base + np.array([dx, dy, dz]))
                frac += np.linalg.norm(p - center_mm, axis=-1) <= radius_mm
    frac /= len(offsets) ** 3
    hu[lo[2] : hi[2], lo[1] : hi[1], lo[0] : hi[0]] = (-1000 + 1000 * frac).astype(np.int16)
    return geometry, hu


def _cube_centroid_mm(cube: np.ndarray, center_mm: np.ndarray) -> np.ndarray:
    w = (cube.astype(float) + 1000).clip(0)
    k, r, c = np.meshgrid(*[np.arange(64)] * 3, indexing="ij")
    com_index = np.array([(w * c).sum(), (w * r).sum(), (w * k).sum()]) / w.sum()
    return center_mm - 31.5 + com_index  # cube voxel i sits at centre + (i - 31.5) mm


@pytest.mark.parametrize(
    "center_mm",
    [
        np.array([-60.37, -20.61, -240.13]),  # well inside
        np.array([-140.9, -20.61, -300.2]),  # 9 mm from the x border, 10 mm from the first slice
        np.array([-10.2, 50.1, -168.4]),  # 6 mm from the last slice, 8 mm from the last row
    ],
)
def test_sphere_lands_at_the_cube_centre_within_half_a_millimetre(center_mm) -> None:
    geometry, hu = _sphere_volume(center_mm, radius_mm=5.0)
    cube = extract_cube(geometry.to_sitk(hu), center_mm)
    assert cube.shape == (64, 64, 64) and cube.dtype == np.int16
    err = np.linalg.norm(_cube_centroid_mm(cube, center_mm) - center_mm)
    assert err < 0.5, f"cube centre is {err:.3f} mm from the sphere centre"
    if center_mm[2] < -295:  # near the border the cube is padded with air, not clamped
        assert (cube[0] == -1000).all()
    if center_mm[2] > -170:
        assert (cube[-1] == -1000).all()


def test_linear_field_is_sampled_at_exact_physical_positions() -> None:
    geometry = _geometry()
    pos = _positions_mm(geometry)
    field = (2 * pos[..., 0] + 3 * pos[..., 1] + 5 * pos[..., 2] + 2000).astype(np.float32)
    image = geometry.to_sitk(field)
    center = np.array([-60.25, 10.4, -230.7])  # whole cube inside the volume
    cube = extract_cube(image, center).astype(float)
    expected_center = 2 * center[0] + 3 * center[1] + 5 * center[2] + 2000
    # Linear interpolation of a linear field is exact: the centre is the mean of the middle 8.
    assert cube[31:33, 31:33, 31:33].mean() == pytest.approx(expected_center, abs=0.6)
    # Axes of the cube are the patient axes at 1 mm: steps of 2, 3, 5 along x, y, z.
    assert np.diff(cube[32, 32, 10:50]).mean() == pytest.approx(2, abs=0.02)
    assert np.diff(cube[32, 10:50, 32]).mean() == pytest.approx(3, abs=0.02)
    assert np.diff(cube[10:50, 32, 32]).mean() == pytest.approx(5, abs=0.02)


def test_index_mm_round_trip_with_oblique_direction() -> None:
    angle = np.deg2rad(12)
    rot = np.array(
        [[np.cos(angle), -np.sin(angle), 0], [np.sin(angle), np.cos(angle), 0], [0, 0, 1]]
    )
    geometry = VolumeGeometry(ORIGIN, SPACING, rot, SHAPE)
    idx = np.array([[10.5, 20.25, 3.0], [0, 0, 0], [179, 199, 59]])
    np.testing.assert_allclose(geometry.mm_to_index(geometry.index_to_mm(idx)), idx, atol=1e-9)


def test_labels_resample_to_their_nearest_voxel_in_their_own_type() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, size=(6, 7, 8)).astype(np.uint8)
    geometry = VolumeGeometry(
        np.array([-3.0, 2.0, 10.0]), np.array([2.0, 1.5, 2.5]), np.eye(3), labels.shape
    )
    origin = np.array([-3.2, 1.6, 9.0])
    got = resample_box(geometry.to_sitk(labels), origin, (9, 8, 11), 1.0, 0, nearest=True)
    assert got.dtype == np.uint8 and got.shape == (9, 8, 11)
    # each grid point takes the label of the voxel whose centre is nearest (0 outside)
    z, y, x = np.indices(got.shape)
    mm = origin + np.stack([x, y, z], axis=-1)
    index = np.rint(geometry.mm_to_index(mm.reshape(-1, 3))).astype(int).reshape(*got.shape, 3)
    inside = np.all((index >= 0) & (index < np.array(labels.shape[::-1])), axis=-1)
    expected = np.zeros(got.shape, np.uint8)
    i = index[inside]
    expected[inside] = labels[i[:, 2], i[:, 1], i[:, 0]]
    np.testing.assert_array_equal(got, expected)
