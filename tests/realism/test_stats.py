"""Realism statistics measured on volumes whose answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.realism.stats import core_parenchyma, lung_stats

PIXEL_MM = 0.7
SLICE_MM = 2.5


def _chest(noise_hu: float, vessels: list[tuple[float, float, float]], seed: int = 0):
    """Air, a soft-tissue body, two lungs at -850 HU with white noise, and vertical vessels
    (x_mm, y_mm, radius_mm) drawn as discs of +40 HU on every slice."""
    rng = np.random.default_rng(seed)
    n, slices = 256, 12
    c = (np.arange(n) - (n - 1) / 2) * PIXEL_MM
    y, x = np.meshgrid(c, c, indexing="ij")
    body = (x / 85) ** 2 + (y / 65) ** 2 <= 1
    lungs = (((x + 38) / 30) ** 2 + (y / 45) ** 2 <= 1) | (
        ((x - 38) / 30) ** 2 + (y / 45) ** 2 <= 1
    )
    plane = np.where(body, 40.0, -1000.0)
    plane[lungs] = -850.0
    vessel = np.zeros_like(lungs)
    for vx, vy, r in vessels:
        vessel |= (x - vx) ** 2 + (y - vy) ** 2 <= r * r
    plane[vessel & lungs] = 40.0
    hu = np.repeat(plane[None], slices, axis=0)
    hu[:, lungs & ~vessel] += rng.normal(0, noise_hu, (slices, int((lungs & ~vessel).sum())))
    geometry = VolumeGeometry(
        np.array([c[0], c[0], 0.0]), np.array([PIXEL_MM, PIXEL_MM, SLICE_MM]), np.eye(3), hu.shape
    )
    return np.rint(hu).astype(np.int16), geometry, vessel


def test_known_vessels_and_noise_are_measured() -> None:
    # 12 vessels of 2 mm radius well inside the lungs (their cores, away from the pleura).
    centres = [(sx * 38 + dx, dy, 2.0) for sx in (-1, 1) for dx in (-8, 8) for dy in (-20, 0, 20)]
    hu, geometry, vessel = _chest(30.0, centres)
    core = core_parenchyma(hu, geometry)
    stats = lung_stats(hu, geometry, core)
    truth_fraction = (vessel[None] & core).sum() / core.sum()
    assert stats.vessel_fraction == pytest.approx(truth_fraction, rel=1e-6)
    area_cm2 = core.sum() * PIXEL_MM**2 / 100  # over all 12 slices, each crossing 12 vessels
    assert stats.vessel_sections_per_cm2 == pytest.approx(12 * 12 / area_cm2, rel=1e-6)
    # Vessel edges raise the high-pass figure (its definition keeps their halo).
    assert stats.highpass_noise_hu > 30.0
    assert stats.slices == 12
    # Core parenchyma is the lung eroded away from the pleura: inside the lungs, smaller.
    lung_voxels = (hu > -1000) & (hu < -500)
    assert core.sum() < lung_voxels.sum() and not core[:, :, :20].any()


def test_percentile_width_of_pure_noise() -> None:
    hu, geometry, _ = _chest(40.0, [])
    stats = lung_stats(hu, geometry)
    assert stats.vessel_fraction == 0 and stats.vessel_sections_per_cm2 == 0
    # White noise of std s: HU minus its 5x5 mean has std s * sqrt(24/25).
    assert stats.highpass_noise_hu == pytest.approx(40.0 * np.sqrt(24 / 25), rel=0.03)
    assert stats.parenchyma_hu_width == pytest.approx(2 * 1.2816 * 40.0, rel=0.05)
    assert stats.parenchyma_hu_p10 == pytest.approx(-850 - 1.2816 * 40, abs=3)


def test_a_volume_without_lungs_is_refused() -> None:
    hu, geometry, _ = _chest(10.0, [])
    hu[hu < -500] = 40
    with pytest.raises(ValueError, match="no lung parenchyma"):
        lung_stats(hu, geometry)
