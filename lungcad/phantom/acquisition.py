"""Acquisition and background lung state of one phantom scan, drawn from ranges.

A network that learns from one scanner look fails on the next scanner. Each phantom scan
therefore draws its own acquisition (reconstruction kernel, dose, HU calibration, motion,
contrast, a thicker reconstruction) and background lung state (emphysema, ground glass,
fibrosis, dependent atelectasis, pleural effusion) from the ranges of ``phantom.randomise``
in ``params.yaml``. ``Acquisition()`` is the default look, the one the sealed benchmark and
the realism report's paired scan are drawn with.

Kernels change three things a radiologist sees: the in-plane blur (a soft kernel smooths,
a sharp one keeps edges), edge enhancement (the overshoot of a sharp kernel at a vessel's
wall) and the noise texture (the noise power spectrum moves to high frequencies as the
kernel sharpens, and its variance grows).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

#: Kernel -> (in-plane PSF sigma mm, edge gain, NPS tilt). The tilt scales the reference
#: spectrum by clip(1 + tilt · f / f_ref, 0.05, ∞), f_ref the reference scan's Nyquist
#: frequency: < 0 moves the noise to coarse grain (soft), > 0 to fine grain (sharp).
KERNELS: dict[str, tuple[float, float, float]] = {
    "soft": (0.75, 0.0, -0.7),
    "standard": (0.5, 0.0, 0.0),
    "sharp": (0.4, 0.5, 1.5),
    "lung": (0.35, 1.0, 3.0),
}
BACKGROUNDS = ("normal", "emphysema", "ground_glass", "fibrosis", "atelectasis", "effusion")


@dataclass(frozen=True)
class Acquisition:
    """How one phantom scan is acquired and what its lungs look like around the nodules.

    Attributes:
        kernel: a key of ``KERNELS``.
        dose_factor: noise variance multiplier (low dose > 1).
        hu_offset: calibration offset added to every voxel (HU).
        motion_mm: length of an in-plane motion blur over ``motion_band_mm`` (0: none).
        motion_band_mm: (start, length) of the band of slices blurred, from the scan's top.
        contrast: IV contrast (None: the real scan's flag).
        blood_hu: blood HU with contrast.
        background: a name of ``BACKGROUNDS``.
        background_extent: share of the lung the background state takes (0..1).
        thick_factor: consecutive slices averaged into one (a thicker reconstruction).
    """

    kernel: str = "standard"
    dose_factor: float = 1.0
    hu_offset: float = 0.0
    motion_mm: float = 0.0
    motion_band_mm: tuple[float, float] = (0.0, 0.0)
    contrast: bool | None = None
    blood_hu: float = 160.0
    background: str = "normal"
    background_extent: float = 0.0
    thick_factor: int = 1

    def __post_init__(self) -> None:
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {sorted(KERNELS)} (got {self.kernel!r})")
        if self.background not in BACKGROUNDS:
            raise ValueError(f"background must be one of {BACKGROUNDS} (got {self.background!r})")
        if self.thick_factor < 1:
            raise ValueError(f"thick_factor must be >= 1 (got {self.thick_factor})")

    @property
    def extent_drawn(self) -> bool:
        """Whether a background lung state is drawn."""
        return self.background != "normal" and self.background_extent > 0

    @property
    def psf_sigma_mm(self) -> float:
        return KERNELS[self.kernel][0]

    @property
    def edge_gain(self) -> float:
        return KERNELS[self.kernel][1]

    @property
    def nps_tilt(self) -> float:
        return KERNELS[self.kernel][2]

    def as_dict(self) -> dict:
        return asdict(self)


def _pick(rng: np.random.Generator, shares: dict[str, float]) -> str:
    names = list(shares)
    p = np.array([shares[n] for n in names], dtype=float)
    return names[int(rng.choice(len(names), p=p / p.sum()))]


def draw_acquisition(ranges, rng: np.random.Generator, scan_length_mm: float) -> Acquisition:
    """One scan's acquisition from ``phantom.randomise`` (``RandomiseConfig``).

    Args:
        ranges: the ranges and shares to draw from.
        rng: the scan's generator (seeded by the phantom seed and the scan).
        scan_length_mm: z extent of what is written (places the motion band).
    """
    lo, hi = ranges.dose_factor
    motion = rng.random() < ranges.motion_share
    band = rng.uniform(10.0, 40.0)
    background = _pick(rng, ranges.backgrounds)
    return Acquisition(
        kernel=_pick(rng, ranges.kernels),
        dose_factor=float(np.exp(rng.uniform(np.log(lo), np.log(hi)))),
        hu_offset=float(rng.uniform(*ranges.hu_offset)),
        motion_mm=float(rng.uniform(*ranges.motion_mm)) if motion else 0.0,
        motion_band_mm=(float(rng.uniform(0, max(scan_length_mm - band, 0.0))), band),
        contrast=bool(rng.random() < ranges.contrast_share),
        blood_hu=float(rng.uniform(*ranges.blood_hu)),
        background=background,
        background_extent=float(rng.uniform(*ranges.background_extent))
        if background != "normal"
        else 0.0,
        thick_factor=int(rng.choice(ranges.thick_factors))
        if rng.random() < ranges.thick_share
        else 1,
    )
