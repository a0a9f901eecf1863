"""The realism report: how close the phantom's lungs are to a real LIDC scan's.

For every real series and every phantom series (up to a limit) it measures the statistics
of ``realism.stats``; it compares them with the real ones (overall, for phantom scans of the
real's slice spacing, and for the phantom of the *same* real scan, written on the fly if the
phantom folder lacks it), the lung HU histograms (Wasserstein distance) and the score of a
domain classifier (``realism.domain``). Writes ``metrics.json`` (DVC metrics),
``scans.csv`` (one row per scan) and ``realism.png`` (real and phantom at the same z of
the same scan, with zoomed lung patches).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import wasserstein_distance

from lungcad.core.io.dicom_index import index_lidc_root
from lungcad.core.io.series import CtVolume, SeriesError, read_series
from lungcad.core.parallel import progress_map
from lungcad.realism.domain import Patches, domain_auc, sample_patches
from lungcad.realism.figure import realism_figure
from lungcad.realism.stats import core_parenchyma, lung_stats, noise_power_spectrum

#: Statistics with a realism target (within ±TOLERANCE of the real value).
TARGET_STATS = (
    "vessel_fraction",
    "vessel_sections_per_cm2",
    "parenchyma_hu_width",
    "highpass_noise_hu",
)
TOLERANCE = 0.25
#: Lung voxels per scan kept for the HU histogram distance.
HU_SAMPLE = 100_000
#: Slice spacings closer than this count as "the same thickness".
SAME_SPACING_MM = 0.05


@dataclass
class ScanMeasure:
    """What the report keeps of one scan."""

    source: str
    patient_id: str
    series_uid: str
    slice_mm: float
    pixel_mm: float
    stats: dict
    hu_sample: np.ndarray
    patches: Patches


def _measure(args: tuple) -> ScanMeasure | str:
    source, files, n_patches, seed = args
    try:
        vol = read_series(files)
        core = core_parenchyma(vol.hu, vol.geometry)
        stats = lung_stats(vol.hu, vol.geometry, core).as_dict()
    except (SeriesError, ValueError) as exc:
        return f"{files[0].parent}: {exc}"
    rng = np.random.default_rng([seed, len(files)])
    values = vol.hu[core]
    sample = rng.choice(values, size=min(HU_SAMPLE, len(values)), replace=False)
    pixel = float(vol.geometry.spacing_mm[0])
    patches = sample_patches(vol.hu, core, pixel, n_patches, rng, f"{source}:{vol.series_uid}")
    return ScanMeasure(
        source,
        vol.patient_id,
        vol.series_uid,
        float(vol.geometry.spacing_mm[2]),
        pixel,
        stats,
        sample.astype(np.float32),
        patches,
    )


def _measured(results: list[ScanMeasure | str], problems: list[str]) -> list[ScanMeasure]:
    """The scans that could be measured; the reasons of the others go to ``problems``."""
    problems.extend(r for r in results if isinstance(r, str))
    return [r for r in results if isinstance(r, ScanMeasure)]


def _pooled(scans: list[ScanMeasure]) -> Patches:
    """The lung patches of several scans together."""
    return Patches(
        np.concatenate([s.patches.images for s in scans]),
        np.concatenate([s.patches.groups for s in scans]),
    )


def _paired_phantom(real: ScanMeasure, folder: Path, seed: int, margin_mm: float) -> list[Path]:
    """Write the phantom of the real scan's own LIDC series (same grid, UIDs, nodules)."""
    from lungcad.core.annotations.lidc_db import LidcDatabase
    from lungcad.core.annotations.nodules import cluster_nodules
    from lungcad.phantom.writer import write_phantom_scan

    db = LidcDatabase()
    scan = db.scan_by_series(real.series_uid)
    if scan is None:
        return []
    nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
    if not nodules:
        return []
    write_phantom_scan(scan, nodules, folder, seed, min_readers=1, margin_mm=margin_mm)
    return sorted(folder.glob(f"{scan.patient_id}/*/{scan.series_uid}/*.dcm"))


def _mean_stats(scans: list[ScanMeasure]) -> dict[str, float] | None:
    if not scans:
        return None
    return {k: float(np.mean([s.stats[k] for s in scans])) for k in scans[0].stats}


def _compare(real: dict, phantom: dict | None) -> dict:
    if phantom is None:
        return {}
    out = {}
    for key in TARGET_STATS:
        ratio = phantom[key] / real[key] if real[key] else float("nan")
        out[key] = {
            "real": real[key],
            "phantom": phantom[key],
            "ratio": ratio,
            "within_tolerance": bool(abs(ratio - 1) <= TOLERANCE),
        }
    return out


def _acquisitions(phantom_root: Path) -> dict[str, dict]:
    """Series UID -> the acquisition the phantom drew it with (``phantom.json``; empty for
    a phantom written with the default look or a root without the manifest)."""
    manifest = Path(phantom_root) / "phantom.json"
    if not manifest.is_file():
        return {}
    scans = json.loads(manifest.read_text()).get("scans", [])
    return {s["series_uid"]: s["acquisition"] for s in scans if s.get("acquisition")}


def _per_setting(
    phantom: list[ScanMeasure],
    acquisitions: dict[str, dict],
    real_mean: dict,
    real_patches: Patches,
    patches: int,
    seed: int,
) -> dict:
    """The realism of each drawn setting: per kernel, background lung state and slice
    reconstruction, its scans' statistics against the real and the domain classifier's
    ROC-AUC on its patches (where >= 2 scans have it)."""
    settings = {
        "kernel": lambda a: a["kernel"],
        "background": lambda a: a["background"],
        "reconstruction": lambda a: "thick" if a["thick_factor"] > 1 else "as acquired",
    }
    out: dict[str, dict] = {}
    rng = np.random.default_rng(seed)
    for name, value_of in settings.items():
        groups: dict[str, list[ScanMeasure]] = {}
        for m in phantom:
            if m.series_uid in acquisitions:
                groups.setdefault(value_of(acquisitions[m.series_uid]), []).append(m)
        out[name] = {}
        for value, scans in sorted(groups.items()):
            entry: dict = {"scans": len(scans), "targets": _compare(real_mean, _mean_stats(scans))}
            if len(scans) >= 2:
                pool = _pooled(scans)
                keep = rng.permutation(len(pool.images))[:patches]
                entry["domain_auc"] = domain_auc(
                    real_patches, Patches(pool.images[keep], pool.groups[keep]), seed
                )["auc"]
            out[name][value] = entry
    return out


def _no_reference(real_root: Path, out_dir: Path) -> dict:
    """The report of a run without a real reference: it says so, in every output."""
    reason = (
        f"no real reference at {real_root}: put a real LIDC series folder there (the shared "
        "LIDC-IDRI-0001 slab) or pass --real"
    )
    metrics = {"skipped": reason}
    pd.DataFrame(columns=["source", "patient_id", "series_uid"]).to_csv(
        out_dir / "scans.csv", index=False
    )
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))
    realism_figure({}, {}, None, None, metrics, out_dir / "realism.png")
    return metrics


def realism_report(
    real_root: str | Path,
    phantom_root: str | Path,
    out_dir: str | Path,
    max_phantom_scans: int = 20,
    patches: int = 400,
    seed: int = 0,
    pair: bool = True,
    pair_margin_mm: float = 34.0,
    workers: int = 1,
    progress: bool = True,
) -> dict:
    """Measure real against phantom; write metrics.json, scans.csv and realism.png.

    Args:
        real_root: folder of real CT series (the shared LIDC slab).
        phantom_root: folder of phantom series (``lungcad data phantom``).
        out_dir: where the report goes.
        max_phantom_scans: phantom series measured (the first by series UID).
        patches: lung patches per side for the domain classifier.
        seed: patch sampling and classifier folds.
        pair: write the phantom of each real series if ``phantom_root`` lacks it.
        pair_margin_mm: slab margin of such a paired phantom.
        workers: processes measuring scans.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if not Path(real_root).is_dir():
        return _no_reference(Path(real_root), out_dir)
    real_index = index_lidc_root(real_root, progress=False)
    phantom_index = index_lidc_root(phantom_root, progress=False)
    real_items = [
        ("real", s.files, max(1, patches // max(1, len(real_index.series))), seed)
        for s in real_index.series.values()
    ]
    problems: list[str] = []
    real = _measured(
        progress_map(_measure, real_items, workers, "measure real scans", "scan", progress),
        problems,
    )
    if not real:
        raise ValueError(f"no real series under {real_root} could be measured: {problems}")
    phantom_series = list(phantom_index.series.values())[:max_phantom_scans]
    spacing = {r.slice_mm for r in real}
    # Every scan offers as many patches as the classifier uses; the pool is subsampled below.
    phantom_items = [("phantom", s.files, patches, seed) for s in phantom_series]
    phantom = _measured(
        progress_map(_measure, phantom_items, workers, "measure phantom scans", "scan", progress),
        problems,
    )
    if not phantom:
        raise ValueError(f"no phantom series under {phantom_root} could be measured: {problems}")
    same = [p for p in phantom if any(abs(p.slice_mm - s) < SAME_SPACING_MM for s in spacing)]

    paired: dict[str, ScanMeasure] = {}
    paired_volumes: dict[str, CtVolume] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for r in real:
            entry = phantom_index.series.get(r.series_uid)
            files = entry.files if entry else []
            if not files and pair:
                files = _paired_phantom(r, Path(tmp), seed, pair_margin_mm)
            if files:
                m = _measure(("paired", files, patches, seed))
                if isinstance(m, ScanMeasure):
                    paired[r.series_uid] = m
                    paired_volumes[r.series_uid] = read_series(files)
                else:
                    problems.append(m)

    real_mean = _mean_stats(real)
    real_hu = np.concatenate([r.hu_sample for r in real])
    # The classifier sees phantom patches of the real's slice spacing where there are any.
    pool = same or phantom
    rng = np.random.default_rng(seed)
    phantom_patches = _pooled(pool)
    keep = rng.permutation(len(phantom_patches.images))[:patches]
    phantom_patches = Patches(phantom_patches.images[keep], phantom_patches.groups[keep])
    real_patches = _pooled(real)
    # Headline: against the phantom of the same real scans (same grid, pixel size, slices),
    # so that only what the phantom draws differs. The population pool mixes pixel sizes,
    # which resampling to one grid cannot fully hide (interpolation smooths the noise).
    population = domain_auc(real_patches, phantom_patches, seed)
    population["phantom_pool"] = "same slice spacing as the real" if same else "all measured"
    if paired:
        paired_patches = _pooled(list(paired.values()))
        domain = domain_auc(real_patches, paired_patches, seed)
        domain["phantom_pool"] = "phantom of the same scans"
    else:
        domain, paired_patches = population, phantom_patches

    real_volumes = {r.series_uid: read_series(real_index.series[r.series_uid].files) for r in real}
    first = real_volumes[real[0].series_uid]
    freq, nps, n_roi = noise_power_spectrum(first.hu, float(first.geometry.spacing_mm[0]))
    metrics = {
        "real": {"scans": len(real), **real_mean},
        "phantom_all": {"scans": len(phantom), **_mean_stats(phantom)},
        "phantom_same_spacing": {"scans": len(same), **(_mean_stats(same) or {})},
        "phantom_paired": {"scans": len(paired), **(_mean_stats(list(paired.values())) or {})},
        "targets": {
            "tolerance": TOLERANCE,
            "all": _compare(real_mean, _mean_stats(phantom)),
            "same_spacing": _compare(real_mean, _mean_stats(same)),
            "paired": _compare(real_mean, _mean_stats(list(paired.values()))),
        },
        "wasserstein_hu": {
            "all": float(
                wasserstein_distance(real_hu, np.concatenate([p.hu_sample for p in phantom]))
            ),
            "same_spacing": float(
                wasserstein_distance(real_hu, np.concatenate([p.hu_sample for p in same]))
            )
            if same
            else None,
            "paired": float(
                wasserstein_distance(
                    real_hu, np.concatenate([p.hu_sample for p in paired.values()])
                )
            )
            if paired
            else None,
        },
        "domain_classifier": domain,
        "domain_classifier_population": population,
        "real_nps": {
            "freq_per_mm": [round(float(f), 4) for f in freq],
            "nps_hu2mm2": [round(float(v), 1) for v in nps],
            "rois": n_roi,
        },
        "per_setting": _per_setting(
            phantom, _acquisitions(Path(phantom_root)), real_mean, real_patches, patches, seed
        ),
        "problems": problems,
    }
    rows = []
    for m in real + phantom + list(paired.values()):
        rows.append(
            {
                "source": m.source,
                "patient_id": m.patient_id,
                "series_uid": m.series_uid,
                "slice_mm": m.slice_mm,
                "pixel_mm": m.pixel_mm,
                **m.stats,
                "wasserstein_hu_to_real": float(wasserstein_distance(real_hu, m.hu_sample)),
            }
        )
    pd.DataFrame(rows).to_csv(out_dir / "scans.csv", index=False)
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2))

    realism_figure(
        real_volumes,
        paired_volumes,
        real_patches,
        phantom_patches,
        metrics,
        out_dir / "realism.png",
    )
    return metrics
