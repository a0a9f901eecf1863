"""Findings from masks with known geometry: spheres and ellipsoids of known size at known
off-centre positions, merging of the cubes on one nodule, and Lung-RADS at every boundary."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungcad.core.cubes import cube_grid_origin
from lungcad.core.findings.lungrads import lung_rads, scan_category
from lungcad.core.findings.measure import axial_axes_mm, measure_mask, nodule_type
from lungcad.core.findings.merge import (
    FindingMask,
    _pack,
    cube_finding_mask,
    fuse_masks,
    group_findings,
)
from lungcad.detection.detector import mask_findings

SIZE = 64


def _cube_mask(centre_mm, objects, spacing=1.0, size=SIZE):
    """(mask, HU) of a cube centred on ``centre_mm`` holding ellipsoids ``(centre, semi-axes
    (x, y, z) mm, HU)``; lung (-850 HU) elsewhere."""
    origin = cube_grid_origin(np.asarray(centre_mm, float), size, spacing)
    k, j, i = np.indices((size,) * 3)
    x, y, z = origin[0] + i * spacing, origin[1] + j * spacing, origin[2] + k * spacing
    mask = np.zeros((size,) * 3, bool)
    hu = np.full((size,) * 3, -850, np.int16)
    for (cx, cy, cz), (ax, ay, az), value in objects:
        inside = ((x - cx) / ax) ** 2 + ((y - cy) / ay) ** 2 + ((z - cz) / az) ** 2 <= 1
        mask |= inside
        hu[inside] = value
    return mask, hu


@pytest.mark.parametrize(
    "offset_mm, semi_axes",
    [
        ((0, 0, 0), (5, 5, 5)),
        ((6, -4, 3), (8, 8, 8)),
        ((-9, 2, 7), (10, 6, 4)),
        ((3, 5, -2), (3, 3, 3)),
    ],
)
def test_off_centre_ellipsoids_measure_their_true_centre_size_and_volume(offset_mm, semi_axes):
    cube_centre = np.array([-61.3, 22.7, -140.2])  # not on the 1 mm grid
    centre = cube_centre + offset_mm
    mask, hu = _cube_mask(cube_centre, [(centre, semi_axes, 30)])
    part = cube_finding_mask(mask, hu, cube_centre, 1.0)
    fused, origin, hu_box = fuse_masks([part])
    m = measure_mask(fused, origin, 1.0, hu_box)
    np.testing.assert_allclose(m.centroid_mm, centre, atol=1.0)
    ax, ay, _ = semi_axes
    assert abs(m.diameter_mm - 2 * max(ax, ay)) <= 1.0
    assert abs(m.short_axis_mm - 2 * min(ax, ay)) <= 1.0
    assert m.mean_diameter_mm == pytest.approx(round((m.long_axis_mm + m.short_axis_mm) / 2, 1))
    true_volume = 4 / 3 * np.pi * np.prod(semi_axes)
    assert abs(m.volume_mm3 / true_volume - 1) <= 0.10 or min(semi_axes) < 4
    assert m.solid_share == 1.0 and nodule_type(None, m) == "solid"


def test_a_mask_far_from_the_cube_centre_is_not_this_cubes_nodule() -> None:
    cube_centre = np.zeros(3)
    mask, hu = _cube_mask(cube_centre, [((20.0, 0, 0), (4, 4, 4), 30)])
    assert len(cube_finding_mask(mask, hu, cube_centre, 1.0)) == 0


def test_cubes_on_one_sphere_merge_and_two_nearby_spheres_stay_two() -> None:
    a, b = np.array([0.0, 0.0, 0.0]), np.array([19.0, 0.0, 0.0])  # radii 8 and 9: 2 mm apart
    spheres = [(a, (8, 8, 8), 30), (b, (9, 9, 9), 30)]
    centres = np.array([a + (3, 1, 0), a + (-4, 2, 1), b + (2, -3, 0), b, a + (0.4, -0.3, 0.2)])
    masks = [cube_finding_mask(*_cube_mask(c, spheres), c, 1.0) for c in centres]
    groups = group_findings(masks, centres, np.array([0.9, 0.8, 0.95, 0.7, 0.6]))
    assert sorted(sorted(g) for g in groups) == [[0, 1, 4], [2, 3]]
    assert groups[0][0] == 2  # best score first
    for group, truth in zip(sorted(groups, key=min), (a, b)):
        fused, origin, hu = fuse_masks([masks[i] for i in group])
        np.testing.assert_allclose(
            measure_mask(fused, origin, 1.0, hu).centroid_mm, truth, atol=1.0
        )


def test_findings_table_one_row_per_nodule_and_empty_masks_say_so() -> None:
    a = np.array([10.0, -20.0, 30.0])
    sphere = [(a, (6, 6, 6), 30)]
    centres = np.array([a + (2, 0, 0), a + (-3, 1, 0), a + (40, 0, 0)])
    masks = [cube_finding_mask(*_cube_mask(c, sphere), c, 1.0) for c in centres]
    assert len(masks[2]) == 0  # a cube beside nothing: its decoder outlines nothing
    cands = pd.DataFrame(
        {
            "coordX": centres[:, 0],
            "coordY": centres[:, 1],
            "coordZ": centres[:, 2],
            "probability": [0.7, 0.9, 0.5],
            "malignancy": [3.0, 4.0, 2.0],
            "blob_diameter_mm": [10.0, 10.0, 4.0],
            "attr_texture": [5.0, 5.0, 1.0],
        }
    )
    findings, fused = mask_findings(cands, masks)
    assert len(findings) == 2 and set(fused) == {0}
    nodule, empty = findings.iloc[0], findings.iloc[1]
    assert nodule["probability"] == 0.9 and nodule["cubes"] == 2 and nodule["malignancy"] == 4.0
    np.testing.assert_allclose(nodule[["coordX", "coordY", "coordZ"]].to_numpy(float), a, atol=1)
    assert abs(nodule["diameter_mm"] - 12) <= 1 and nodule["type"] == "solid"
    assert nodule["lung_rads"] == "4A" and nodule["sizing"] == "mask"
    assert empty["sizing"] == "n/a" and np.isnan(empty["diameter_mm"])
    assert empty["lung_rads"] == "0" and empty["type"] == "ground glass"  # unsized; type: the head
    assert empty["probability"] == 0.5  # keeps its score


def test_a_part_solid_nodules_solid_component_is_measured() -> None:
    c = np.array([0.0, 0.0, 0.0])
    halo = (c, (9, 9, 9), -600)  # ground glass
    core = (c + (1, 0, 0), (3.5, 3.5, 3.5), 20)  # solid component ~7 mm
    mask, hu = _cube_mask(c, [halo, core])
    m = measure_mask(mask, cube_grid_origin(c, SIZE, 1.0), 1.0, hu)
    assert abs(m.solid_mean_diameter_mm - 7) <= 1 and 0.02 < m.solid_share < 0.2
    assert nodule_type(None, m) == "part-solid" and nodule_type(3.0, m) == "part-solid"
    assert lung_rads("part-solid", m.mean_diameter_mm, m.solid_mean_diameter_mm) == "4A"


@pytest.mark.parametrize(
    "kind, size, solid, category",
    [
        ("solid", 5.9, 0, "2"),
        ("solid", 6.0, 0, "3"),
        ("solid", 7.9, 0, "3"),
        ("solid", 8.0, 0, "4A"),
        ("solid", 14.9, 0, "4A"),
        ("solid", 15.0, 0, "4B"),
        ("solid", 5.94, 0, "2"),  # 5.9 to 0.1 mm
        ("solid", 5.96, 0, "3"),  # 6.0 to 0.1 mm
        ("part-solid", 5.9, 4.0, "2"),
        ("part-solid", 6.0, 5.9, "3"),
        ("part-solid", 12.0, 6.0, "4A"),
        ("part-solid", 12.0, 7.9, "4A"),
        ("part-solid", 12.0, 8.0, "4B"),
        ("ground glass", 29.9, 0, "2"),
        ("ground glass", 30.0, 0, "3"),
        ("solid", float("nan"), 0, "0"),  # cannot be sized: incomplete
    ],
)
def test_lung_rads_at_every_boundary(kind, size, solid, category) -> None:
    assert lung_rads(kind, size, solid) == category


def test_scan_category_is_the_most_suspicious_finding_and_never_1() -> None:
    assert scan_category(["2", "4A", "3"], 0.9) == "4A"
    # an unsized finding leaves the evaluation incomplete, unless one is already 4A or 4B
    assert scan_category(["2", "0", "3"], 0.9) == "0"
    assert scan_category(["0", "4B"], 0.9) == "4B"
    assert scan_category(["0"], 0.5) == "0"
    # nothing found is not a negative screen
    assert scan_category([], 0.9) == "no finding at probability >= 0.90"
    with pytest.raises(ValueError, match="unknown nodule type"):
        lung_rads("calcified", 5.0)


def test_members_outlining_disjoint_parts_fuse_to_no_mask_not_an_error() -> None:
    # Three cubes on one place, each outlining a different voxel: no voxel has half the
    # votes of the cubes covering it, so the finding is unsized (as without masks).
    members = [
        FindingMask(
            keys=_pack(np.array([[10, 10, 10 + k]])),
            hu=np.array([40], np.int16),
            centre_key=np.array([10, 10, 10]),
            half_voxels=32,
            spacing_mm=1.0,
        )
        for k in range(3)
    ]
    mask, origin, hu = fuse_masks(members)
    assert mask.shape == (0, 0, 0) and hu.shape == (0, 0, 0)
    assert measure_mask(mask, origin, 1.0, hu).empty


@pytest.mark.parametrize("seed", range(4))
def test_the_longest_axial_diameter_is_the_one_every_slice_measured_would_give(seed) -> None:
    """The search for the slice of longest axis skips slices whose mask's box is too small:
    the same axes, from the same slice, as measuring every slice (ties to the first)."""
    rng = np.random.default_rng(seed)
    for i in range(60):
        shape = tuple(int(n) for n in rng.integers(2, 20, 3))
        if i % 3 == 0:  # stacked equal discs: every slice ties
            _, yy, xx = np.indices(shape) - np.array(shape)[:, None, None, None] // 2
            mask = yy**2 + xx**2 <= rng.integers(1, 30)
        else:
            mask = rng.random(shape) < rng.uniform(0.05, 0.6)
        spacing = (2.5, 0.703125, 0.703125) if i % 2 else (1.0, 1.0, 1.0)
        best = (0.0, 0.0)
        for z in range(shape[0]):
            if mask[z].any():
                axes = axial_axes_mm(mask[z], spacing[1:])
                best = axes if axes[0] > best[0] else best
        m = measure_mask(mask, np.zeros(3), spacing[::-1])
        if not mask.any():
            continue
        assert (m.diameter_mm, m.long_axis_mm, m.short_axis_mm) == (best[0], *best)
