"""Lung segmentation by HU threshold, connected components and morphology.

It is meant for choosing where negative cubes may be sampled and for checking where nodule
centres lie, not for lung volumetry, so it works on a coarse grid of about 2.5 mm blocks
(block-mean HU): that keeps the morphology, done with exact-mm distance transforms, cheap.

The lung region, where detection searches, must hold every lung lesion, and a tumour grown
against the chest wall or the mediastinum is not air: it bites into the thresholded lung. A
closing fills bites up to about twice its radius; larger ones are filled by the pleural
envelope, each lung's convex hull on every slice (the chest wall and the mediastinal pleura
bound a lung convexly), kept within ``ENVELOPE_MM`` of the aerated lung on the same slice so
that the hull of a lung base's crescent does not take in the liver dome, nor the hull of a
lung's medial border the heart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungcad.core.io.geometry import VolumeGeometry

#: Voxels below this HU inside the body are air-filled (lung, airway).
LUNG_THRESHOLD_HU = -400
#: Edge of the blocks the mask is computed on.
BLOCK_MM = 2.5
#: The pleural envelope reaches this far from the aerated lung on the same slice: a mass of
#: up to about twice it against the chest wall or the mediastinum lies inside the region.
ENVELOPE_MM = 35.0


@dataclass(frozen=True)
class LungMasks:
    """Lung masks of one volume on a grid of blocks of ``step`` voxels (slice, row, col).

    Attributes:
        parenchyma: aerated lung with the vessels and nodules it encloses (holes filled per
            slice), no closing: where negative cube centres are drawn.
        region: ``parenchyma`` closed with ``closing_mm``, joined with its pleural envelope
            and dilated by ``dilation_mm``: the lung region, where detection searches, with
            juxtapleural nodules and masses against the chest wall or mediastinum inside.
        step: voxels per block along (slice, row, column).
    """

    parenchyma: np.ndarray
    region: np.ndarray
    step: tuple[int, int, int]

    def block_of(self, index_zyx: np.ndarray) -> tuple[np.ndarray, ...]:
        """Block indices of full-resolution (slice, row, col) voxel indices (clipped)."""
        idx = np.asarray(index_zyx, dtype=np.int64) // np.array(self.step)
        idx = np.clip(idx, 0, np.array(self.parenchyma.shape) - 1)
        return tuple(idx.T) if idx.ndim == 2 else tuple(idx)

    def block_centres(self, blocks: np.ndarray) -> np.ndarray:
        """(K, 3) full-resolution voxel indices of the centres of the True blocks."""
        step = np.array(self.step)
        return np.argwhere(blocks) * step + step // 2


def _block_reduce(hu: np.ndarray, step: tuple[int, int, int], ufunc: np.ufunc) -> np.ndarray:
    """Reduce blocks of ``step`` voxels with ``ufunc``.

    One axis at a time, each reduction over a middle axis of a C-contiguous array, which is
    several times faster than reducing a 6-D block view over three axes at once. A volume
    whose size is not a multiple of the block is padded by repeating its last slice, row or
    column: padding with air would turn the last block slice of the body into "air" and join
    the lungs to the air outside the patient.
    """
    pad = [(0, (-n) % s) for n, s in zip(hu.shape, step)]
    out = np.pad(hu, pad, mode="edge") if any(p for _, p in pad) else hu
    # sums accumulate in int32 from the first reduction on (no int32 copy of the volume)
    wide = np.int32 if ufunc is np.add else None
    (nz, ny, nx), (sz, sy, sx) = (n // s for n, s in zip(out.shape, step)), step
    out = ufunc.reduce(out.reshape(nz, sz, -1), axis=1, dtype=wide)
    out = ufunc.reduce(out.reshape(nz, ny, sy, -1), axis=2)
    return ufunc.reduce(out.reshape(nz, ny, nx, sx), axis=3)


def block_max(hu: np.ndarray, step: tuple[int, int, int]) -> np.ndarray:
    """Highest HU in each block (for finding dense structures on the block grid)."""
    return _block_reduce(hu, step, np.maximum)


def block_mean(hu: np.ndarray, step: tuple[int, int, int]) -> np.ndarray:
    """Mean HU of each block."""
    return _block_reduce(hu, step, np.add) / float(np.prod(step))


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
        geometry: its geometry (radii are in mm, so anisotropic spacing is respected).
        dilation_mm: outward growth of the lung region.
        closing_mm: radius of the closing that fills the bites dense structures take out
            of the lung border: a juxtapleural nodule up to about twice this diameter ends
            up inside the region (larger ones through the pleural envelope).
        threshold_hu: air/tissue threshold.

    Returns:
        The parenchyma and the closed, dilated lung region (see ``LungMasks``).
    """
    spacing_zyx = geometry.spacing_mm[::-1]
    step = tuple(int(max(1, round(BLOCK_MM / s))) for s in spacing_zyx)
    air = block_mean(hu, step) < threshold_hu
    labels, n = ndimage.label(air)
    empty = np.zeros(air.shape, dtype=bool)
    if n == 0:
        return LungMasks(empty, empty, step)
    # Air connected to the in-plane border is outside the body.
    border = np.unique(
        np.concatenate(
            [
                labels[:, 0].ravel(),
                labels[:, -1].ravel(),
                labels[:, :, 0].ravel(),
                labels[:, :, -1].ravel(),
            ]
        )
    )
    sizes = ndimage.sum_labels(air, labels, index=np.arange(1, n + 1))
    sizes[border[border > 0] - 1] = 0
    if sizes.max() == 0:
        return LungMasks(empty, empty, step)
    keep = np.zeros(n + 1, dtype=bool)
    # The lungs: the largest inner air components (two lungs, possibly joined).
    keep[1:] = sizes >= 0.15 * sizes.max()
    air_lungs = keep[labels]
    parenchyma = np.empty_like(air_lungs)
    for k in range(air_lungs.shape[0]):  # vessels and nodules are holes in the air mask
        parenchyma[k] = ndimage.binary_fill_holes(air_lungs[k])
    sampling = spacing_zyx * np.array(step)
    # Morphology through distance transforms (exact radii in mm, linear cost), inside the
    # lungs' bounding box grown by the radii (the rest of the volume cannot change).
    margin = np.ceil((closing_mm + dilation_mm) / sampling).astype(int) + 1
    nonzero = np.argwhere(parenchyma)
    lo = np.maximum(nonzero.min(axis=0) - margin, 0)
    hi = np.minimum(nonzero.max(axis=0) + margin + 1, parenchyma.shape)
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    lungs = parenchyma[box]
    grown = ndimage.distance_transform_edt(~lungs, sampling=sampling) <= closing_mm
    closed = (ndimage.distance_transform_edt(grown, sampling=sampling) > closing_mm) | lungs
    closed |= pleural_envelope(lungs, sampling, ENVELOPE_MM)
    for k in range(closed.shape[0]):
        closed[k] = ndimage.binary_fill_holes(closed[k])
    region = np.zeros_like(parenchyma)
    region[box] = ndimage.distance_transform_edt(~closed, sampling=sampling) <= dilation_mm
    return LungMasks(parenchyma, region, step)


def pleural_envelope(lungs: np.ndarray, sampling: np.ndarray, reach_mm: float) -> np.ndarray:
    """Each lung's convex hull on every slice, within ``reach_mm`` of the slice's aerated
    lung.

    Args:
        lungs: (slice, row, col) aerated lung mask (block grid).
        sampling: mm per block along (slice, row, col).
        reach_mm: how far from ``lungs`` the hull may reach.

    The two lungs are told apart by the column midway between the lungs' outer edges, so
    lungs joined in front of the mediastinum still get a hull each and the mediastinum
    between them stays outside.
    """
    from skimage.morphology import convex_hull_image

    hull = np.zeros_like(lungs)
    columns = np.flatnonzero(lungs.any(axis=(0, 1)))
    if len(columns) == 0:
        return hull
    midline = (columns[0] + columns[-1] + 1) // 2
    for k in range(lungs.shape[0]):
        for start, stop in ((0, midline), (midline, lungs.shape[2])):
            side = lungs[k, :, start:stop]
            if side.sum() < 3:
                continue
            # the hull within the side's bounding box (no pixel centre outside it is in
            # the hull): the same pixels, and the point-in-polygon test over fewer of them
            rows, cols = np.flatnonzero(side.any(axis=1)), np.flatnonzero(side.any(axis=0))
            box = (k, slice(rows[0], rows[-1] + 1), slice(start + cols[0], start + cols[-1] + 1))
            try:
                hull[box] = convex_hull_image(lungs[box])
            except (ValueError, RuntimeError):  # collinear pixels: Qhull finds no hull
                hull[box] = lungs[box]
    for k in range(lungs.shape[0]):
        if hull[k].any():
            near = ndimage.distance_transform_edt(~lungs[k], sampling=sampling[1:]) <= reach_mm
            hull[k] &= near
    return hull
