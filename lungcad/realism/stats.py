"""Image statistics that tell real lung CT from a simpler synthetic one.

All of them are measured inside the *core parenchyma*: lungcad's own lung mask
(``preprocessing.lung_mask``, on its 2.5 mm block grid, upsampled to voxels) eroded in-plane
by ``ERODE_VOXELS`` so that the pleura and the chest wall do not count. Definitions:

- *vessel fraction*: share of core-parenchyma voxels above ``VESSEL_HU`` (-500 HU).
- *vessel cross-sections per cm²*: 4-connected components of those voxels in each axial
  slice, counted and divided by the slice's core-parenchyma area; pooled over slices.
- *parenchyma HU p10/p90*: percentiles of every core-parenchyma voxel (vessels included).
- *high-pass noise*: standard deviation of HU minus its 5×5 in-plane mean, over the
  core-parenchyma voxels that are not vessel voxels. It holds the scanner's noise and the
  parenchyma's fine texture (sub-resolution vessels, interlobular septa) together.
- *noise power spectrum* (NPS): see ``noise_power_spectrum``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import ndimage

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.lung_mask import lung_mask

VESSEL_HU = -500.0
ERODE_VOXELS = 8
HIGHPASS_SIZE = 5
#: Soft tissue and fat: the uniform regions whose noise spectrum is measured.
UNIFORM_HU_RANGE = (-200.0, 150.0)


@dataclass(frozen=True)
class LungStats:
    """The realism statistics of one volume (see the module docstring)."""

    vessel_fraction: float
    vessel_sections_per_cm2: float
    parenchyma_hu_p10: float
    parenchyma_hu_p90: float
    parenchyma_hu_width: float
    highpass_noise_hu: float
    parenchyma_voxels: int
    slices: int

    def as_dict(self) -> dict[str, float]:
        return asdict(self)


def core_parenchyma(hu: np.ndarray, geometry: VolumeGeometry) -> np.ndarray:
    """Voxel mask (slice, row, col) of the lung parenchyma away from the pleura."""
    masks = lung_mask(hu, geometry)
    full = masks.parenchyma
    for axis, step in enumerate(masks.step):
        full = np.repeat(full, step, axis=axis)
    full = full[: hu.shape[0], : hu.shape[1], : hu.shape[2]]
    # The blocks' staircase edge and the pleura fall away with an in-plane erosion of
    # ERODE_VOXELS; vessels inside the lung stay in (the mask's holes are filled).
    inside = np.zeros_like(full)
    structure = ndimage.generate_binary_structure(2, 1)
    for k in range(hu.shape[0]):
        if full[k].any():
            inside[k] = ndimage.binary_erosion(
                full[k], structure, iterations=ERODE_VOXELS, border_value=0
            )
    return inside


def lung_stats(
    hu: np.ndarray, geometry: VolumeGeometry, core: np.ndarray | None = None
) -> LungStats:
    """Realism statistics of one HU volume (slice, row, col).

    Args:
        hu: HU volume.
        geometry: its geometry (pixel spacing gives the areas).
        core: the core-parenchyma mask, if already computed.
    """
    core = core_parenchyma(hu, geometry) if core is None else core
    n = int(core.sum())
    if n == 0:
        raise ValueError("no lung parenchyma found in the volume: is it a chest CT?")
    hu_f = hu.astype(np.float32)
    values = hu_f[core]
    vessel = (hu_f > VESSEL_HU) & core
    pixel_cm2 = float(geometry.spacing_mm[0] * geometry.spacing_mm[1]) / 100.0
    sections = sum(ndimage.label(vessel[k])[1] for k in range(hu.shape[0]) if vessel[k].any())
    highpass = hu_f - ndimage.uniform_filter(hu_f, size=(1, HIGHPASS_SIZE, HIGHPASS_SIZE))
    quiet = core & ~vessel
    p10, p90 = np.percentile(values, [10, 90])
    return LungStats(
        vessel_fraction=float(vessel.sum() / n),
        vessel_sections_per_cm2=float(sections / (n * pixel_cm2)),
        parenchyma_hu_p10=float(p10),
        parenchyma_hu_p90=float(p90),
        parenchyma_hu_width=float(p90 - p10),
        highpass_noise_hu=float(highpass[quiet].std()) if quiet.any() else float("nan"),
        parenchyma_voxels=n,
        slices=int(np.count_nonzero(core.any(axis=(1, 2)))),
    )


def noise_power_spectrum(
    hu: np.ndarray,
    pixel_mm: float,
    roi: int = 32,
    bins: int = 16,
    max_std_hu: float = 25.0,
) -> tuple[np.ndarray, np.ndarray, int]:
    """Radially averaged 2-D noise power spectrum of the uniform soft-tissue regions.

    Method (the usual one for CT NPS, e.g. ICRU 87): tile every slice into ``roi``×``roi``
    squares; keep those entirely inside soft tissue/fat (``UNIFORM_HU_RANGE``) whose values,
    after removing a fitted quadratic surface (the slow anatomy), vary less than
    ``max_std_hu`` (no edge inside); for each, NPS(u, v) = |DFT(roi − fit)|² · pixel² / roi²;
    average them and average radially.

    Returns:
        (frequency in cycles/mm at each bin centre, NPS in HU²·mm² per bin, ROIs used). The
        integral of the 2-D NPS over frequency equals the noise variance.
    """
    yy, xx = (a.ravel() / roi for a in np.mgrid[:roi, :roi].astype(np.float64))
    design = np.stack([np.ones(roi * roi), yy, xx, yy * yy, xx * xx, yy * xx], axis=1)
    spectra = []
    lo, hi = UNIFORM_HU_RANGE
    for plane in hu.astype(np.float64):
        for r0 in range(0, plane.shape[0] - roi + 1, roi):
            for c0 in range(0, plane.shape[1] - roi + 1, roi):
                patch = plane[r0 : r0 + roi, c0 : c0 + roi]
                if patch.min() < lo or patch.max() > hi:
                    continue
                coef, *_ = np.linalg.lstsq(design, patch.ravel(), rcond=None)
                detrended = patch - (design @ coef).reshape(roi, roi)
                if detrended.std() > max_std_hu:
                    continue
                spectra.append(np.abs(np.fft.fft2(detrended)) ** 2 * pixel_mm**2 / roi**2)
    if not spectra:
        raise ValueError("no uniform soft-tissue region found to measure the noise spectrum")
    nps2d = np.fft.fftshift(np.mean(spectra, axis=0))
    f = np.fft.fftshift(np.fft.fftfreq(roi, d=pixel_mm))
    radius = np.hypot(*np.meshgrid(f, f, indexing="ij"))
    edges = np.linspace(0, 0.5 / pixel_mm, bins + 1)
    which = np.digitize(radius.ravel(), edges) - 1
    nps = np.array([nps2d.ravel()[which == b].mean() for b in range(bins)])
    return (edges[:-1] + edges[1:]) / 2, nps, len(spectra)
