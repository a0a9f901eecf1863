"""The candidate generator on a synthetic chest with spheres and tubes at known mm positions."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from lungcad.config import CandidatesConfig
from lungcad.core.candidates import generate_candidates
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.lung_mask import lung_mask

SPACING = np.array([0.8, 0.8, 1.25])  # (x, y, z) mm: anisotropic like a clinical CT
ORIGIN = np.array([-100.0, -80.0, -60.0])
SHAPE = (96, 200, 250)  # (slices, rows, columns)
#: (centre mm, diameter mm) of solid spheres in the lungs.
SPHERES = [((-45.0, -5.0, 0.0), 5.0), ((40.0, 10.0, -10.0), 9.0), ((50.0, -20.0, 20.0), 16.0)]


def synthetic_chest(
    seed: int = 0,
    shape: tuple[int, int, int] = SHAPE,
    spacing: np.ndarray = SPACING,
    origin: np.ndarray = ORIGIN,
    spheres: list = SPHERES,
    lung_half_length_mm: float = 70.0,
) -> tuple[np.ndarray, VolumeGeometry]:
    """Air outside an elliptic body of soft tissue holding two lungs (-850 HU) with noise,
    solid spheres (``spheres``: centre mm, diameter mm) and two long vessels (3 mm tubes
    along z); the default grid is anisotropic like a clinical CT."""
    spacing, origin = np.asarray(spacing, float), np.asarray(origin, float)
    geometry = VolumeGeometry(origin, spacing, np.eye(3), shape)
    k, j, i = np.indices(shape, dtype=np.float32)
    x = origin[0] + i * spacing[0]
    y = origin[1] + j * spacing[1]
    z = origin[2] + k * spacing[2]
    hu = np.full(shape, -1000.0, np.float32)
    hu[(x / 95) ** 2 + (y / 75) ** 2 <= 1] = 40.0
    for cx in (-45.0, 45.0):
        hu[((x - cx) / 38) ** 2 + (y / 55) ** 2 + (z / lung_half_length_mm) ** 2 <= 1] = -850.0
    for (sx, sy, sz), d in spheres:
        hu[(x - sx) ** 2 + (y - sy) ** 2 + (z - sz) ** 2 <= (d / 2) ** 2] = 30.0
    for vx, vy in ((-40.0, 25.0), (35.0, 30.0)):  # vessels crossing the lungs along z
        hu[((x - vx) ** 2 + (y - vy) ** 2 <= 1.5**2) & (np.abs(z) < 50)] = 30.0
    hu += np.random.default_rng(seed).normal(0, 15, shape).astype(np.float32)
    return np.rint(hu).astype(np.int16), geometry


@pytest.fixture(scope="module")
def chest():
    return synthetic_chest()


def test_every_sphere_gets_a_candidate_within_its_radius_ranked_above_the_vessels(chest) -> None:
    hu, geometry = chest
    lungs = lung_mask(hu, geometry)
    cands = generate_candidates(geometry.to_sitk(hu), lungs, geometry, CandidatesConfig())
    pts = cands[["coordX", "coordY", "coordZ"]].to_numpy()
    for centre, diameter in SPHERES:
        d = np.linalg.norm(pts - np.array(centre), axis=1)
        inside = np.flatnonzero(d < diameter / 2)
        assert len(inside), f"no candidate within {diameter / 2} mm of {centre}"
        best = inside[0]  # candidates come best first
        # Centred to within a voxel or two, sized to within 40 %.
        assert d[best] < 1.5
        assert cands["diameter_mm"].iloc[best] == pytest.approx(diameter, rel=0.4)
        # Round blobs outrank everything on the straight tubes and the noise.
        assert best < len(SPHERES), cands.head(6)


def test_no_lung_gives_no_candidates() -> None:
    hu = np.full((20, 64, 64), 40, np.int16)  # a block of soft tissue: no air, no lung
    geometry = VolumeGeometry(np.zeros(3), np.ones(3), np.eye(3), hu.shape)
    lungs = lung_mask(hu, geometry)
    assert len(generate_candidates(geometry.to_sitk(hu), lungs, geometry)) == 0


def test_finding_diameter_is_measured_from_the_cube(chest) -> None:
    from lungcad.core.cubes import extract_cube
    from lungcad.detection.detector import cube_diameter_mm

    hu, geometry = chest
    image = geometry.to_sitk(hu)
    for centre, diameter in SPHERES:
        cube = extract_cube(image, np.array(centre) + 0.7)  # the centre found is never exact
        assert cube_diameter_mm(cube, 1.0, fallback_mm=-1) == pytest.approx(diameter, rel=0.15)
    lung = extract_cube(image, np.array([-45.0, -5.0, 40.0]))  # aerated lung only
    assert cube_diameter_mm(lung, 1.0, fallback_mm=-1) == -1


def test_local_maxima_are_the_voxels_no_neighbour_exceeds_up_to_the_edges() -> None:
    from scipy import ndimage

    from lungcad.core.candidates import _local_maxima

    rng = np.random.default_rng(0)
    # coarse values: plateaus (ties), and maxima on the faces and corners of the array
    response = rng.integers(0, 6, (9, 11, 13)).astype(np.float32)
    mask = rng.random(response.shape) < 0.8
    want = (response >= 2) & mask
    want &= response == ndimage.maximum_filter(response, size=3, mode="nearest")
    got = _local_maxima(response, mask, 2.0)
    assert got.tolist() == np.argwhere(want).tolist()  # the same voxels, in the same order
    assert len(got) > 10 and (got == 0).any() and (got == np.array(response.shape) - 1).any()


def test_the_cap_keeps_the_best_candidates_of_the_uncapped_list(chest) -> None:
    hu, geometry = chest
    lungs = lung_mask(hu, geometry)
    image = geometry.to_sitk(hu)
    every = generate_candidates(image, lungs, geometry, CandidatesConfig(max_candidates=1000))
    capped = generate_candidates(image, lungs, geometry, CandidatesConfig(max_candidates=7))
    assert len(every) > 7
    pd.testing.assert_frame_equal(capped, every.head(7))
