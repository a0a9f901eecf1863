"""A synthetic thorax drawn on a real LIDC scan's pixel grid, one slab at a time.

The anatomy (body wall, fat, two lungs, mediastinum with heart, aorta and trachea, spine,
ribs) is parametric and seeded per scan; it is scaled to the scan's field of view, as a
scanner's reconstruction FOV is set to the patient. Inside the lungs: pulmonary artery and
vein trees and the bronchi beside the arteries, grown to fill each lung
(``phantom.trees``) and rendered with partial volume and the scan's slice profile
(``phantom.render``); fissures; parenchyma whose density has a gravity gradient, lobular
and fine texture; a background lung state; then the scanner's kernel (blur, edge
enhancement), calibration, motion and noise with a real scan's power spectrum reshaped by the
kernel (``phantom.scanner``), all set by the scan's ``Acquisition``
(``phantom.acquisition``). Lungs are widened around every annotated nodule so that each real
nodule lies in aerated lung, and the nodules themselves are drawn from the readers' real
contours with an appearance set by their real ratings.
"""

from __future__ import annotations

import numpy as np
from scipy.ndimage import (
    binary_erosion,
    distance_transform_edt,
    gaussian_filter,
    uniform_filter1d,
    zoom,
)

from lungcad.core.annotations.nodules import Nodule
from lungcad.phantom.acquisition import Acquisition
from lungcad.phantom.render import SlabGrid, render_sheet, render_tubes
from lungcad.phantom.scanner import nps_noise
from lungcad.phantom.trees import airway_beside, scatter, vessel_tree

LUNG_HU = -905.0
FAT_HU = -100.0
SOFT_TISSUE_HU = 40.0
BLOOD_HU = 45.0
CORTICAL_BONE_HU = 850.0
CANCELLOUS_BONE_HU = 250.0
AIR_HU = -1000.0
#: Parenchyma: gravity gradient over the lung's height (posterior denser), lobular
#: (5 mm) and fine (sub-millimetre, skewed: unresolved vessels and septa) texture.
GRAVITY_HU = 45.0
LOBULAR_HU = 20.0
FINE_TEXTURE_HU = 16.0
#: Vessel trees: attractor spacing (sets how finely a tree fills the lung) and leaf radius.
ATTRACTOR_SPACING_MM = 10.0
LEAF_RADIUS_MM = 0.45
#: Attractors pull tree nodes this many attractor spacings away (more: straighter trees).
INFLUENCE_SPACINGS = 1.2
#: Terminal twigs below the trees' resolution: one per TWIG_SPACING_MM³ of lung, each a
#: short straight tube of TWIG_RADIUS_MM and TWIG_LENGTH_MM (ranges), randomly oriented.
TWIG_SPACING_MM = 4.5
TWIG_RADIUS_MM = (0.2, 0.35)
TWIG_LENGTH_MM = (3.0, 9.0)
#: Trees grow this far beyond the slab so vessels enter and leave it as in a real scan...
TREE_MARGIN_MM = 12.0
#: ...and, among attractors this much sparser, far enough to stand for the lung above and
#: below the slab, whose blood the vessels crossing the slab carry (Murray weights).
OUTER_MARGIN_MM = 60.0
OUTER_SPACING_FACTOR = 2.0
FISSURE_MM = 0.15
#: Noise variance relative to the real slab's soft-tissue NPS (per scan also x lognormal
#: dose, sd 0.15). Below 1 because that NPS, measured on 32-pixel ROIs of a patient, still
#: holds some anatomy, and because the lung's fine texture (twigs above) carries most of the
#: real lung's high-pass signal: with the full amplitude the phantom's lung is speckled where
#: the real one is streaky (more local extrema in its local binary patterns).
NOISE_VARIANCE_SCALE = 0.75
#: Background states drawn into the parenchyma (vessels cross them); the others replace
#: the lung, vessels included (collapsed lung, fluid).
PARENCHYMAL = ("emphysema", "ground_glass", "fibrosis")
#: A dependent background state stays this far beyond a nodule's bubble.
BUBBLE_CLEARANCE_MM = 6.0


def _linear_weights(n_out: int, step: float, n_in: int) -> np.ndarray:
    """(n_out, n_in) matrix of linear interpolation at positions 0, step, 2·step, ..."""
    pos = np.arange(n_out) * step
    lo = np.minimum(pos.astype(int), n_in - 2)
    frac = (pos - lo).astype(np.float32)
    weights = np.zeros((n_out, n_in), dtype=np.float32)
    weights[np.arange(n_out), lo] = 1 - frac
    weights[np.arange(n_out), lo + 1] = frac
    return weights


class ThoraxPhantom:
    """Draws a synthetic thorax on one scan's grid, a slab of slices at a time.

    Args:
        shape_rc: (rows, columns) of each slice.
        pixel_spacing_mm: in-plane pixel size.
        slice_thickness_mm: reconstructed slice thickness (slice profile and noise level).
        nodules: every clustered nodule of the scan (all reader counts), on the DB grid.
        z_grid_mm: the scan's slice z positions (the nodules' mask grid).
        contrast: whether the scan used IV contrast (brighter blood).
        seed: seeds the anatomy and the noise.
        acquisition: kernel, dose, calibration, motion, contrast and background lung state
            (``phantom.acquisition``; None: the default look).

    Example:
        >>> phantom = ThoraxPhantom((512, 512), 0.7, 2.5, nodules, z_grid, True, seed=0)
        >>> hu = phantom.slab_hu(np.arange(30, 60))  # float32 (30, 512, 512) HU
    """

    def __init__(
        self,
        shape_rc: tuple[int, int],
        pixel_spacing_mm: float,
        slice_thickness_mm: float,
        nodules: list[Nodule],
        z_grid_mm: np.ndarray,
        contrast: bool,
        seed: int,
        acquisition: Acquisition | None = None,
    ) -> None:
        self.acq = acquisition or Acquisition()
        if self.acq.contrast is not None:
            contrast = self.acq.contrast
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
        self.thickness_mm = slice_thickness_mm
        self.dose_factor = NOISE_VARIANCE_SCALE * float(np.exp(r.normal(0.0, 0.15)))
        self.dose_factor *= self.acq.dose_factor
        self.blood_hu = self.acq.blood_hu if contrast else BLOOD_HU

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

    def _fill(self, hu: np.ndarray, cx: float, cy: float, a: float, b: float, value: float) -> None:
        """Set ``value`` inside an ellipse, touching only its bounding box."""
        rows, cols = self.shape_rc
        c0, r0 = cx / self.ps + (cols - 1) / 2, cy / self.ps + (rows - 1) / 2
        ca, cb = max(0, int(c0 - a / self.ps) - 1), min(cols, int(c0 + a / self.ps) + 2)
        ra, rb = max(0, int(r0 - b / self.ps) - 1), min(rows, int(r0 + b / self.ps) + 2)
        if ca >= cb or ra >= rb:
            return
        x, y = self.x[:, ca:cb], self.y[ra:rb]
        hu[ra:rb, ca:cb][((x - cx) / a) ** 2 + ((y - cy) / b) ** 2 <= 1.0] = value

    def lung_contains(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Whether points (mm, broadcasting arrays) lie in the lungs."""
        scale = 1.0 + 0.07 * np.sin(2 * np.pi * z / 220.0 + self.lung_phase)
        inside = np.zeros(np.broadcast(x, y, z).shape, dtype=bool)
        for (cx, cy), (a, b), grow in zip(self.lung_centres, self.lung_ab, self.lung_scale):
            inside |= ((x - cx) / (a * scale * grow)) ** 2 + (
                (y - cy) / (b * scale * grow)
            ) ** 2 <= 1
        for bx, by, bz, br in self.bubbles:
            inside |= (x - bx) ** 2 + (y - by) ** 2 + (z - bz) ** 2 <= br * br
        a, b = self.body_ab - self.fat_mm - 10
        inside &= (x / a) ** 2 + ((y - self.body_y0) / b) ** 2 <= 1
        # The mediastinum always separates the two lungs.
        return inside & (np.abs(x) > 0.035 * self.fov)

    def _trees(self, z_lo: float, z_hi: float) -> dict[str, tuple]:
        """Artery, vein and airway tubes (start, end, radius) of both lungs around [z_lo, z_hi].

        Attractors fill the slab (plus ``TREE_MARGIN_MM``) at ``ATTRACTOR_SPACING_MM`` and the
        lung up to ``OUTER_MARGIN_MM`` beyond it more sparsely; a leaf out there stands for
        ``OUTER_SPACING_FACTOR``³ leaves, so vessels that cross the slab towards the rest of
        the lung are as thick as the lung they supply.
        """
        rng = np.random.default_rng([self.seed, 1])
        fov = self.fov
        near = (z_lo - TREE_MARGIN_MM, z_hi + TREE_MARGIN_MM)
        far = (z_lo - OUTER_MARGIN_MM, z_hi + OUTER_MARGIN_MM)

        def leaf_weight(p: np.ndarray) -> np.ndarray:
            outside = (p[:, 2] < near[0]) | (p[:, 2] > near[1])
            return np.where(outside, OUTER_SPACING_FACTOR**3, 1.0)

        tubes: dict[str, list] = {"vessel": [], "wall": [], "lumen": []}
        z_mid = (z_lo + z_hi) / 2
        for side in (-1, 1):

            def half(p: np.ndarray, s: int = side) -> np.ndarray:
                return self.lung_contains(p[:, 0], p[:, 1], p[:, 2]) & (np.sign(p[:, 0]) == s)

            for kind, dy in (("artery", -0.03), ("vein", 0.05)):
                # Roots at the hilum and where vessels come in from the rest of the lung.
                roots = []
                for z in (far[0], z_mid + rng.uniform(-10, 10), far[1]):
                    x = side * 0.035 * fov
                    for _ in range(200):
                        x += side * 1.0
                        if half(np.array([[x, dy * fov, z]]))[0]:
                            break
                    roots.append([x + side * 2.0, dy * fov, z])
                attractors = []
                for (za, zb), spacing in (
                    (near, ATTRACTOR_SPACING_MM),
                    ((far[0], near[0]), ATTRACTOR_SPACING_MM * OUTER_SPACING_FACTOR),
                    ((near[1], far[1]), ATTRACTOR_SPACING_MM * OUTER_SPACING_FACTOR),
                ):
                    lo = np.array([-fov / 2, -fov / 2, za])
                    hi = np.array([fov / 2, fov / 2, zb])
                    attractors.append(scatter(rng, half, lo, hi, spacing))
                tree = vessel_tree(
                    rng,
                    np.array(roots),
                    np.concatenate(attractors),
                    LEAF_RADIUS_MM,
                    influence_mm=INFLUENCE_SPACINGS * ATTRACTOR_SPACING_MM,
                    leaf_weight=leaf_weight,
                )
                tubes["vessel"].append(tree.segments())
                if kind == "artery":
                    lumen, outer = airway_beside(rng, tree)
                    start, end, lumen_r = lumen.segments()
                    child = np.flatnonzero(lumen.parent >= 0)
                    tubes["wall"].append((start, end, outer[child]))
                    tubes["lumen"].append((start, end, lumen_r))
        tubes["vessel"].append(self._twigs(rng, near))
        return {
            k: tuple(np.concatenate([t[i] for t in v]) for i in range(3)) for k, v in tubes.items()
        }

    def _twigs(self, rng: np.random.Generator, z_range: tuple[float, float]) -> tuple:
        """Randomly placed and oriented sub-millimetre vessel pieces filling the lungs."""
        fov = self.fov
        lo = np.array([-fov / 2, -fov / 2, z_range[0]])
        hi = np.array([fov / 2, fov / 2, z_range[1]])

        def inside(p: np.ndarray) -> np.ndarray:
            return self.lung_contains(p[:, 0], p[:, 1], p[:, 2])

        start = scatter(rng, inside, lo, hi, TWIG_SPACING_MM)
        direction = rng.normal(size=(len(start), 3))
        direction /= np.linalg.norm(direction, axis=1, keepdims=True)
        length = rng.uniform(*TWIG_LENGTH_MM, size=(len(start), 1))
        return start, start + direction * length, rng.uniform(*TWIG_RADIUS_MM, size=len(start))

    def _fissures(self, grid: SlabGrid) -> np.ndarray:
        """Occupancy of the oblique fissures of both lungs and the right lung's horizontal one.

        An oblique fissure crosses an axial slice as a line from the hilum's front towards the
        back of the chest wall; the horizontal one lies almost in the slice plane, so a thick
        slice shows it as a faint band.
        """
        rng = np.random.default_rng([self.seed, 2])
        z0 = float(np.mean(grid.z_mm))
        out = np.zeros(grid.shape, dtype=np.float32)
        for side, (cx, cy) in zip((-1, 1), self.lung_centres):
            heading = np.deg2rad(rng.uniform(35, 55))  # in-plane course, from the x axis
            tilt = np.deg2rad(rng.uniform(30, 50))  # the plane's slope out of the slice
            normal = np.array(
                [
                    -side * np.sin(heading) * np.cos(tilt),
                    np.cos(heading) * np.cos(tilt),
                    np.sin(tilt),
                ]
            )
            point = np.array([cx, cy + rng.uniform(-10, 10), z0 + rng.uniform(-20, 20)])
            out = np.maximum(
                out, render_sheet(grid, point, normal, rng.uniform(-4e-3, 4e-3), FISSURE_MM)
            )
        # Patient's right lung is on the image left (x < 0): its horizontal fissure.
        cx, cy = self.lung_centres[0]
        point = np.array([cx, cy - 20, z0 + rng.uniform(0, 40)])
        normal = np.array([rng.normal(0, 0.1), rng.normal(0.25, 0.05), 1.0])
        return np.maximum(out, render_sheet(grid, point, normal, 2e-3, FISSURE_MM / 2))

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

    def _base_slice(self) -> np.ndarray:
        """Body wall, fat, heart and aorta: the same on every slice."""
        a, b = self.body_ab
        hu = np.full(self.shape_rc, AIR_HU, dtype=np.float32)
        self._fill(hu, 0, self.body_y0, a, b, FAT_HU)
        self._fill(hu, 0, self.body_y0, a - self.fat_mm, b - self.fat_mm, SOFT_TISSUE_HU)
        blood = self.blood_hu
        fov = self.fov
        self._fill(hu, 0.02 * fov, -0.12 * fov, 0.08 * fov, 0.07 * fov, blood)  # heart
        self._fill(hu, 0.05 * fov, 0.09 * fov, 0.03 * fov, 0.03 * fov, blood)  # aorta
        return hu

    def _bones_and_trachea(self, hu: np.ndarray, z: float) -> None:
        a, b = self.body_ab
        fov = self.fov
        self._fill(hu, 0, -0.02 * fov, 0.025 * fov, 0.025 * fov, AIR_HU)  # trachea
        # Spine: vertebral body with cortex, canal behind it.
        sy = self.body_y0 + b - 0.11 * fov
        self._fill(hu, 0, sy, 0.05 * fov, 0.045 * fov, CORTICAL_BONE_HU)
        self._fill(hu, 0, sy, 0.04 * fov, 0.035 * fov, CANCELLOUS_BONE_HU)
        self._fill(hu, 0, sy + 0.07 * fov, 0.018 * fov, 0.018 * fov, SOFT_TISSUE_HU - 20)
        # Ribs: bone cross-sections along the chest wall that appear and move with z.
        for side in (-1, 1):
            for i, theta in enumerate(self.rib_angles):
                if np.cos(2 * np.pi * (z / 28.0 + i / 8.0 + self.rib_phase)) < -0.2:
                    continue
                t = theta + 0.004 * z
                cx = side * np.cos(np.pi / 2 - t) * (a - self.fat_mm - 6) * 0.98
                cy = self.body_y0 - np.cos(t) * (b - self.fat_mm - 6) * 0.98
                self._fill(hu, cx, cy, 5.5, 4.0, CORTICAL_BONE_HU)
                self._fill(hu, cx, cy, 3.5, 2.2, CANCELLOUS_BONE_HU + 100)

    def _parenchyma(self, grid: SlabGrid, rng: np.random.Generator) -> np.ndarray:
        """Lung density on ``grid``: gravity gradient, lobular and fine texture (float32 HU)."""
        fov = self.fov
        spacing = np.diff(grid.z_mm).mean() if len(grid.z_mm) > 1 else grid.thickness_mm
        vox = np.array([spacing, grid.pixel_mm, grid.pixel_mm])
        y = grid.y_mm.astype(np.float32)[None, :, None]
        hu = LUNG_HU + GRAVITY_HU * (y - self.body_y0) / (0.5 * fov)
        # Lobular texture: smooth at 5 mm, so drawn on a 2.5 mm grid and interpolated.
        coarse_shape = tuple(int(np.ceil(n * v / 2.5)) + 2 for n, v in zip(grid.shape, vox))
        lobular = gaussian_filter(rng.standard_normal(coarse_shape, dtype=np.float32), 2.0)
        lobular *= LOBULAR_HU / max(float(lobular.std()), 1e-6)
        for axis, (n, v) in enumerate(zip(grid.shape, vox)):
            lobular = np.moveaxis(
                np.tensordot(
                    lobular, _linear_weights(n, v / 2.5, lobular.shape[axis]), ([axis], [1])
                ),
                -1,
                axis,
            )
        # Fine texture, skewed towards density: unresolved small vessels and septa.
        sigma = np.maximum(np.array([grid.thickness_mm / 2.0, 0.7, 0.7]) / vox, 0.3)
        fine = gaussian_filter(rng.standard_normal(grid.shape, dtype=np.float32), sigma)
        fine = np.exp(fine * np.float32(1.0 / max(float(fine.std()), 1e-6)))
        fine = (fine - fine.mean()) * (FINE_TEXTURE_HU / max(float(fine.std()), 1e-6))
        return (hu + lobular + fine).astype(np.float32)

    def slab_hu(self, ks: np.ndarray) -> np.ndarray:
        """HU of the slices ``ks`` (ascending indices into ``z_grid_mm``), float32, noisy."""
        ks = np.asarray(ks)
        z = self.z_grid[ks].astype(np.float64)
        rows, cols = self.shape_rc
        hu = np.empty((len(ks), rows, cols), dtype=np.float32)
        hu[:] = self._base_slice()
        lungs = np.empty(hu.shape, dtype=bool)
        for i, zi in enumerate(z):
            lungs[i] = self.lung_contains(self.x, self.y, np.float32(zi))
        # Everything inside the lungs is drawn on the lungs' bounding box only.
        any_lung = lungs.any(axis=0)
        r_idx, c_idx = np.flatnonzero(any_lung.any(axis=1)), np.flatnonzero(any_lung.any(axis=0))
        if len(r_idx):
            box = (slice(None), slice(r_idx[0], r_idx[-1] + 1), slice(c_idx[0], c_idx[-1] + 1))
            grid = SlabGrid(self.x[0, box[2]], self.y[box[1], 0], z, self.thickness_mm, self.ps)
            rng = np.random.default_rng([self.seed, 3])
            lung = self._parenchyma(grid, rng)
            trees = self._trees(float(z.min()), float(z.max()))
            vessel = render_tubes(grid, *trees["vessel"])
            wall = render_tubes(grid, *trees["wall"])
            lumen = render_tubes(grid, *trees["lumen"])
            fissure = self._fissures(grid)
            inside = lungs[box]
            background = self._background(grid, inside) if self.acq.extent_drawn else None
            if background is not None and self.acq.background in PARENCHYMAL:
                lung += (background[1] - lung) * background[0]
            lung += (SOFT_TISSUE_HU - lung) * np.maximum(fissure, wall)
            lung += (self.blood_hu - lung) * vessel
            lung += (AIR_HU - lung) * lumen
            if background is not None and self.acq.background not in PARENCHYMAL:
                lung += (background[1] - lung) * background[0]
            hu[box] = np.where(inside, lung, hu[box])
        noise_rng = np.random.default_rng([self.seed, 4, int(ks[0])])
        acq = self.acq
        z_top = float(self.z_grid.min())
        for i, k in enumerate(ks):
            self._bones_and_trachea(hu[i], float(z[i]))
            self._draw_nodules(hu[i], int(k), np.random.default_rng([self.seed, int(k)]))
            hu[i] = gaussian_filter(hu[i], acq.psf_sigma_mm / self.ps)  # scanner point spread
            if acq.edge_gain:  # a sharp kernel's overshoot at edges
                hu[i] += acq.edge_gain * (hu[i] - gaussian_filter(hu[i], 1.0 / self.ps))
            start, length = acq.motion_band_mm
            if acq.motion_mm and start <= z[i] - z_top <= start + length:
                axis = int((self.seed + int(start)) % 2)  # breathing (y) or a shift (x)
                size = max(2, int(round(acq.motion_mm / self.ps)))
                hu[i] = uniform_filter1d(hu[i], size, axis=axis)
        if acq.hu_offset:
            hu += np.float32(acq.hu_offset)
        hu += nps_noise(
            noise_rng, hu.shape, self.ps, self.thickness_mm, self.dose_factor, acq.nps_tilt
        )
        return hu

    def _smooth_field(self, grid: SlabGrid, rng: np.random.Generator, scale_mm: float):
        """A smooth random field (unit sd) on ``grid`` with structures of about ``scale_mm``."""
        spacing = np.diff(grid.z_mm).mean() if len(grid.z_mm) > 1 else grid.thickness_mm
        vox = np.array([spacing, grid.pixel_mm, grid.pixel_mm])
        coarse_mm = max(scale_mm / 4.0, 1.0)
        shape = tuple(int(np.ceil(n * v / coarse_mm)) + 2 for n, v in zip(grid.shape, vox))
        field = gaussian_filter(rng.standard_normal(shape, dtype=np.float32), scale_mm / coarse_mm)
        field /= max(float(field.std()), 1e-6)
        factors = [n / s for n, s in zip(grid.shape, shape)]
        out = zoom(field, factors, order=1, grid_mode=True, mode="nearest")
        return out[: grid.shape[0], : grid.shape[1], : grid.shape[2]].astype(np.float32)

    def _background(self, grid: SlabGrid, inside: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(weight 0..1, HU) of the background lung state on ``grid``.

        Parenchymal states (emphysema, ground glass, fibrosis) may surround a nodule, as in a
        patient. A dependent state (atelectasis, effusion) would hide one, so its extent is
        shrunk until it stays ``BUBBLE_CLEARANCE_MM`` clear of every nodule (not drawn if it
        cannot): a nodule is never left in an aerated pocket of a collapsed or fluid band.
        """
        acq = self.acq
        rng = np.random.default_rng([self.seed, 5])
        share = acq.background_extent
        if acq.background in ("atelectasis", "effusion"):
            wavy = 0.1 * self._smooth_field(grid, rng, 20.0)
            near = np.zeros(grid.shape, dtype=bool)
            for bx, by, bz, br in self.bubbles:
                near |= (
                    (grid.x_mm[None, None, :] - bx) ** 2
                    + (grid.y_mm[None, :, None] - by) ** 2
                    + (grid.z_mm[:, None, None] - bz) ** 2
                ) <= (br + BUBBLE_CLEARANCE_MM) ** 2
            for _ in range(6):
                weight, hu_value = self._dependent(grid, inside, share, wavy)
                if not (weight[near] > 0).any():
                    break
                share *= 0.6
            else:
                weight = np.zeros(grid.shape, dtype=np.float32)
        else:
            field = self._smooth_field(
                grid, rng, {"emphysema": 6.0, "ground_glass": 12.0, "fibrosis": 3.0}[acq.background]
            )
            threshold = float(np.quantile(field[inside], 1.0 - share)) if inside.any() else 9.0
            weight = np.clip((field - threshold) / 0.3, 0, 1)
            if acq.background == "emphysema":  # low-attenuation areas
                hu_value = np.full(grid.shape, -985.0, dtype=np.float32)
            elif acq.background == "ground_glass":  # hazy, vessels still seen through it
                weight *= 0.6
                hu_value = np.full(grid.shape, -500.0, dtype=np.float32)
            else:  # fibrosis: subpleural reticulation, lines along the field's zero set
                sampling = (grid.pixel_mm, grid.pixel_mm)
                depth = np.stack([distance_transform_edt(s, sampling=sampling) for s in inside])
                lines = np.clip(1.0 - np.abs(self._smooth_field(grid, rng, 3.0)) / 0.25, 0, 1)
                weight = lines * np.clip((20.0 - depth) / 10.0, 0, 1) * (field > threshold - 1)
                hu_value = np.full(grid.shape, -150.0, dtype=np.float32)
        return (weight * inside).astype(np.float32), hu_value

    def _dependent(
        self, grid: SlabGrid, inside: np.ndarray, share: float, wavy: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """A dependent band over ``share`` of the lung: fluid under a flat level (effusion)
        or collapsed lung in a curved band along the posterior pleura (atelectasis)."""
        y = np.broadcast_to(grid.y_mm[None, :, None], grid.shape)  # y grows posteriorly
        if self.acq.background == "effusion":
            level = float(np.quantile(y[inside], 1.0 - share)) if inside.any() else 0.0
            return (y >= level).astype(np.float32), np.full(grid.shape, 12.0, np.float32)
        bottom = np.where(inside, y, -np.inf).max(axis=1, keepdims=True)  # posterior edge
        top = np.where(inside, y, np.inf).min(axis=1, keepdims=True)
        depth = (bottom - y) / np.maximum(bottom - top, 1.0)  # 0 posterior .. 1 anterior
        weight = np.clip((share + wavy - depth) / 0.05, 0, 1).astype(np.float32)
        return weight, np.full(grid.shape, 25.0, np.float32)
