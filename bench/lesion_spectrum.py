"""Benchmark: masses and lesions against the pleura, written into held-out whole scans.

LIDC's readers outlined nothing over 30 mm, so the lesions a lung cancer CAD must also find
(masses to 9 cm, tumours grown into the chest wall or against the mediastinum) are written
here into whole-length phantom scans of LIDC patients the dataset does not hold (default
look; seeded order): in each scan, each lung receives in turn

  - ``chest-wall mass``: 30-90 mm, grown a fifth of its radius into the chest wall;
  - ``mediastinal mass``: 30-90 mm, against the mediastinum (a fifth of its radius in it);
  - ``juxtapleural 8 mm``: an 8 mm nodule touching the costal pleura, away from the mass;

(two passes per scan: chest-wall mass on one side and mediastinal on the other, then
swapped). Each lesion is a lobulated solid ball (35 HU) with one-voxel partial volume,
averaged over the slice thickness, keeping the scan's fine noise inside it. Each pass is
scored by ``detect_volume`` (what ``lungcad detect`` runs); a lesion is found when a
finding at or above the threshold lies within its radius (LUNA16's hit rule), and its size
error compares that finding's diameter with the lesion's own mask measured the same way
(``measure_mask``). Sensitivities have Wilson 95 % CIs.

Usage (in a clone whose ``dvc repro`` has run):
    python bench/lesion_spectrum.py --model models/best.pt --scans 8 --out bench/results/lesions
"""

from __future__ import annotations

import argparse
import json
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import ndimage

from lungcad.benchmark.build import dataset_patients, eligible_scans
from lungcad.config import load_params
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.core.findings.measure import measure_mask
from lungcad.core.io.scans import find_scans
from lungcad.core.lung_mask import lung_mask
from lungcad.core.model.loading import load
from lungcad.detection.detector import detect_volume, detector_config
from lungcad.detection.froc_report import wilson
from lungcad.phantom.writer import write_phantom_scan
from lungcad.training.lesions import lobulated_ball

LESION_HU = 35.0
NOISE_HU = 40.0


def draw_lesion(hu: np.ndarray, geometry, centre_mm, diameter_mm: float, seed: int) -> np.ndarray:
    """Write a lobulated solid ball into ``hu`` (in place); returns its mask (α >= 0.5)."""
    g = torch.Generator().manual_seed(seed)
    radius = diameter_mm / 2
    spacing = geometry.spacing_mm  # x, y, z
    centre_idx = geometry.mm_to_index(np.asarray(centre_mm, float))
    half = np.ceil((radius * 1.4 + 2) / spacing).astype(int)
    lo = np.maximum(np.floor(centre_idx).astype(int) - half, 0)
    hi = np.minimum(np.floor(centre_idx).astype(int) + half + 1, np.array(hu.shape[::-1]))
    xs, ys, zs = ((np.arange(lo[a], hi[a]) - centre_idx[a]) * spacing[a] for a in range(3))
    alpha = np.zeros((len(zs), len(ys), len(xs)), dtype=np.float32)
    offsets = (np.arange(5) + 0.5) / 5 - 0.5  # across the slice thickness
    for dz in offsets * spacing[2]:
        zz, yy, xx = np.meshgrid(zs + dz, ys, xs, indexing="ij")
        p = torch.from_numpy(np.stack([zz, yy, xx]).astype(np.float32))
        d = p.norm(dim=0).clamp_min(1e-3)
        g.manual_seed(seed)  # the same shape at every sub-sample
        alpha += lobulated_ball(d, p / d, radius, g).numpy() / len(offsets)
    box = (slice(lo[2], hi[2]), slice(lo[1], hi[1]), slice(lo[0], hi[0]))
    local = hu[box].astype(np.float32)
    detail = np.clip(local - ndimage.uniform_filter(local, 3), -NOISE_HU, NOISE_HU)
    hu[box] = np.rint(local * (1 - alpha) + (LESION_HU + detail) * alpha).astype(hu.dtype)
    mask = np.zeros(hu.shape, dtype=bool)
    mask[box] = alpha >= 0.5
    return mask


def block_mm(lungs, geometry, k: int, r: int, c: int) -> np.ndarray:
    """Patient mm (x, y, z) of the centre of lung-mask block (k, r, c)."""
    step = np.array(lungs.step)
    idx = np.array([k, r, c]) * step + step // 2
    return geometry.index_to_mm(idx[::-1].astype(float))


def pleural_points(volume) -> dict[str, dict]:
    """For each lung (``left`` / ``right`` of the image): on its widest slice, the lateral
    (costal) and medial (mediastinal) edge points of its middle row; and the costal edge
    points of the middle row of every slice at least half as wide (mm)."""
    lungs = lung_mask(volume.hu, volume.geometry)
    par = lungs.parenchyma
    cols = np.flatnonzero(par.any(axis=(0, 1)))
    midline = (cols[0] + cols[-1] + 1) // 2
    out = {}
    for side, part in (("left", slice(0, midline)), ("right", slice(midline, None))):
        half = np.zeros_like(par)
        half[:, :, part] = par[:, :, part]
        area = half.sum(axis=(1, 2))

        def edges(k: int, h: np.ndarray = half, sd: str = side) -> tuple[np.ndarray, ...]:
            rows = np.flatnonzero(h[k].any(axis=1))
            r = int(rows[len(rows) // 2])
            c = np.flatnonzero(h[k, r])
            outer, inner = (c[0], c[-1]) if sd == "left" else (c[-1], c[0])
            return (
                block_mm(lungs, volume.geometry, k, r, outer),
                block_mm(lungs, volume.geometry, k, r, inner),
            )

        widest = int(np.argmax(area))
        costal, mediastinal = edges(widest)
        out[side] = {
            "costal": costal,
            "mediastinal": mediastinal,
            "inward": 1.0 if side == "left" else -1.0,  # +x moves from the left wall inwards
            "other_costal": [edges(k)[0] for k in np.flatnonzero(area > 0.5 * area.max())],
        }
    return out


def figure(hu, geometry, lesions, masks, findings, path: Path) -> None:
    """An axial slice through each lesion: its outline (red) and the findings at or above
    the threshold within 10 mm of the slice (yellow crosses)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(lesions), figsize=(4.5 * len(lesions), 4.8))
    for ax, (kind, _, d), mask in zip(np.atleast_1d(axes), lesions, masks):
        k = int(np.argwhere(mask)[:, 0].mean())
        ax.imshow(hu[k], cmap="gray", vmin=-1200, vmax=400)
        ax.contour(mask[k], [0.5], colors="red", linewidths=0.8)
        pts = findings[["coordX", "coordY", "coordZ"]].to_numpy(float)
        z_k = geometry.index_to_mm(np.array([0.0, 0.0, k]))[2]
        for x, y, _ in pts[np.abs(pts[:, 2] - z_k) < 10]:
            c, r, _ = geometry.mm_to_index(np.array([x, y, z_k]))
            ax.plot(c, r, "x", color="yellow", ms=8, mew=2)
        ax.set_title(f"{kind}, {d:.0f} mm", fontsize=10)
        ax.axis("off")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("models/best.pt"))
    parser.add_argument("--scans", type=int, default=8)
    parser.add_argument("--seed", type=int, default=36)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--index", type=Path, default=Path("data/processed/index.csv"))
    parser.add_argument("--threshold", type=float, default=None, help="default: detect.threshold")
    parser.add_argument("--out", type=Path, default=Path("bench/results/lesions"))
    args = parser.parse_args()
    params = load_params(args.params)
    threshold = params.detect.threshold if args.threshold is None else args.threshold
    loaded = load(args.model)
    config = detector_config(loaded.cut, params.detect)
    db = LidcDatabase()
    scans = eligible_scans(db, dataset_patients(args.index), args.seed, max_slices=400)
    rng = np.random.default_rng(args.seed)
    rows = []
    for scan in scans[: args.scans]:
        with tempfile.TemporaryDirectory() as tmp:
            nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
            write_phantom_scan(scan, nodules, Path(tmp), 0, 3, 0.0, True)
            (source,), _ = find_scans(Path(tmp), db, progress=False)
            clean = source.read()
        sides = pleural_points(clean)
        for swap in (False, True):
            volume = clean
            hu = clean.hu.copy()
            lesions = []
            kinds = ("mediastinal", "chest-wall") if swap else ("chest-wall", "mediastinal")
            for side, kind in zip(("left", "right"), kinds):
                s = sides[side]
                d = float(rng.uniform(30, 90))
                r = d / 2
                edge = s["costal"] if kind == "chest-wall" else s["mediastinal"]
                sign = s["inward"] if kind == "chest-wall" else -s["inward"]
                centre = edge + np.array([sign * 0.8 * r, 0.0, 0.0])
                lesions.append((f"{kind} mass", centre, d))
                # An 8 mm nodule on the costal pleura, on a slice away from the mass.
                far = [p for p in s["other_costal"] if abs(p[2] - centre[2]) > r + 25]
                if far:
                    p = far[int(rng.integers(len(far)))]
                    inward = np.array([s["inward"] * 4.0, 0.0, 0.0])
                    lesions.append(("juxtapleural 8 mm", p + inward, 8.0))
            masks = [
                draw_lesion(hu, volume.geometry, c, d, int(rng.integers(1 << 30)))
                for _, c, d in lesions
            ]
            found = detect_volume(replace(volume, hu=hu), loaded, config)
            every = found.findings
            f = every[every["probability"] >= threshold]
            if len(rows) == 0:
                figure(hu, volume.geometry, lesions, masks, f, args.out / "lesions.png")
            for (kind, _, _), mask in zip(lesions, masks):
                zyx = np.argwhere(mask)
                lo = zyx.min(axis=0)
                sub = mask[tuple(slice(a, b + 1) for a, b in zip(lo, zyx.max(axis=0)))]
                origin = volume.geometry.index_to_mm(lo[::-1].astype(float))
                truth = measure_mask(sub, origin, tuple(volume.geometry.spacing_mm))
                pts = f[["coordX", "coordY", "coordZ"]].to_numpy(float)
                dist = np.linalg.norm(pts - np.asarray(truth.centroid_mm), axis=1)
                hit = f[dist < truth.diameter_mm / 2]
                best = hit.iloc[0] if len(hit) else None
                near = (
                    np.linalg.norm(
                        every[["coordX", "coordY", "coordZ"]].to_numpy(float)
                        - np.asarray(truth.centroid_mm),
                        axis=1,
                    )
                    < truth.diameter_mm / 2
                )
                cand = (
                    np.linalg.norm(
                        found.candidates[["coordX", "coordY", "coordZ"]].to_numpy(float)
                        - np.asarray(truth.centroid_mm),
                        axis=1,
                    )
                    < truth.diameter_mm / 2
                )
                rows.append(
                    {
                        "patient_id": scan.patient_id,
                        "kind": kind,
                        "diameter_mm": truth.diameter_mm,
                        "found": best is not None,
                        "probability": float(best["probability"]) if best is not None else np.nan,
                        "finding_diameter_mm": float(best["diameter_mm"])
                        if best is not None
                        else np.nan,
                        "best_probability_inside": float(every["probability"][near].max())
                        if near.any()
                        else np.nan,
                        "candidates_inside": int(cand.sum()),
                        "findings_above_threshold": len(f),
                    }
                )
            print(pd.DataFrame(rows[-len(lesions) :]).to_string(index=False), flush=True)
    table = pd.DataFrame(rows)
    table["size_error"] = table["finding_diameter_mm"] / table["diameter_mm"] - 1
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "lesions.csv", index=False)
    summary = {"model": str(args.model), "threshold": threshold, "scans": args.scans, "kinds": {}}
    for kind, t in table.groupby("kind"):
        k, n = int(t["found"].sum()), len(t)
        sized = t.dropna(subset=["size_error"])
        summary["kinds"][kind] = {
            "lesions": n,
            "found": k,
            "sensitivity": k / n,
            "sensitivity_ci": wilson(k, n),
            "within_20pct": int((sized["size_error"].abs() <= 0.2).sum()),
            "median_abs_size_error": float(sized["size_error"].abs().median())
            if len(sized)
            else None,
        }
    (args.out / "lesion_spectrum.json").write_text(json.dumps(summary, indent=2))
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
