"""Vessel trees (Murray's law, inside the lung, seeded) and partial-volume rendering."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.phantom.render import SlabGrid, render_sheet, render_tubes
from lungcad.phantom.trees import (
    airway_beside,
    grow_tree,
    murray_radii,
    sample_inside,
    vessel_tree,
)

CENTRE = np.array([0.0, 0.0, 0.0])
RADIUS = 40.0


def _in_ball(p: np.ndarray) -> np.ndarray:
    return np.linalg.norm(p - CENTRE, axis=1) <= RADIUS


@pytest.fixture(scope="module")
def ball_tree():
    rng = np.random.default_rng(5)
    attractors = sample_inside(rng, _in_ball, CENTRE - RADIUS, CENTRE + RADIUS, 900)
    root = np.array([[-RADIUS + 2.0, 0.0, 0.0]])
    return vessel_tree(rng, root, attractors, leaf_radius_mm=0.4, influence_mm=12.0), attractors


def test_radii_follow_murrays_law_at_every_branch(ball_tree) -> None:
    tree, _ = ball_tree
    children: dict[int, list[int]] = {}
    for i, p in enumerate(tree.parent):
        if p >= 0:
            children.setdefault(int(p), []).append(i)
    branches = [(p, c) for p, c in children.items() if len(c) > 1]
    assert len(branches) > 50, "the tree should branch many times"
    for p, c in branches:
        assert tree.radius_mm[p] ** 3 == pytest.approx((tree.radius_mm[c] ** 3).sum(), rel=1e-9)
    np.testing.assert_allclose(tree.radius_mm[tree.leaves()], 0.4)
    # Radii shrink from the root down to the leaves, past sub-millimetre.
    assert tree.radius_mm[0] > 5 * 0.4 and tree.radius_mm.min() < 0.5


def test_weighted_leaves_thicken_their_ancestors() -> None:
    parent = np.array([-1, 0, 1, 1])  # root -> 1 -> leaves 2, 3
    plain = murray_radii(parent, 1.0)
    np.testing.assert_allclose(plain, [2 ** (1 / 3)] * 2 + [1, 1])
    weighted = murray_radii(parent, 1.0, np.array([1.0, 1.0, 8.0, 1.0]))
    assert weighted[2] == pytest.approx(2.0) and weighted[0] == pytest.approx(9 ** (1 / 3))


def test_tree_fills_the_region_and_stays_inside_it(ball_tree) -> None:
    tree, attractors = ball_tree
    inside = _in_ball(tree.points_mm)
    assert inside.mean() > 0.99
    assert np.linalg.norm(tree.points_mm - CENTRE, axis=1).max() < RADIUS + 1.5
    # Space filling: most attractors have a tree node within a few millimetres.
    from scipy.spatial import cKDTree

    nearest = cKDTree(tree.points_mm).query(attractors)[0]
    assert np.median(nearest) < 3.5


def test_growth_is_seeded_and_deterministic() -> None:
    def grow(seed: int) -> np.ndarray:
        rng = np.random.default_rng(seed)
        attractors = sample_inside(rng, _in_ball, CENTRE - RADIUS, CENTRE + RADIUS, 300)
        return grow_tree(rng, np.array([[-38.0, 0, 0]]), attractors, influence_mm=15)[0]

    np.testing.assert_array_equal(grow(1), grow(1))
    a, b = grow(1), grow(2)
    assert a.shape != b.shape or not np.array_equal(a, b)


def test_airways_run_beside_their_arteries_without_overlap(ball_tree) -> None:
    artery, _ = ball_tree
    lumen, outer = airway_beside(np.random.default_rng(0), artery, min_artery_radius_mm=1.0)
    assert 5 < len(lumen.parent) < len(artery.parent)
    kept = np.flatnonzero(artery.radius_mm >= 1.0)
    gap = np.linalg.norm(lumen.points_mm - artery.points_mm[kept], axis=1)
    # Centre distance = artery radius + bronchus outer radius + 0.3 mm: touching, not inside.
    np.testing.assert_allclose(gap, artery.radius_mm[kept] + outer + 0.3, rtol=1e-6)
    assert (outer > lumen.radius_mm).all()


def _grid(thickness: float, pixel: float = 0.5, n: int = 64, slices: int = 30) -> SlabGrid:
    xy = (np.arange(n) - (n - 1) / 2) * pixel
    z = (np.arange(slices) - (slices - 1) / 2) * thickness
    return SlabGrid(xy, xy, z, thickness, pixel)


@pytest.mark.parametrize("radius", [0.4, 1.0, 3.0])
def test_tube_across_the_slices_has_its_true_cross_section(radius) -> None:
    grid = _grid(thickness=1.25)
    occ = render_tubes(
        grid, np.array([[0.3, -0.2, -30.0]]), np.array([[0.3, -0.2, 30.0]]), np.array([radius])
    )
    area_mm2 = occ[10:20].sum(axis=(1, 2)) * grid.pixel_mm**2
    np.testing.assert_allclose(area_mm2, np.pi * radius**2, rtol=0.03)
    assert occ.max() <= 1.0


def test_thin_tube_in_the_slice_plane_is_smeared_by_the_slice_profile() -> None:
    grid = _grid(thickness=2.5, slices=9)
    radius, length = 0.4, 20.0
    voxel_mm3 = grid.pixel_mm**2 * grid.thickness_mm
    expected = np.pi * radius**2 * length + 4 / 3 * np.pi * radius**3
    volumes, peaks = [], []
    for z in np.linspace(0, 2.5, 8, endpoint=False):  # anywhere relative to the slices
        occ = render_tubes(
            grid, np.array([[-10.0, 0.0, z]]), np.array([[10.0, 0.0, z]]), np.array([radius])
        )
        volumes.append(occ.sum() * voxel_mm3)
        peaks.append(occ.max())
    # The z sub-samples alias a tube thinner than their pitch, but not on average.
    assert np.mean(volumes) == pytest.approx(expected, rel=0.05)
    assert np.allclose(volumes, expected, rtol=0.2)
    # A 0.8 mm vessel fills at most ~40 % of a 2.5 mm slice: it cannot look solid.
    assert min(peaks) > 0.08 and max(peaks) < 0.45


def _capsules_everywhere(grid: SlabGrid, starts, ends, radii) -> np.ndarray:
    """The occupancy of ``render_tubes`` evaluated at every voxel for every capsule: the
    partial-volume formula with no stencil and nothing skipped."""
    from lungcad.phantom.render import ramp_radius_and_gain

    z, y, x = np.meshgrid(grid.z_mm, grid.y_mm, grid.x_mm, indexing="ij")
    offsets, weights = grid.z_offsets()
    out = np.zeros(grid.shape, np.float32)
    ramp_r, gain = ramp_radius_and_gain(radii, grid.pixel_mm)
    for a, b, r, g in zip(starts, ends, ramp_r, gain):
        ab = (b - a).astype(np.float32)
        a = a.astype(np.float32)
        px, py, pz0 = x.astype(np.float32) - a[0], y.astype(np.float32) - a[1], z - a[2]
        value = np.zeros(grid.shape, np.float32)
        for dz, w in zip(offsets.astype(np.float32), weights.astype(np.float32)):
            pz = pz0.astype(np.float32) + dz
            t = np.clip((px * ab[0] + py * ab[1] + pz * ab[2]) / max((ab * ab).sum(), 1e-6), 0, 1)
            d = np.sqrt((px - t * ab[0]) ** 2 + (py - t * ab[1]) ** 2 + (pz - t * ab[2]) ** 2)
            value += w * np.clip(0.5 + (np.float32(r) - d) / grid.pixel_mm, 0, 1)
        out = np.maximum(out, value * np.float32(g))
    return out


def test_oblique_tubes_equal_the_formula_at_every_voxel() -> None:
    """What ``render_tubes`` leaves out of its computation (voxels far from a segment in
    the plane, outside the grid) is empty: every voxel equals the formula's value."""
    grid = _grid(thickness=2.5, pixel=0.7, n=48, slices=12)
    rng = np.random.default_rng(3)
    # through every slice (at a capsule's ends in z the stencil stops half a pixel short
    # of the edge ramp), at any slope in the plane
    starts = np.column_stack([rng.uniform(-20, 20, (25, 2)), np.full(25, -40.0)])
    ends = np.column_stack([starts[:, :2] + rng.normal(0, 15, (25, 2)), np.full(25, 40.0)])
    radii = rng.uniform(0.2, 3.0, 25)
    got = render_tubes(grid, starts, ends, radii)
    want = _capsules_everywhere(grid, starts, ends, radii)
    assert (want > 0).mean() > 0.05  # the capsules fill part of the grid, not all of it
    np.testing.assert_allclose(got, want, atol=1e-5)


def test_sheet_parallel_and_oblique_keep_their_thickness() -> None:
    grid = _grid(thickness=1.0, pixel=0.5, slices=20)
    flat = render_sheet(grid, np.zeros(3), np.array([0.0, 1.0, 0.0]), 0.0, 0.3)
    tilted = render_sheet(grid, np.zeros(3), np.array([0.0, 1.0, 1.0]), 0.0, 0.3)
    voxel = grid.pixel_mm**2 * grid.thickness_mm
    # Sheet volume = area inside the grid x thickness, for both orientations.
    extent = grid.x_mm[-1] - grid.x_mm[0] + grid.pixel_mm
    height = grid.z_mm[-1] - grid.z_mm[0] + grid.thickness_mm
    assert flat.sum() * voxel == pytest.approx(extent * height * 0.3, rel=0.05)
    assert tilted.sum() * voxel == pytest.approx(extent * height * np.sqrt(2) * 0.3, rel=0.1)
