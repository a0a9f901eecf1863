"""How well the network outlines the test nodules: Dice and volume error against the readers'
consensus, size error against the readers' diameter and the consensus mask, beside the
segmentation ceiling on the same nodules: each reader against the consensus of the other
readers (from the LIDC database), on the same 1 mm cube, with the same Dice."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules
from lungcad.core.findings.measure import measure_mask
from lungcad.core.findings.merge import nodule_part
from lungcad.core.masks import read_masks, readers_cube_dice
from lungcad.core.metrics import bootstrap_ci, dice
from lungcad.core.model.network import NoduleNet
from lungcad.core.model.predict import predict_hu_cubes


def readers_dice(
    nodule_ids, db: LidcDatabase, size: int = 64, spacing_mm: float = 1.0
) -> dict[str, float]:
    """Each nodule's segmentation ceiling (``readers_cube_dice``: every reader against the
    others' consensus in the ``size``³ cube of ``spacing_mm``) by ``<patient>:<scan id>:<k>``
    id of the LIDC database; NaN for a nodule it does not know or with one reader."""
    out: dict[str, float] = {}
    by_scan: dict[int, list[str]] = {}
    for nid in nodule_ids:
        parts = str(nid).split(":")
        if len(parts) == 3 and parts[1].isdigit():
            by_scan.setdefault(int(parts[1]), []).append(str(nid))
        else:
            out[str(nid)] = float("nan")
    scans = {s.scan_id: s for s in db.scans}
    for scan_id, ids in by_scan.items():
        scan = scans.get(scan_id)
        if scan is None:
            out.update({nid: float("nan") for nid in ids})
            continue
        annotations = db.annotations(scan_id)
        nodules = {n.nodule_id: n for n in cluster_nodules(scan, annotations)}
        for nid in ids:
            n = nodules.get(nid)
            out[nid] = (
                readers_cube_dice(scan, annotations, n, size, spacing_mm) if n else float("nan")
            )
    return out


def nodule_segmentation(
    model: NoduleNet,
    cubes: np.ndarray,
    dataset_dir,
    rows: pd.DataFrame,
    window: tuple[float, float],
    device,
    spacing_mm: float,
    batch_size: int = 32,
) -> pd.DataFrame:
    """Per nodule cube: Dice of the predicted mask (its part nearest the centre) with the
    consensus, predicted and consensus volume (mm³), predicted longest axial diameter and
    the readers' (index.csv ``diameter_mm``)."""
    rows = rows.sort_values("cube_index")
    index = rows["cube_index"].to_numpy()
    size = int(cubes.shape[-1])
    reference = read_masks(dataset_dir, index, size)
    *_, predicted = predict_hu_cubes(model, cubes[index], window, device, batch_size, masks=True)
    out = []
    for row, pred, ref in zip(rows.itertuples(), predicted, reference):
        part = nodule_part(pred, spacing_mm)
        measures = measure_mask(part, np.zeros(3), spacing_mm)
        consensus = measure_mask(ref, np.zeros(3), spacing_mm)  # the same code, the readers
        out.append(
            {
                "patient_id": row.patient_id,
                "nodule_id": row.nodule_id,
                "dice": dice(part, ref),
                "volume_mm3": float(np.count_nonzero(part) * spacing_mm**3),
                "reference_volume_mm3": float(np.count_nonzero(ref) * spacing_mm**3),
                "diameter_mm": measures.diameter_mm,
                "consensus_diameter_mm": consensus.diameter_mm,
                "reader_diameter_mm": float(row.diameter_mm),
                "texture": getattr(row, "mean_texture", float("nan")),
            }
        )
    table = pd.DataFrame(out)
    if len(table):
        table["volume_error_pct"] = 100 * (
            table["volume_mm3"] / table["reference_volume_mm3"].where(lambda v: v > 0) - 1
        )
        table["size_error_mm"] = table["diameter_mm"] - table["reader_diameter_mm"]
        table["size_error_pct"] = 100 * table["size_error_mm"] / table["reader_diameter_mm"]
        # Against the consensus mask measured by the same code; a nodule the network does
        # not outline counts with a size of 0 (its whole diameter is the error).
        table["size_error_vs_consensus_mm"] = (
            table["diameter_mm"].fillna(0.0) - table["consensus_diameter_mm"]
        )
    return table


def segmentation_summary(
    table: pd.DataFrame, readers: dict[str, float], n_boot: int, seed: int
) -> dict[str, Any]:
    """Dice (mean, median, 95% patient-bootstrap CI), volume and size errors, and the
    segmentation ceiling (each reader against the others' consensus) on the same nodules."""
    if table.empty:
        return {"n_nodules": 0}
    table = table.assign(readers_dice=table["nodule_id"].map(readers).astype(float))
    dice = table["dice"].to_numpy(float)
    ci = bootstrap_ci(
        table["patient_id"].to_numpy(),
        lambda i: {"dice": float(np.mean(dice[i]))},
        n_boot,
        seed,
    ).get("dice", (float("nan"), float("nan")))
    both = table.dropna(subset=["readers_dice"])
    outlined = table[table["volume_mm3"] > 0]
    vs_consensus = table["size_error_vs_consensus_mm"].abs()
    return {
        "n_nodules": int(len(table)),
        "localisation": "oracle: each cube is centred on its reference nodule",
        "dice_mean": float(dice.mean()),
        "dice_median": float(np.median(dice)),
        "ci95": {"dice_mean": list(ci)},
        "n_outlined": int(len(outlined)),
        "volume_error_pct_median_abs": float(outlined["volume_error_pct"].abs().median()),
        "size_error_mm_median_abs": float(outlined["size_error_mm"].abs().median()),
        "size_error_pct_median_abs": float(outlined["size_error_pct"].abs().median()),
        "size_error_vs_consensus_mm_median_abs": float(vs_consensus.median()),
        "size_error_vs_consensus_mm_ci95": list(
            bootstrap_ci(
                table["patient_id"].to_numpy(),
                lambda i: {"m": float(np.median(vs_consensus.to_numpy()[i]))},
                n_boot,
                seed,
            ).get("m", (float("nan"), float("nan")))
        ),
        "n_not_outlined": int(len(table) - len(outlined)),
        "readers_vs_others_dice_mean": float(both["readers_dice"].mean()) if len(both) else None,
        "dice_mean_same_nodules": float(both["dice"].mean()) if len(both) else None,
        "n_with_readers": int(len(both)),
    }
