"""Score the real cubes of the shared LIDC slab with a trained model.

Prints, for the slab's nodule and its real lung/vessel negatives (>= 30 mm from the nodule,
``lungcad.realism.real_cubes``), the nodule probability; counts the negatives above 0.5 and
above the model's promoted threshold (Youden on val, from ``reports/metrics.json``).

Usage:
    python scripts/real_slab_scores.py --model models/best.pt --metrics reports/metrics.json \
        --out reports/realism/real_slab_scores.csv
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from lungcad.core.io.dicom_index import index_lidc_root
from lungcad.core.io.series import read_series
from lungcad.core.model.loading import load_model
from lungcad.core.model.predict import predict_hu_cubes
from lungcad.realism.real_cubes import real_cubes


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--real", type=Path, default=Path("../shared/data/lidc-slabs"))
    parser.add_argument("--model", type=Path, default=Path("models/best.pt"))
    parser.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    threshold = json.loads(args.metrics.read_text())["threshold"]["value"]
    device = torch.device("cpu")
    model, config = load_model(args.model, device)
    index = index_lidc_root(args.real, progress=False)
    summary = {}
    for series in index.series.values():
        volume = read_series(series.files)
        found = real_cubes(volume)
        prob, mal = predict_hu_cubes(model, found.cubes, config.window_hu, device)
        rows = found.rows.assign(
            nodule_prob=prob, malignancy_pred=mal, patient_id=volume.patient_id
        )
        if args.out:
            args.out.parent.mkdir(parents=True, exist_ok=True)
            rows.to_csv(args.out, index=False)
        neg = rows[rows["kind"] != "nodule"]
        summary[volume.patient_id] = {
            "threshold": threshold,
            "nodule_prob": [
                round(float(p), 3) for p in rows.loc[rows["kind"] == "nodule", "nodule_prob"]
            ],
            "negatives": {kind: int((neg["kind"] == kind).sum()) for kind in ("lung", "vessel")},
            "negatives_above_0.5": int((neg["nodule_prob"] > 0.5).sum()),
            "negatives_above_threshold": int((neg["nodule_prob"] > threshold).sum()),
            "negative_prob_max": round(float(neg["nodule_prob"].max()), 3),
            "negative_prob_median": round(float(np.median(neg["nodule_prob"])), 4),
        }
    print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
