"""Phantom noise: the real slab's spectrum, scaled by pixel size and slice thickness."""

from __future__ import annotations

import numpy as np
import pytest

from lungcad.core.io.series import read_series
from lungcad.phantom.scanner import REAL_NPS_FREQ_PER_MM, REAL_NPS_HU2MM2, nps_noise
from lungcad.realism.stats import noise_power_spectrum


def test_embedded_spectrum_is_what_the_real_slab_measures(slab_files) -> None:
    vol = read_series(slab_files)
    freq, nps, rois = noise_power_spectrum(vol.hu, float(vol.geometry.spacing_mm[0]))
    assert rois >= 20
    np.testing.assert_allclose(freq, REAL_NPS_FREQ_PER_MM, rtol=1e-9)
    np.testing.assert_allclose(nps, REAL_NPS_HU2MM2, rtol=0.01, atol=0.5)


def _spectrum_of_noise(noise: np.ndarray, pixel: float) -> np.ndarray:
    # Measured the same way as the real slab's: shift noise into the soft-tissue range.
    return noise_power_spectrum(noise + 20.0, pixel, max_std_hu=1e9)[1]


def test_synthetic_noise_has_the_reference_spectrum() -> None:
    pixel = 0.703125
    noise = nps_noise(np.random.default_rng(0), (24, 256, 256), pixel, thickness_mm=2.5)
    nps = _spectrum_of_noise(noise, pixel)
    # Measured back through the same estimator (32-pixel ROIs leak power between bins, the
    # quadratic detrend removes the lowest bins' power), the spectrum agrees within 25 % from
    # the third bin on.
    np.testing.assert_allclose(nps[2:], REAL_NPS_HU2MM2[2:], rtol=0.25)
    assert nps[1] < REAL_NPS_HU2MM2[1]


def test_noise_variance_scales_with_thickness_and_is_seeded() -> None:
    shape = (8, 128, 128)
    thick = nps_noise(np.random.default_rng(1), shape, 0.7, thickness_mm=2.5)
    thin = nps_noise(np.random.default_rng(1), shape, 0.7, thickness_mm=0.625)
    assert thin.std() / thick.std() == pytest.approx(2.0, rel=0.02)
    np.testing.assert_array_equal(thick, nps_noise(np.random.default_rng(1), shape, 0.7, 2.5))
