"""Stage 1: nodule candidates, blobs of the lung found in a difference-of-Gaussians scale space.

The lung region's bounding box is resampled to an isotropic 1 mm grid (SimpleITK, linear),
everything outside the lung region is set to soft tissue, and a scale space of
Gaussian blurs is built in two octaves: scales up to 2 mm on the 1 mm grid, larger scales
on a 2 mm grid (the coarse octave costs an eighth of the fine one). The difference of two
neighbouring blurs, G(σ) − G(kσ) ≈ (k − 1) σ² (−∇²G), is a scale-normalised blob response in
HU: it peaks at the centre of a bright sphere of radius ≈ √3 σ and is weaker for tubes
(vessels) and sheets (fissures, pleura) of the same calibre. The candidates are the local
maxima of each scale above ``min_response`` inside the lung region, ranked by
response × blobness (the Hessian's weakest / strongest curvature at the blob's scale:
1 for a sphere, near 0 for a tube or a sheet), merged across scales by keeping the best
within the radius of each blob, and capped at ``max_candidates`` per scan (best first).

Why this generator and not the network run densely: the network costs ~20 ms per 64³
cube on two CPU cores, so a dense sweep at a 4 mm stride over a pair of lungs would take
minutes per scan; the scale space takes seconds and its sensitivity is measured (README,
``reports/detection``).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import SimpleITK as sitk
from scipy import ndimage
from scipy.spatial import cKDTree

from lungcad.config import CandidatesConfig
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.lung_mask import LungMasks

#: HU given to everything outside the lung region before filtering: soft tissue, so that
#: the chest wall and mediastinum continue the tissue the region's border cuts through
#: (a lung-like fill would draw a bright edge, and blobs, along that border).
OUTSIDE_FILL_HU = 0.0
#: HU window of the filtered image: bone and contrast above soft tissue add nothing to a
#: blob, and a calcified nodule is still brighter than the lung around it.
CLIP_HU = (-1000.0, 100.0)
#: What ``generate_candidates`` returns for each candidate.
CANDIDATE_COLUMNS = [
    "coordX",
    "coordY",
    "coordZ",
    "response",
    "sigma_mm",
    "diameter_mm",
    "blobness",
    "score",
]
#: Radius of a sphere whose normalised DoG response peaks at scale σ (3-D): r = √3 σ.
RADIUS_PER_SIGMA = float(np.sqrt(3.0))


#: Blur scales of the scale space (mm, a geometric ladder): a DoG response is computed
#: between each neighbouring pair, so the blob scales are all but the last.
SIGMAS_MM = (1.0, 1.41, 2.0, 2.83, 4.0, 5.66, 8.0, 11.3, 16.0, 22.6, 32.0)
#: Scales from this one on are computed on the coarse grid (twice ``GRID_MM``).
COARSE_FROM_MM = 2.83
#: The fine grid's spacing (mm).
GRID_MM = 1.0


def _region_image(lungs: LungMasks, geometry: VolumeGeometry) -> sitk.Image:
    """The block-grid lung region as a SimpleITK image at the blocks' physical centres."""
    step = np.array(lungs.step[::-1], dtype=float)  # (col, row, slice)
    image = sitk.GetImageFromArray(lungs.region.astype(np.uint8))
    image.SetOrigin(tuple(geometry.index_to_mm((step - 1) / 2)))
    image.SetSpacing(tuple(geometry.spacing_mm * step))
    image.SetDirection(tuple(geometry.direction.ravel()))
    return image


def _iso_grid(
    lungs: LungMasks, geometry: VolumeGeometry, spacing_mm: float, pad_mm: float
) -> tuple[np.ndarray, np.ndarray] | None:
    """Origin (x, y, z) and size (x, y, z) of an axis-aligned grid over the lung region."""
    blocks = np.argwhere(lungs.region)
    if len(blocks) == 0:
        return None
    step = np.array(lungs.step)
    lo = blocks.min(axis=0) * step
    hi = (blocks.max(axis=0) + 1) * step - 1
    corners = np.array(
        [[a, b, c] for a in (lo[2], hi[2]) for b in (lo[1], hi[1]) for c in (lo[0], hi[0])]
    )
    mm = geometry.index_to_mm(corners)
    start = mm.min(axis=0) - pad_mm
    stop = mm.max(axis=0) + pad_mm
    size = np.ceil((stop - start) / spacing_mm).astype(int) + 1
    return start, size


def _resample(
    image: sitk.Image, origin, size, spacing: float, interp, default: float
) -> np.ndarray:
    f = sitk.ResampleImageFilter()
    f.SetOutputOrigin(tuple(float(v) for v in origin))
    f.SetSize([int(v) for v in size])
    f.SetOutputSpacing([spacing] * 3)
    f.SetOutputDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
    f.SetInterpolator(interp)
    f.SetDefaultPixelValue(default)
    f.SetOutputPixelType(sitk.sitkFloat32 if interp != sitk.sitkNearestNeighbor else sitk.sitkUInt8)
    return sitk.GetArrayFromImage(f.Execute(image))


#: The 26 neighbours of a voxel, as (z, y, x) offsets.
NEIGHBOURS = np.array(
    [
        (a, b, c)
        for a in (-1, 0, 1)
        for b in (-1, 0, 1)
        for c in (-1, 0, 1)
        if (a, b, c) != (0, 0, 0)
    ]
)


def _local_maxima(response: np.ndarray, mask: np.ndarray, min_response: float) -> np.ndarray:
    """(z, y, x) of the voxels of ``mask`` at ``min_response`` or above that no neighbour
    of their 3x3x3 block exceeds (the edge repeated beyond the array: ``maximum_filter``'s
    ``nearest`` mode); only the voxels above ``min_response`` are compared."""
    zyx = np.argwhere((response >= min_response) & mask)
    value = response[tuple(zyx.T)]
    top = np.array(response.shape) - 1
    keep = np.ones(len(zyx), dtype=bool)
    for offset in NEIGHBOURS:
        near = np.clip(zyx + offset, 0, top)
        keep &= value >= response[near[:, 0], near[:, 1], near[:, 2]]
    return zyx[keep]


def _blobness(blurred: np.ndarray, zyx: np.ndarray) -> np.ndarray:
    """λ_max / λ_min of the Hessian of ``blurred`` at each (z, y, x) point, in [0, 1] where
    all three curvatures are negative (a bright blob: 1 for a sphere, ~0 for a tube or a
    sheet), 0 elsewhere."""
    if len(zyx) == 0:
        return np.zeros(0)
    hi = np.array(blurred.shape) - 2
    p = np.clip(zyx, 1, hi)

    def at(dz, dy, dx):
        return blurred[p[:, 0] + dz, p[:, 1] + dy, p[:, 2] + dx].astype(np.float64)

    c = at(0, 0, 0)
    h = np.empty((len(p), 3, 3))
    unit = [(1, 0, 0), (0, 1, 0), (0, 0, 1)]
    for a in range(3):
        ua = unit[a]
        h[:, a, a] = at(*ua) + at(*(-np.array(ua))) - 2 * c
        for b in range(a + 1, 3):
            ub = unit[b]
            s = np.add(ua, ub)
            d = np.subtract(ua, ub)
            h[:, a, b] = h[:, b, a] = (at(*s) + at(*(-s)) - at(*d) - at(*(-d))) / 4
    lam = np.linalg.eigvalsh(h)  # ascending: lam[:, 2] is the weakest curvature
    ratio = np.where(lam[:, 2] < 0, lam[:, 2] / np.minimum(lam[:, 0], -1e-9), 0.0)
    return np.clip(ratio, 0.0, 1.0)


def generate_candidates(
    image: sitk.Image,
    lungs: LungMasks,
    geometry: VolumeGeometry,
    config: CandidatesConfig | None = None,
) -> pd.DataFrame:
    """Blob candidates of one scan (see module docstring).

    Args:
        image: the HU volume with its geometry (``VolumeGeometry.to_sitk``).
        lungs: its lung masks (``lung_mask``).
        geometry: its geometry.
        config: the minimum response and the candidates per scan (the defaults: the schema's).

    Returns:
        One row per candidate, strongest first: ``coordX, coordY, coordZ`` (patient mm),
        ``response`` (HU), ``sigma_mm``, ``diameter_mm`` (2√3 σ, the blob's size),
        ``blobness`` and ``score`` (response × blobness).
        Empty when no lung is found.
    """
    config = config or CandidatesConfig()
    columns = CANDIDATE_COLUMNS
    sigmas = np.asarray(SIGMAS_MM, dtype=float)
    pad = 3.0 * sigmas[-1]
    grid = _iso_grid(lungs, geometry, GRID_MM, pad)
    if grid is None:
        return pd.DataFrame(columns=columns)
    origin, size = grid
    sp = GRID_MM
    hu = _resample(image, origin, size, sp, sitk.sitkLinear, CLIP_HU[0])
    region = _resample(
        _region_image(lungs, geometry), origin, size, sp, sitk.sitkNearestNeighbor, 0
    )
    region = region.astype(bool)
    work = np.where(region, np.clip(hu, *CLIP_HU), OUTSIDE_FILL_HU).astype(np.float32)
    del hu

    found = []  # (z, y, x) on the fine grid, sigma, response
    level_spacing, level_mask = sp, region
    blurred = ndimage.gaussian_filter(work, sigmas[0] / sp, truncate=3.0)
    current = sigmas[0]
    for i in range(1, len(sigmas)):
        if sigmas[i] >= COARSE_FROM_MM and level_spacing == sp:
            # Blur to the coarse octave's anti-alias level is already done: subsample.
            blurred = blurred[::2, ::2, ::2].copy()
            level_spacing = 2 * sp
            level_mask = region[::2, ::2, ::2]
        inc = np.sqrt(sigmas[i] ** 2 - current**2) / level_spacing
        nxt = ndimage.gaussian_filter(blurred, inc, truncate=3.0)
        current = sigmas[i]
        dog = blurred - nxt
        scale = level_spacing / sp
        peaks = _local_maxima(dog, level_mask, config.min_response)
        shape = _blobness(blurred, peaks)
        response = dog[tuple(peaks.T)].astype(float)
        found.append(
            np.column_stack([peaks * scale, np.full(len(peaks), sigmas[i - 1]), response, shape])
        )
        blurred = nxt
    found_arr = np.concatenate(found).astype(float)
    if len(found_arr) == 0:
        return pd.DataFrame(columns=columns)
    # Rank by blob score: response × blobness (a vessel's bend or crossing responds like a
    # small nodule but is elongated; a nodule is round).
    found_arr = found_arr[np.argsort(-found_arr[:, 4] * found_arr[:, 5], kind="stable")]
    # Scale-aware merge: a weaker peak inside a stronger blob's radius is the same blob.
    points = found_arr[:, :3] * sp
    tree = cKDTree(points)
    keep = np.ones(len(points), dtype=bool)
    kept = 0
    for i in range(len(points)):
        if not keep[i]:
            continue
        kept += 1
        if kept == config.max_candidates:  # the points after the last one kept: unread
            keep[i + 1 :] = False
            break
        radius = max(RADIUS_PER_SIGMA * found_arr[i, 3], 2.0)
        for j in tree.query_ball_point(points[i], radius):
            if j > i:
                keep[j] = False
    found_arr = found_arr[keep][: config.max_candidates]
    score = found_arr[:, 4] * found_arr[:, 5]
    xyz_mm = origin + found_arr[:, [2, 1, 0]] * sp
    return pd.DataFrame(
        {
            "coordX": xyz_mm[:, 0],
            "coordY": xyz_mm[:, 1],
            "coordZ": xyz_mm[:, 2],
            "response": found_arr[:, 4],
            "sigma_mm": found_arr[:, 3],
            "diameter_mm": 2 * RADIUS_PER_SIGMA * found_arr[:, 3],
            "blobness": found_arr[:, 5],
            "score": score,
        },
        columns=columns,
    )
