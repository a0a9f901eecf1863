"""Benchmark: lungcad's reader masks and diameters beside pylidc's own, on real LIDC
annotations from the database both read.

pylidc (``Annotation.boolean_mask()``, ``Annotation.diameter``) is the field's reference
implementation of LIDC's definitions. It does not run beside numpy 2, so it runs in another
Python given by ``--pylidc-python`` (one with ``pip install pylidc 'numpy<1.24'``); this
script calls itself there with ``--pylidc-side`` and compares.

Annotations: every annotation of ``--scans`` scans drawn at random (``--seed``) from the
scans that have any. Per annotation: lungcad's and pylidc's mask voxel count (the volume at
the scan's spacing, which both share) and diameter. Writes ``--out`` (JSON) and prints the
largest differences.

Usage:
    python -m venv /tmp/plv && /tmp/plv/bin/pip install pylidc 'numpy<1.24'
    PYTHONPATH=. python bench/pylidc_parity.py --pylidc-python /tmp/plv/bin/python \
        --out bench/results/pylidc_parity.json
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path


def pylidc_side(ids: list[int]) -> dict[int, dict[str, float]]:
    """pylidc's values for annotation ``ids`` (run in the interpreter that has pylidc)."""
    import pylidc as pl

    out = {}
    for ann in pl.query(pl.Annotation).filter(pl.Annotation.id.in_(ids)):
        mask = ann.boolean_mask()  # (row, column, slice) over the outlines' box
        out[int(ann.id)] = {
            "diameter_mm": float(ann.diameter),
            "mask_voxels": int(mask.sum()),
            "voxels": [list(map(int, v)) for v in zip(*mask.nonzero())],
        }
    return out


def lungcad_side(scans: int, seed: int) -> dict[int, dict[str, float]]:
    import numpy as np

    from lungcad.core.annotations.lidc_db import LidcDatabase
    from lungcad.core.annotations.nodules import annotation_mask, max_inplane_diameter_mm

    db = LidcDatabase()
    rng = np.random.default_rng(seed)
    out = {}
    for i in rng.permutation(len(db.scans)):
        scan = db.scans[i]
        annotations = [a for a in db.annotations(scan.scan_id) if a.contours]
        if not annotations:
            continue
        for a in annotations:
            mask = annotation_mask(a, scan).mask.transpose(1, 2, 0)  # as pylidc's
            out[int(a.annotation_id)] = {
                "diameter_mm": max_inplane_diameter_mm(a, scan.pixel_spacing_mm),
                "mask_voxels": int(mask.sum()),
                "voxels": [list(map(int, v)) for v in zip(*mask.nonzero())],
                "scan": scan.patient_id,
            }
        scans -= 1
        if scans == 0:
            return out
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pylidc-python", help="a Python with pylidc installed")
    parser.add_argument("--pylidc-side", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--scans", type=int, default=12)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("bench/results/pylidc_parity.json"))
    args = parser.parse_args()
    if args.pylidc_side:
        ids = json.loads(sys.stdin.read())
        print(json.dumps(pylidc_side(ids)))
        return
    ours = lungcad_side(args.scans, args.seed)
    done = subprocess.run(
        [args.pylidc_python, __file__, "--pylidc-side"],
        input=json.dumps(sorted(ours)),
        capture_output=True,
        text=True,
        check=True,
    )
    theirs = {int(k): v for k, v in json.loads(done.stdout).items()}
    rows = []
    for ann_id, o in sorted(ours.items()):
        t = theirs[ann_id]
        rows.append(
            {
                "annotation_id": ann_id,
                "scan": o["scan"],
                "diameter_mm": o["diameter_mm"],
                "pylidc_diameter_mm": t["diameter_mm"],
                "mask_voxels": o["mask_voxels"],
                "pylidc_mask_voxels": t["mask_voxels"],
                "same_voxels": o["voxels"] == t["voxels"],
            }
        )
    d_diam = [abs(r["diameter_mm"] - r["pylidc_diameter_mm"]) for r in rows]
    d_vol = [
        abs(r["mask_voxels"] - r["pylidc_mask_voxels"]) / max(r["pylidc_mask_voxels"], 1)
        for r in rows
    ]
    summary = {
        "annotations": len(rows),
        "scans": len({r["scan"] for r in rows}),
        "max_abs_diameter_difference_mm": max(d_diam),
        "max_relative_volume_difference": max(d_vol),
        "identical_masks": sum(r["same_voxels"] for r in rows),
        "seed": args.seed,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"summary": summary, "annotations": rows}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
