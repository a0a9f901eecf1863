"""A synthetic thorax drawn slice by slice on a real LIDC scan's pixel grid.

The anatomy (body wall, fat, two lungs, mediastinum with heart, aorta and trachea, spine,
ribs, branching pulmonary vessels, CT noise) is parametric and seeded per scan; it is
scaled to the scan's field of view, as a scanner's reconstruction FOV is set to the
patient. Lungs are widened around every annotated nodule so that each real nodule lies in
aerated lung, and the nodules themselves are drawn from the readers' real contours with an
appearance set by their real ratings.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.ndimage import binary_erosion, gaussian_filter

from lungcad.annotations.nodules import Nodule

LUNG_HU = -860.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
BLOOD_HU = 45.0
CONTRAST_BLOOD_HU = 160.0
CORTICAL_BONE_HU = 850.0
CANCELLOUS_BONE_HU = 250.0
NOISE_HU = 18.0


@dataclass(frozen=True)
class _Segment:
    points_mm: np.ndarray  # (P, 3) samples along the vessel, 1 mm apart
    radius_mm: float


def _vessel_tree(
    rng: np.random.Generator,
    root: np.ndarray,
    direction: np.ndarray,
    length: float,
    radius: float,
    depth: int,
) -> list[_Segment]:
    direction = direction / np.linalg.norm(direction)
    end = root + direction * length
    n = max(2, int(length))
    seg = _Segment(np.linspace(root, end, n), radius)
    if depth == 0 or radius < 0.7:
        return [seg]
    out = [seg]
    for _ in range(2):
        turn = rng.normal(0, 0.55, 3)
        child = direction + turn - direction * (turn @ direction)
        out += _vessel_tree(
            rng,
            end,
            child,
            length * rng.uniform(0.65, 0.85),
            radius * rng.uniform(0.68, 0.8),
            depth - 1,
        )
    return out


class ThoraxPhantom:
    """Draws axial slices of a synthetic thorax on one scan's grid.

    Args:
        shape_rc: (rows, columns) of each slice.
        pixel_spacing_mm: in-plane pixel size.
        z_center_mm: centre of the slab that will be drawn (anchors the vessel trees).
        nodules: every clustered nodule of the scan (all reader counts), on the DB grid.
        z_grid_mm: the scan's slice z positions (the nodules' mask grid).
        contrast: whether the scan used IV contrast (brighter blood).
        seed: seeds the anatomy and the noise.

    Example:
        >>> phantom = ThoraxPhantom((512, 512), 0.7, -110.0, nodules, z_grid, True, seed=0)
        >>> hu = phantom.slice_hu(k=40)  # float32 (512, 512) HU of slice 40 of z_grid
    """

    def __init__(
        self,
        shape_rc: tuple[int, int],
        pixel_spacing_mm: float,
        z_center_mm: float,
        nodules: list[Nodule],
        z_grid_mm: np.ndarray,
        contrast: bool,
        seed: int,
    ) -> None:
        self.shape_rc = shape_rc
        self.ps = pixel_spacing_mm
        self.nodules = nodules
        self.z_grid = z_grid_mm
        self.contrast = contrast
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        rows, cols = shape_rc
        fov = min(rows, cols) * pixel_spacing_mm
        self.fov = fov
        # Pixel-centre coordinates in mm relative to the image centre (x right, y posterior).
        self.x = ((np.arange(cols) - (cols - 1) / 2) * pixel_spacing_mm)[None, :].astype(np.float32)
        self.y = ((np.arange(rows) - (rows - 1) / 2) * pixel_spacing_mm)[:, None].astype(np.float32)
        r = self.rng
        self.body_ab = np.array(
            [0.46 * fov * r.uniform(0.94, 1.02), 0.33 * fov * r.uniform(0.95, 1.04)]
        )
        self.body_y0 = 0.03 * fov
        self.fat_mm = r.uniform(8, 18)
        self.lung_centres = np.array([[-0.2 * fov, 0.0], [0.19 * fov, 0.005 * fov]])
        self.lung_ab = np.array([[0.17 * fov, 0.25 * fov], [0.16 * fov, 0.245 * fov]]) * r.uniform(
            0.94, 1.04
        )
        self.lung_phase = r.uniform(0, 2 * np.pi)
        self.rib_angles = np.linspace(0.15 * np.pi, 0.85 * np.pi, 8)
        self.rib_phase = r.uniform(0, 1)
        self.bubbles = self._nodule_bubbles()
        # Real patients are not centred in the FOV: widen the body along the axis a nodule
        # needs until every nodule has lung space around it, but keep the body inside the
        # reconstruction circle (lungs reaching the FOV edge would merge with outside air).
        body_max = fov / 2 - 3.0
        for bx, by, _, br in self.bubbles:
            for _ in range(40):
                a_in, b_in = self.body_ab - self.fat_mm - 17.0 - br
                rx, ry = abs(bx) / max(a_in, 1.0), abs(by - self.body_y0) / max(b_in, 1.0)
                if np.hypot(rx, ry) <= 1 or np.all(self.body_ab >= body_max):
                    break
                axis = (
                    0
                    if (rx >= ry and self.body_ab[0] < body_max) or self.body_ab[1] >= body_max
                    else 1
                )
                self.body_ab[axis] = min(body_max, self.body_ab[axis] * 1.02)
        # Grow each lung until the nodules on its side lie well inside it (up to 45%).
        self.lung_scale = np.ones(2)
        for bx, by, _, br in self.bubbles:
            side = 0 if bx < 0 else 1
            (cx, cy), (la, lb) = self.lung_centres[side], self.lung_ab[side]
            need = np.hypot((bx - cx) / la, (by - cy) / lb) + (br + 7.0) / min(la, lb)
            self.lung_scale[side] = min(1.45, max(self.lung_scale[side], need))
        self.vessels = []
        for side, dz in ((s_, d_) for s_ in (-1, 1) for d_ in (-30.0, 0.0, 30.0)):
            root = np.array([side * 0.07 * fov, -0.02 * fov, z_center_mm + dz])
            for d in (
                [side, -0.7, 0.6],
                [side, 0.6, -0.6],
                [side, 0.1, 0.1],
                [side, -0.3, -0.7],
                [side, 0.4, 0.7],
            ):
                self.vessels += _vessel_tree(
                    r, root, np.array(d, float) + r.normal(0, 0.2, 3), 0.06 * fov, 2.6, depth=6
                )
        pts = np.concatenate([s.points_mm for s in self.vessels])
        rad = np.concatenate([np.full(len(s.points_mm), s.radius_mm) for s in self.vessels])
        self.vessel_points, self.vessel_radii = pts.astype(np.float32), rad.astype(np.float32)

    def _nodule_bubbles(self) -> list[tuple[float, float, float, float]]:
        """(x_mm, y_mm, z_mm, radius_mm): lung kept aerated around each nodule (a thin rim, so
        a nodule at the pleura looks juxtapleural rather than sitting in a round pocket)."""
        rows, cols = self.shape_rc
        out = []
        for n in self.nodules:
            c, r_, z = n.centroid_crz
            x = (c - (cols - 1) / 2) * self.ps
            y = (r_ - (rows - 1) / 2) * self.ps
            out.append((x, y, z, n.diameter_mm / 2 + 3.0))
        return out

    def _ellipse(self, cx: float, cy: float, a: float, b: float) -> np.ndarray:
        return ((self.x - cx) / a) ** 2 + ((self.y - cy) / b) ** 2 <= 1.0

    def _lungs(self, z: float, inner_body: np.ndarray) -> np.ndarray:
        scale = 1.0 + 0.07 * np.sin(2 * np.pi * z / 220.0 + self.lung_phase)
        lungs = np.zeros(self.shape_rc, dtype=bool)
        for (cx, cy), (a, b), grow in zip(self.lung_centres, self.lung_ab, self.lung_scale):
            lungs |= self._ellipse(cx, cy, a * scale * grow, b * scale * grow)
        for bx, by, bz, br in self.bubbles:
            if abs(z - bz) < br:
                lungs |= self._ellipse(
                    bx, by, np.sqrt(br**2 - (z - bz) ** 2), np.sqrt(br**2 - (z - bz) ** 2)
                )
        # The mediastinum always separates the two lungs.
        return lungs & inner_body & (np.abs(self.x) > 0.035 * self.fov)

    def _draw_vessels(self, hu: np.ndarray, lungs: np.ndarray, z: float, value: float) -> None:
        dz = np.abs(self.vessel_points[:, 2] - z)
        hit = dz < self.vessel_radii
        rows, cols = self.shape_rc
        for (px, py, _), r, d in zip(self.vessel_points[hit], self.vessel_radii[hit], dz[hit]):
            rr = np.sqrt(r * r - d * d)
            c0 = (px / self.ps) + (cols - 1) / 2
            r0 = (py / self.ps) + (rows - 1) / 2
            w = int(np.ceil(rr / self.ps)) + 1
            ra, rb = max(0, int(r0) - w), min(rows, int(r0) + w + 2)
            ca, cb = max(0, int(c0) - w), min(cols, int(c0) + w + 2)
            if ra >= rb or ca >= cb:
                continue
            yy = (np.arange(ra, rb)[:, None] - r0) * self.ps
            xx = (np.arange(ca, cb)[None, :] - c0) * self.ps
            disk = (xx * xx + yy * yy <= rr * rr) & lungs[ra:rb, ca:cb]
            hu[ra:rb, ca:cb][disk] = value

    def _draw_nodules(self, hu: np.ndarray, k: int, rng: np.random.Generator) -> None:
        for n in self.nodules:
            k0, r0, c0 = n.consensus_offset
            if not 0 <= k - k0 < n.consensus_mask.shape[0]:
                continue
            plane = n.consensus_mask[k - k0]
            if not plane.any():
                continue
            ch = n.characteristics_mean
            pad = 12
            ra, ca = max(0, r0 - pad), max(0, c0 - pad)
            rb = min(self.shape_rc[0], r0 + plane.shape[0] + pad)
            cb = min(self.shape_rc[1], c0 + plane.shape[1] + pad)
            local = np.zeros((rb - ra, cb - ca), dtype=np.float32)
            local[r0 - ra : r0 - ra + plane.shape[0], c0 - ca : c0 - ca + plane.shape[1]] = plane
            # Spiculation: thin radial strands leaving the boundary; lobulation: bumps on it.
            edge = np.argwhere(local > 0)
            centre = edge.mean(axis=0)
            n_spicules = int(round(max(0.0, ch["spiculation"] - 1.5) * 2.5))
            for _ in range(n_spicules):
                p = edge[rng.integers(len(edge))].astype(float)
                v = p - centre
                v = v / (np.linalg.norm(v) + 1e-6)
                for t in np.arange(0, rng.uniform(3, 9) / self.ps, 0.5):
                    q = np.round(p + v * t).astype(int)
                    if 0 <= q[0] < local.shape[0] and 0 <= q[1] < local.shape[1]:
                        local[q[0], q[1]] = max(local[q[0], q[1]], 0.8)
            for _ in range(int(round(max(0.0, ch["lobulation"] - 1.5) * 2))):
                p = edge[rng.integers(len(edge))]
                rad = rng.uniform(1.0, 2.5) / self.ps
                yy, xx = np.ogrid[: local.shape[0], : local.shape[1]]
                local[(yy - p[0]) ** 2 + (xx - p[1]) ** 2 <= rad * rad] = 1.0
            # Margin 1 (poorly defined) .. 5 (sharp) sets how soft the edge is.
            sigma_mm = 0.25 + (5.0 - ch["margin"]) * 0.45
            alpha = np.clip(gaussian_filter(local, sigma_mm / self.ps), 0, 1)
            # Texture 1 (ground glass) .. 5 (solid) sets the density.
            solid_hu = -720.0 + (ch["texture"] - 1.0) / 4.0 * 760.0
            inside = solid_hu + gaussian_filter(rng.normal(0, 60, local.shape), 1.0).astype(
                np.float32
            )
            if ch["calcification"] < 5.5:  # any reader but "absent" (6): a dense core
                core = binary_erosion(local > 0.5, iterations=2)
                inside = np.where(
                    gaussian_filter(core.astype(np.float32), 0.8) > 0.4, 600.0, inside
                )
            region = hu[ra:rb, ca:cb]
            region[:] = region * (1 - alpha) + inside * alpha

    def slice_hu(self, k: int) -> np.ndarray:
        """HU of slice ``k`` of ``z_grid_mm`` (float32, noise included)."""
        z = float(self.z_grid[k])
        rng = np.random.default_rng([self.seed, k])  # per-slice noise, independent of order
        a, b = self.body_ab
        hu = np.full(self.shape_rc, -1000.0, dtype=np.float32)
        body = self._ellipse(0, self.body_y0, a, b)
        inner = self._ellipse(0, self.body_y0, a - self.fat_mm, b - self.fat_mm)
        hu[body] = FAT_HU
        hu[inner] = SOFT_TISSUE_HU
        blood = CONTRAST_BLOOD_HU if self.contrast else BLOOD_HU
        fov = self.fov
        hu[self._ellipse(0.02 * fov, -0.12 * fov, 0.08 * fov, 0.07 * fov)] = blood  # heart
        hu[self._ellipse(0.05 * fov, 0.09 * fov, 0.03 * fov, 0.03 * fov)] = blood  # aorta
        lung_space = self._ellipse(0, self.body_y0, a - self.fat_mm - 10, b - self.fat_mm - 10)
        lungs = self._lungs(z, lung_space)
        gradient = 60.0 * (self.y / (0.3 * fov))  # dependent (posterior) lung is denser
        parenchyma = LUNG_HU + gradient + gaussian_filter(rng.normal(0, 50, self.shape_rc), 2.0)
        hu = np.where(lungs, parenchyma.astype(np.float32), hu)
        hu[self._ellipse(0, -0.02 * fov, 0.025 * fov, 0.025 * fov)] = -1000.0  # trachea
        self._draw_vessels(hu, lungs, z, blood)
        # Spine: vertebral body with cortex, canal behind it.
        sy = self.body_y0 + b - 0.11 * fov
        hu[self._ellipse(0, sy, 0.05 * fov, 0.045 * fov)] = CORTICAL_BONE_HU
        hu[self._ellipse(0, sy, 0.04 * fov, 0.035 * fov)] = CANCELLOUS_BONE_HU
        hu[self._ellipse(0, sy + 0.07 * fov, 0.018 * fov, 0.018 * fov)] = SOFT_TISSUE_HU - 20
        # Ribs: bone cross-sections along the chest wall that appear and move with z.
        for side in (-1, 1):
            for i, theta in enumerate(self.rib_angles):
                if np.cos(2 * np.pi * (z / 28.0 + i / 8.0 + self.rib_phase)) < -0.2:
                    continue
                t = theta + 0.004 * z
                cx = side * np.cos(np.pi / 2 - t) * (a - self.fat_mm - 6) * 0.98
                cy = self.body_y0 - np.cos(t) * (b - self.fat_mm - 6) * 0.98
                hu[self._ellipse(cx, cy, 5.5, 4.0)] = CORTICAL_BONE_HU
                hu[self._ellipse(cx, cy, 3.5, 2.2)] = CANCELLOUS_BONE_HU + 100
        self._draw_nodules(hu, k, rng)
        hu = gaussian_filter(hu, 0.6 / self.ps * 0.7)  # scanner point spread
        noise = gaussian_filter(rng.normal(0, 1, self.shape_rc).astype(np.float32), 0.8)
        hu += noise * (NOISE_HU / noise.std())
        return hu
