"""Benchmark: whole-scan detection under acquisitions away from the training ranges' centre.

The same held-out phantom scans (LIDC patients the dataset does not hold, drawn in a
seeded order; slabs around their nodules as the ``phantom`` stage writes them) are written
once per look and scored with ``lungcad detect`` + LUNA16's FROC:

  - ``default``: the default look (standard kernel, the scan's own slices, dose 1);
  - ``thick-sharp``: a sharp ("lung") kernel and slices averaged to about 5 mm;
  - ``low-dose``: 4x the noise variance (beyond the training range's 3x) on the scan's own
    slices (0.6-2.5 mm as LIDC's).

For each look: CPM with a patient-bootstrap 95 % CI, and its difference from the default
look with a paired CI (the same patients drawn for both looks in each resample). With
``--baseline`` another checkpoint (e.g. a model trained before a recipe change) is scored
on the same scans, and the model's CPM minus the baseline's gets a paired CI per look.

Usage (in a clone whose ``dvc repro`` has run):
    python bench/acquisition_shift.py --model models/best.pt --scans 20 \
        --out bench/results/acquisition
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd

from lungcad.benchmark.build import dataset_patients, eligible_scans
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.detection.froc import FP_RATES, best_hit_per_nodule, froc_curve, label_findings
from lungcad.phantom.acquisition import Acquisition
from lungcad.phantom.writer import write_phantom_scan


def looks(thickness_mm: float) -> dict[str, Acquisition]:
    """The looks for a scan of this slice thickness."""
    to = lambda mm: max(1, int(round(mm / thickness_mm)))  # noqa: E731
    return {
        "default": Acquisition(),
        "thick-sharp": Acquisition(kernel="lung", thick_factor=to(5.0)),
        "low-dose": Acquisition(dose_factor=4.0),
    }


def per_scan(run: Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Series UID -> (best probability of each nodule hit, false-positive probabilities,
    nodules), from a ``lungcad detect`` output folder."""
    findings = pd.read_csv(run / "detections.csv")
    annotations = pd.read_csv(run / "annotations.csv")
    excluded = pd.read_csv(run / "annotations_excluded.csv")
    scans = pd.read_csv(run / "scans.csv")
    out = {}
    for uid in scans["seriesuid"]:
        f = findings[findings["seriesuid"] == uid]
        a = annotations[annotations["seriesuid"] == uid]
        labels = label_findings(f, a, excluded[excluded["seriesuid"] == uid])["label"].to_numpy()
        fp = f["probability"].to_numpy(float)[labels == "fp"]
        out[uid] = (best_hit_per_nodule(f, a), fp, len(a))
    return out


def cpm(units: list[tuple[np.ndarray, np.ndarray, int]]) -> float:
    tp = np.concatenate([u[0] for u in units])
    fp = np.concatenate([u[1] for u in units])
    n = sum(u[2] for u in units)
    if n == 0:
        return float("nan")
    fps, sens = froc_curve(tp, fp, n, len(units))
    return float(np.mean([np.interp(r, fps[::-1], sens[::-1]) for r in FP_RATES]))


def _ci(values: np.ndarray) -> list[float]:
    return [float(np.nanpercentile(values, 2.5)), float(np.nanpercentile(values, 97.5))]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model", type=Path, default=Path("models/best.pt"))
    parser.add_argument(
        "--baseline", type=Path, default=None, help="another checkpoint scored the same way"
    )
    parser.add_argument("--scans", type=int, default=20)
    parser.add_argument("--seed", type=int, default=35)
    parser.add_argument("--index", type=Path, default=Path("data/processed/index.csv"))
    parser.add_argument("--bootstrap", type=int, default=1000)
    parser.add_argument("--out", type=Path, default=Path("bench/results/acquisition"))
    args = parser.parse_args()
    db = LidcDatabase()
    scans = [
        s
        for s in eligible_scans(db, dataset_patients(args.index), args.seed)
        if any(n.n_readers >= 3 for n in cluster_nodules(s, db.annotations(s.scan_id)))
    ][: args.scans]
    names = list(looks(2.5))
    models = {"model": args.model, **({"baseline": args.baseline} if args.baseline else {})}
    units: dict[str, dict[str, dict]] = {m: {} for m in models}
    for name in names:
        root = args.out / "raw" / name
        if not (root / "phantom.json").exists():
            for scan in scans:
                nodules = cluster_nodules(scan, db.annotations(scan.scan_id))
                acquisition = looks(scan.slice_thickness_mm)[name]
                write_phantom_scan(scan, nodules, root, 0, 3, 34.0, acquisition=acquisition)
            (root / "phantom.json").write_text(json.dumps([s.patient_id for s in scans]))
    for name in names:
        root = args.out / "raw" / name
        for key, checkpoint in models.items():
            run = args.out / "runs" / key / name
            if not (run / "scans.csv").exists():
                subprocess.run(
                    ["lungcad", "detect", str(root), "--model", str(checkpoint), "--out", str(run)]
                    + ["--no-dicom", "--no-figures", "--quiet"],
                    check=True,
                )
            units[key][name] = per_scan(run)
    uids = sorted(units["model"]["default"])
    rng = np.random.default_rng(0)
    draws = [rng.integers(len(uids), size=len(uids)) for _ in range(args.bootstrap)]
    result = {k: {"checkpoint": str(v), "looks": {}} for k, v in models.items()}
    result["scans"] = len(uids)
    for key in models:
        base = [units[key]["default"][u] for u in uids]
        for name in names:
            mine = [units[key][name][u] for u in uids]
            boot = np.array([cpm([mine[i] for i in d]) for d in draws])
            diff = np.array([cpm([mine[i] for i in d]) - cpm([base[i] for i in d]) for d in draws])
            entry = {
                "cpm": cpm(mine),
                "cpm_ci": _ci(boot),
                "minus_default": cpm(mine) - cpm(base),
                "minus_default_ci": _ci(diff),
                "nodules": int(sum(u[2] for u in mine)),
            }
            if key == "model" and "baseline" in models:
                other = [units["baseline"][name][u] for u in uids]
                vs = np.array(
                    [cpm([mine[i] for i in d]) - cpm([other[i] for i in d]) for d in draws]
                )
                entry["minus_baseline"] = cpm(mine) - cpm(other)
                entry["minus_baseline_ci"] = _ci(vs)
            result[key]["looks"][name] = entry
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "acquisition_shift.json").write_text(json.dumps(result, indent=2))
    print(f"{len(uids)} held-out scans")
    for key in models:
        print(f"{key}: {models[key]}")
        print(f"  {'look':<12} {'CPM':>6} {'95% CI':>15} {'- default':>10} {'paired 95% CI':>18}")
        for name, r in result[key]["looks"].items():
            lo, hi = r["cpm_ci"]
            dlo, dhi = r["minus_default_ci"]
            line = (
                f"  {name:<12} {r['cpm']:6.3f} ({lo:.3f}-{hi:.3f}) {r['minus_default']:+10.3f} "
                f"({dlo:+.3f} to {dhi:+.3f})"
            )
            if "minus_baseline" in r:
                blo, bhi = r["minus_baseline_ci"]
                line += f"  vs baseline {r['minus_baseline']:+.3f} ({blo:+.3f} to {bhi:+.3f})"
            print(line)


if __name__ == "__main__":
    main()
