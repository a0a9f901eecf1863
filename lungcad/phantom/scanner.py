"""CT noise with the power spectrum of a real LIDC scan, scaled to each scan's geometry.

``REAL_NPS_HU2MM2`` is the radially averaged noise power spectrum of the real LIDC-IDRI-0001
slab (2.5 mm slices, 0.703 mm pixels), measured by ``lungcad.realism.stats.noise_power_spectrum``
on its uniform soft-tissue regions (32×32 ROIs, quadratic detrend, 16 bins to the Nyquist
frequency); ``lungcad data realism`` prints the same measurement, and a test checks the table
against the slab. Noise is synthesised by shaping white noise with √NPS in the Fourier
domain on the scan's own pixel grid (so a finer pixel integrates the spectrum to a higher
Nyquist frequency, as it would on a scanner), with variance ∝ 1 / slice thickness (the
photons of a thinner slice are fewer).
"""

from __future__ import annotations

import numpy as np

#: Slice thickness at which REAL_NPS_HU2MM2 was measured.
REFERENCE_THICKNESS_MM = 2.5
#: Bin centres (cycles/mm) of the reference spectrum.
REAL_NPS_FREQ_PER_MM = (np.arange(16) + 0.5) * (0.5 / 0.703125) / 16
#: NPS (HU²·mm²) of the real slab at those frequencies.
REAL_NPS_HU2MM2 = np.array(
    [0.0, 2480, 2022, 1207, 753, 408, 243, 162, 118, 129, 97, 78, 54, 60, 67, 61], dtype=float
)


def nps_noise(
    rng: np.random.Generator,
    shape_zyx: tuple[int, int, int],
    pixel_mm: float,
    thickness_mm: float,
    dose_factor: float = 1.0,
    tilt: float = 0.0,
) -> np.ndarray:
    """Noise slices (float32 HU) with the reference spectrum, scaled to this geometry.

    Args:
        rng: the noise's random generator.
        shape_zyx: (slices, rows, cols).
        pixel_mm: in-plane pixel size of the scan.
        thickness_mm: its slice thickness (variance ∝ REFERENCE_THICKNESS_MM / thickness).
        dose_factor: variance multiplier (a per-scan tube current / patient size).
        tilt: the reconstruction kernel's reshaping of the spectrum: it is scaled by
            clip(1 + tilt · f / f_ref, 0.05, ∞), f_ref the reference spectrum's highest
            frequency (0: the reference kernel; > 0 sharper, < 0 softer).
    """
    _, rows, cols = shape_zyx
    fy = np.fft.fftfreq(rows, d=pixel_mm)[:, None]
    fx = np.fft.rfftfreq(cols, d=pixel_mm)[None, :]
    f = np.hypot(fy, fx)
    nps = np.interp(f, REAL_NPS_FREQ_PER_MM, REAL_NPS_HU2MM2)
    if tilt:
        f_ref = 0.5 / 0.703125
        nps *= np.clip(1.0 + tilt * f / f_ref, 0.05, None)
    nps *= dose_factor * REFERENCE_THICKNESS_MM / thickness_mm
    # White noise of unit variance has NPS = pixel²; shape it to the target NPS. The DFT of
    # such noise is complex Gaussian with E|X|² = rows·cols: draw it in the Fourier domain
    # directly (half the FFTs), real and imaginary parts each of variance rows·cols / 2.
    gain = np.sqrt(nps / pixel_mm**2 * rows * cols / 2).astype(np.float32)
    spectrum_shape = (shape_zyx[0], rows, cols // 2 + 1)
    spectrum = rng.standard_normal(spectrum_shape, dtype=np.float32) * gain
    spectrum = spectrum + 1j * (rng.standard_normal(spectrum_shape, dtype=np.float32) * gain)
    return np.fft.irfft2(spectrum, s=(rows, cols)).astype(np.float32)
