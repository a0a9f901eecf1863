"""Lung segmentation by HU threshold, connected components and morphology.

It is meant for choosing where negative cubes may be sampled and for quality checks, not
for lung volumetry: it works on a 2x in-plane subsampled grid and is dilated so that
juxtapleural nodules, which touch the chest wall, stay inside it.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
from scipy import ndimage

from lungcad.io.geometry import VolumeGeometry

#: Voxels below this HU inside the body are air-filled (lung, airway).
LUNG_THRESHOLD_HU = -400


class LungMasks(NamedTuple):
    """Lung masks of one volume, all of its shape.

    Attributes:
        parenchyma: aerated lung with the vessels and nodules it encloses (holes filled per
            slice), no closing: where negative cube centres are drawn.
        region: ``parenchyma`` closed with ``closing_mm`` and dilated by ``dilation_mm``:
            the lung region, juxtapleural nodules included (used to check nodule centres).
    """

    parenchyma: np.ndarray
    region: np.ndarray


def lung_mask(
    hu: np.ndarray,
    geometry: VolumeGeometry,
    dilation_mm: float = 5.0,
    closing_mm: float = 20.0,
    threshold_hu: float = LUNG_THRESHOLD_HU,
) -> LungMasks:
    """Segment the lungs of a HU volume.

    Args:
        hu: (slice, row, column) HU volume.
        geometry: its geometry (morphology radii are in mm, so anisotropy is respected).
        dilation_mm: outward growth of the final mask.
        closing_mm: radius of the closing that fills the bites dense structures take out
            of the lung border: a juxtapleural nodule up to about twice this diameter ends
            up inside the mask.
        threshold_hu: air/tissue threshold.

    Returns:
        The parenchyma and the closed, dilated lung region (see ``LungMasks``).
    """
    step = 2  # in-plane subsampling: plenty for a sampling mask, 4x less work
    air = hu[:, ::step, ::step] < threshold_hu
    labels, n = ndimage.label(air)
    if n == 0:
        empty = np.zeros(hu.shape, dtype=bool)
        return LungMasks(empty, empty)
    # Air connected to the in-plane border is outside the body.
    border = np.unique(
        np.concatenate(
            [
                labels[:, 0, :].ravel(),
                labels[:, -1, :].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    sizes = ndimage.sum_labels(air, labels, index=np.arange(1, n + 1))
    sizes[border[border > 0] - 1] = 0
    keep = np.zeros(n + 1, dtype=bool)
    if sizes.max() > 0:
        # The lungs: the largest inner air components (two lungs, possibly joined).
        keep[1:] = sizes >= 0.15 * sizes.max()
    air_lungs = keep[labels]
    parenchyma = np.empty_like(air_lungs)
    for k in range(air_lungs.shape[0]):  # vessels and nodules are holes in the air mask
        parenchyma[k] = ndimage.binary_fill_holes(air_lungs[k])
    sampling = (
        geometry.spacing_mm[2],
        geometry.spacing_mm[1] * step,
        geometry.spacing_mm[0] * step,
    )
    # Morphology through distance transforms: exact radii in mm, linear cost.
    grown = ndimage.distance_transform_edt(~parenchyma, sampling=sampling) <= closing_mm
    closed = ndimage.distance_transform_edt(grown, sampling=sampling) > closing_mm
    closed |= parenchyma
    for k in range(closed.shape[0]):
        closed[k] = ndimage.binary_fill_holes(closed[k])
    region = ndimage.distance_transform_edt(~closed, sampling=sampling) <= dilation_mm

    def upsample(m: np.ndarray) -> np.ndarray:
        full = m.repeat(step, axis=1).repeat(step, axis=2)
        return full[:, : hu.shape[1], : hu.shape[2]]

    return LungMasks(upsample(parenchyma), upsample(region))
