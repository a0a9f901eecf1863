"""Partial-volume rendering of tubes and sheets on a CT slab grid.

A voxel's value is the share of it that a structure fills, as a scanner measures it: in
the plane, a tube's edge ramps over one pixel (the box filter of the pixel, for a locally
straight edge); along z, the value is averaged over sub-samples weighted by the slice
sensitivity profile (a Gaussian of FWHM = slice thickness), so a thin vessel crossing a 2.5 mm slice
obliquely is as faint and as smeared as in a real scan.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: Sub-samples along z are at most this far apart.
SUBSAMPLE_MM = 0.625
#: Segments rendered together (bounds the memory of one batch to ~100 MB).
BATCH_VOXELS = 12_000_000


@dataclass(frozen=True)
class SlabGrid:
    """Voxel centres of a slab (slice, row, col) in the phantom's mm frame.

    Attributes:
        x_mm: (cols,) column centres; y_mm: (rows,) row centres; z_mm: (slices,) slice
            centres (ascending); thickness_mm: reconstructed slice thickness; pixel_mm:
            in-plane pixel size.
    """

    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    thickness_mm: float
    pixel_mm: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return len(self.z_mm), len(self.y_mm), len(self.x_mm)

    def z_offsets(self) -> tuple[np.ndarray, np.ndarray]:
        """Sub-sample offsets along z and their weights: the slice sensitivity profile.

        A Gaussian of FWHM = slice thickness (helical CT's profile is bell-shaped, not a
        box), sampled every ``SUBSAMPLE_MM`` or finer over ±1 FWHM.
        """
        n = max(1, int(np.ceil(2 * self.thickness_mm / SUBSAMPLE_MM)))
        offsets = ((np.arange(n) + 0.5) / n - 0.5) * 2 * self.thickness_mm
        weights = np.exp(-0.5 * (offsets / (self.thickness_mm / 2.355)) ** 2)
        return offsets, weights / weights.sum()


def ramp_radius_and_gain(radius_mm: np.ndarray, width_mm: float) -> tuple[np.ndarray, np.ndarray]:
    """Radius and gain of the one-pixel edge ramp that give a tube its true cross-section.

    The occupancy clip(0.5 + (r − d) / w, 0, 1) of a disc integrates to π r² + π w² / 12
    (r ≥ w / 2) or π (r + w / 2)³ / (3 w) (r < w / 2). A tube of radius ≥ w / √3 is drawn
    with r' = √(r² − w² / 12), which keeps its centre solid; a thinner one keeps r and is
    scaled down, as a vessel thinner than a pixel only partly fills it.
    """
    r = np.asarray(radius_mm, dtype=np.float64)
    w = float(width_mm)
    wide = r >= w / np.sqrt(3)
    ramp_r = np.where(wide, np.sqrt(np.maximum(r * r - w * w / 12, 0)), r)
    area = np.where(
        r >= w / 2, np.pi * r * r + np.pi * w * w / 12, np.pi * (r + w / 2) ** 3 / (3 * w)
    )
    gain = np.where(wide, 1.0, np.pi * r * r / area)
    return ramp_r, gain


def render_tubes(
    grid: SlabGrid, starts_mm: np.ndarray, ends_mm: np.ndarray, radii_mm: np.ndarray
) -> np.ndarray:
    """Occupancy (0..1, float32, grid shape) of the union of capsules (segment + radius).

    Overlapping capsules (a tree's consecutive segments, a bifurcation) take the maximum, not
    the sum, so joints are not brighter than the tube.
    """
    occupancy = np.zeros(grid.shape, dtype=np.float32)
    if len(radii_mm) == 0:
        return occupancy
    ps = grid.pixel_mm
    x0, y0 = grid.x_mm[0], grid.y_mm[0]
    offsets, weights = grid.z_offsets()
    offsets = offsets.astype(np.float32)
    half_t = float(np.abs(offsets).max())
    lo = np.minimum(starts_mm, ends_mm) - radii_mm[:, None]
    hi = np.maximum(starts_mm, ends_mm) + radii_mm[:, None]
    c_lo = np.floor((lo[:, 0] - x0) / ps).astype(int) - 1
    c_hi = np.ceil((hi[:, 0] - x0) / ps).astype(int) + 1
    r_lo = np.floor((lo[:, 1] - y0) / ps).astype(int) - 1
    r_hi = np.ceil((hi[:, 1] - y0) / ps).astype(int) + 1
    k_lo = np.searchsorted(grid.z_mm, lo[:, 2] - half_t, side="left")
    k_hi = np.searchsorted(grid.z_mm, hi[:, 2] + half_t, side="right")
    nz, ny, nx = grid.shape
    visible = (k_hi > k_lo) & (c_hi >= 0) & (c_lo < nx) & (r_hi >= 0) & (r_lo < ny)
    size_k = k_hi - k_lo
    size_in = np.maximum(c_hi - c_lo, r_hi - r_lo) + 1
    # Batch segments of one stencil size: (size_k, size_in) rounded up.
    size_in = (size_in + 3) // 4 * 4
    flat = occupancy.reshape(-1)
    keys = np.stack([size_k, size_in], axis=1)[visible]
    order = np.flatnonzero(visible)
    for sk, sin in np.unique(keys, axis=0):
        members = order[(keys[:, 0] == sk) & (keys[:, 1] == sin)]
        per_segment = sk * sin * sin * len(offsets)
        chunk = max(1, BATCH_VOXELS // per_segment)
        dk = np.arange(sk)[None, :, None, None]
        dr, dc = (d[None, None] for d in np.meshgrid(np.arange(sin), np.arange(sin), indexing="ij"))
        for i in range(0, len(members), chunk):
            m = members[i : i + chunk]
            # In-plane quantities on (segment, 1, row, col), z ones on (segment, slice, 1, 1).
            kk = k_lo[m, None, None, None] + dk
            rr = r_lo[m, None, None, None] + dr
            cc = c_lo[m, None, None, None] + dc
            valid_k = kk < nz
            valid_rc = (rr >= 0) & (rr < ny) & (cc >= 0) & (cc < nx)
            kk, rr, cc = np.minimum(kk, nz - 1), np.clip(rr, 0, ny - 1), np.clip(cc, 0, nx - 1)
            a = starts_mm[m].astype(np.float32)[:, None, None, None, :]
            ab = (ends_mm[m] - starts_mm[m]).astype(np.float32)[:, None, None, None, :]
            abx, aby, abz = ab[..., 0], ab[..., 1], ab[..., 2]
            ab2 = np.maximum((ab * ab).sum(-1), 1e-6)
            px = grid.x_mm[cc].astype(np.float32) - a[..., 0]
            py = grid.y_mm[rr].astype(np.float32) - a[..., 1]
            pz0 = grid.z_mm[kk].astype(np.float32) - a[..., 2]
            ramp_r, gain = ramp_radius_and_gain(radii_mm[m], ps)
            radius = ramp_r.astype(np.float32)
            # A voxel is no nearer the segment than its (x, y) is to the segment's projection
            # on the plane: one pixel beyond the radius there, it is empty at every z, and
            # only the others are computed (the occupancy starts at 0).
            along_xy = px * abx + py * aby
            t_xy = np.clip(along_xy / np.maximum(abx * abx + aby * aby, 1e-6), 0, 1)
            near_xy = np.hypot(px - t_xy * abx, py - t_xy * aby) <= radius[:, None, None, None] + ps
            s_, k_, r_, c_ = np.nonzero(valid_k & (near_xy & valid_rc))
            qx, qy, qxy = px[s_, 0, r_, c_], py[s_, 0, r_, c_], along_xy[s_, 0, r_, c_]
            qz0 = pz0[s_, k_, 0, 0]
            bx, by, bz = abx[s_, 0, 0, 0], aby[s_, 0, 0, 0], abz[s_, 0, 0, 0]
            b2, rad = ab2[s_, 0, 0, 0], radius[s_]
            value = np.zeros(len(s_), dtype=np.float32)
            for dz, weight in zip(offsets, weights.astype(np.float32)):
                pz = qz0 + dz
                t = np.clip((qxy + pz * bz) / b2, 0, 1)
                ex, ey, ez = qx - t * bx, qy - t * by, pz - t * bz
                d = np.sqrt(ex * ex + ey * ey + ez * ez)
                value += weight * np.clip(0.5 + (rad - d) / ps, 0, 1)
            value *= gain.astype(np.float32)[s_]
            index = (kk[s_, k_, 0, 0] * ny + rr[s_, 0, r_, c_]) * nx + cc[s_, 0, r_, c_]
            np.maximum.at(flat, index, value)
    return occupancy


def render_sheet(
    grid: SlabGrid,
    point_mm: np.ndarray,
    normal: np.ndarray,
    curvature_per_mm: float,
    thickness_mm: float,
) -> np.ndarray:
    """Occupancy of a thin curved sheet (a fissure's two pleural layers).

    The sheet is {p : n·(p − p0) = κ·|p − p0 projected on the sheet|²}, a paraboloid cap;
    across it, a Gaussian of FWHM ``thickness_mm`` (at least a pixel) whose peak is the
    share of a pixel the sheet fills. Along z the profile is averaged over the slice
    thickness in closed form: the signed distance changes by n_z·dz across the slice, and
    the mean of a Gaussian over that window is a difference of error functions.
    """
    from scipy.special import erf

    normal = np.asarray(normal, dtype=np.float64)
    normal /= np.linalg.norm(normal)
    x = (grid.x_mm - point_mm[0]).astype(np.float32)[None, None, :]
    y = (grid.y_mm - point_mm[1]).astype(np.float32)[None, :, None]
    z = (grid.z_mm - point_mm[2]).astype(np.float32)[:, None, None]
    along = x * np.float32(normal[0]) + y * np.float32(normal[1]) + z * np.float32(normal[2])
    across2 = (x * x + y * y) + z * z - along * along
    d = along - np.float32(curvature_per_mm) * across2
    sigma = max(thickness_mm, grid.pixel_mm) / 2.355
    peak = min(1.0, thickness_mm / grid.pixel_mm)
    half = abs(normal[2]) * grid.thickness_mm / 2  # half the distance swept across a slice
    band = np.abs(d) < half + 5 * sigma
    dd = d[band].astype(np.float64)
    if half < 1e-3 * sigma:
        value = np.exp(-0.5 * (dd / sigma) ** 2)
    else:
        s2 = sigma * np.sqrt(2.0)
        value = (erf((dd + half) / s2) - erf((dd - half) / s2)) * (
            sigma * np.sqrt(np.pi / 2) / (2 * half)
        )
    out = np.zeros(grid.shape, dtype=np.float32)
    out[band] = (value * peak).astype(np.float32)
    return out
