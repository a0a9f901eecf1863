"""`lungcad explain` on dataset cubes: heat maps as NIfTI in patient mm, pictures, and the
quantitative checks of ``lungcad.explain.metrics``.

Outputs in ``out_dir``:

- ``maps/cube<index>_detection.nii.gz`` for every cube, and ``..._malignancy.nii.gz`` for
  nodule cubes: the map on the cube's 1 mm grid in patient mm (LPS, as SimpleITK and 3D
  Slicer read it), so it opens over the original CT series;
- ``figures/cube<index>.png``: the three slices through the cube centre with the detection
  map, the consensus outlined, the scores in the title;
- ``cubes.csv``: per cube, its scores, pointing-game results and rank correlations;
- ``skipped.csv``: rows that could not be explained, with the reason;
- ``metrics.json``: pointing game (with chance level and the random-weights baseline) and
  sanity rank correlation per target and method, with patient-bootstrap CIs.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from lungcad.config import ExplainConfig, PreprocessConfig
from lungcad.core.dataset import load_cube_data
from lungcad.core.figures import cube_figure
from lungcad.core.io.nifti import write_map_nifti
from lungcad.core.masks import read_masks
from lungcad.core.model.cam import (
    CamSettings,
    CubeExplainer,
    ExplainError,
    randomized_like,
)
from lungcad.core.model.network import NoduleNet
from lungcad.core.model.predict import predict_hu_cubes
from lungcad.core.outputs import write_csv_atomic, write_text_atomic
from lungcad.explain.metrics import pointing, rank_correlation, summarise

#: Cubes explained per step (maps of all methods, both weights, one figure each).
CHUNK = 16


def check_cubes(cubes: np.ndarray, source: str) -> None:
    """Raise ExplainError unless ``cubes`` is (N, S, S, S) of a real numeric dtype."""
    if cubes.ndim != 4 or len(set(cubes.shape[1:])) != 1:
        raise ExplainError(f"{source}: cubes of shape {cubes.shape}; expected (N, S, S, S)")
    if not (np.issubdtype(cubes.dtype, np.integer) or np.issubdtype(cubes.dtype, np.floating)):
        raise ExplainError(f"{source}: cubes of dtype {cubes.dtype}; expected int16 or float HU")


def _title(row, prob: float, mal: float) -> str:
    what = f"nodule {row.nodule_id}" if row.label == 1 else f"{row.kind} negative"
    truth = f", readers {row.malignancy_mean:.1f}" if row.label == 1 else ""
    return (
        f"cube {row.cube_index} ({row.patient_id}), {what}\n"
        f"P(nodule) {prob:.3f}, malignancy {mal:.2f}{truth}  ·  Grad-CAM of the detection logit"
    )


def explain_dataset(
    dataset_dir: str | Path,
    splits_file: str | Path,
    model: NoduleNet,
    window_hu: tuple[float, float],
    out_dir: str | Path,
    config: ExplainConfig = ExplainConfig(),
    threshold: float = 0.5,
    cube_indices: list[int] | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Explain the split's cubes (or ``cube_indices``) into ``out_dir`` (module docstring).

    Args:
        threshold: the detection threshold (a nodule at or above it counts as detected).

    Returns:
        The metrics document (also ``metrics.json``).

    Raises:
        ExplainError: bad settings, cubes or layer; DatasetMissingError: missing inputs.
    """
    out_dir = Path(out_dir)
    data = load_cube_data(dataset_dir, splits_file)
    check_cubes(data.cubes, str(Path(dataset_dir) / "cubes.npy"))
    size = data.cubes.shape[1]
    spacing_mm = PreprocessConfig.model_validate(data.cut_settings.get("preprocess", {})).spacing_mm
    if cube_indices is None:
        rows = data.subset(config.split)
        if rows.empty:
            raise ExplainError(f"split {config.split!r} has no cubes in {splits_file}")
        skipped = pd.DataFrame(columns=["cube_index", "reason"])
    else:
        known = set(data.index["cube_index"])
        bad = [i for i in cube_indices if i not in known]
        skipped = pd.DataFrame(
            {"cube_index": bad, "reason": [f"no row {i} in index.csv" for i in bad]}
        )
        rows = data.index[data.index["cube_index"].isin(cube_indices)]
    rows = rows.sort_values("cube_index")
    masks_all = read_masks(dataset_dir, rows["cube_index"].to_numpy(), size)
    device = next(model.parameters()).device
    random_net = randomized_like(model, config.random_seed).to(device)
    explainers = {
        (target, method, trained): CubeExplainer(
            model if trained else random_net, window_hu, CamSettings(target, method, config.layer)
        )
        for target in ("detection", "malignancy")
        for method in config.methods
        for trained in (True, False)
    }
    primary = config.methods[0]
    records = []
    bar = tqdm(total=len(rows), desc="explain", unit="cube", disable=not progress)
    for start in range(0, len(rows), CHUNK):
        chunk = rows.iloc[start : start + CHUNK]
        cubes = np.asarray(data.cubes[chunk["cube_index"].to_numpy()])
        masks = masks_all[start : start + CHUNK]
        prob, mal = predict_hu_cubes(model, cubes, window_hu, device)
        nodule = chunk["label"].to_numpy() == 1
        maps = {}
        for (target, method, trained), explainer in explainers.items():
            pick = np.ones(len(chunk), bool) if target == "detection" else nodule
            out = np.zeros(cubes.shape, np.float32)
            if pick.any():
                out[pick] = explainer(cubes[pick])
            maps[target, method, trained] = out
        for i, row in enumerate(chunk.itertuples()):
            rec = {
                "cube_index": row.cube_index,
                "patient_id": row.patient_id,
                "nodule_id": row.nodule_id,
                "kind": row.kind,
                "is_nodule": bool(nodule[i]),
                "nodule_prob": float(prob[i]),
                "detected": bool(prob[i] >= threshold),
                "malignancy_pred": float(mal[i]),
                "mask_voxels": int(masks[i].sum()),
            }
            for (target, method, trained), m in maps.items():
                if target == "malignancy" and not nodule[i]:
                    continue
                key = f"{target}_{method}"
                hit, chance, dist = pointing(m[i], masks[i], config.dilate_mm, spacing_mm)
                if trained:
                    rec.update({f"{key}_hit": hit, f"{key}_chance": chance, f"{key}_peak_mm": dist})
                    rec[f"{key}_rho"] = rank_correlation(m[i], maps[target, method, False][i])
                else:
                    rec[f"{key}_random_hit"] = hit
            centre = np.array([row.center_x_mm, row.center_y_mm, row.center_z_mm])
            stem = f"cube{row.cube_index:05d}"
            write_map_nifti(
                maps["detection", primary, True][i],
                centre,
                spacing_mm,
                out_dir / "maps" / f"{stem}_detection.nii.gz",
            )
            if nodule[i]:
                write_map_nifti(
                    maps["malignancy", primary, True][i],
                    centre,
                    spacing_mm,
                    out_dir / "maps" / f"{stem}_malignancy.nii.gz",
                )
            cube_figure(
                cubes[i],
                maps["detection", primary, True][i],
                out_dir / "figures" / f"{stem}.png",
                _title(row, prob[i], mal[i]),
                masks[i] if nodule[i] else None,
            )
            records.append(rec)
        bar.update(len(chunk))
    bar.close()
    table = pd.DataFrame(records)
    write_csv_atomic(table, out_dir / "cubes.csv")
    write_csv_atomic(skipped, out_dir / "skipped.csv")
    doc = {
        "split": config.split if cube_indices is None else "selected cubes",
        "settings": {**config.to_dict(), "spacing_mm": spacing_mm},
        "threshold": float(threshold),
    }
    for target in ("detection", "malignancy"):
        part = table if target == "detection" else table[table["is_nodule"]]
        cols = {c: c[len(target) + 1 :] for c in part.columns if c.startswith(f"{target}_")}
        doc[target] = summarise(
            part[["patient_id", "is_nodule", "detected", *cols]].rename(columns=cols),
            config.bootstrap,
            config.seed,
        )
    doc["skipped"] = int(len(skipped))
    write_text_atomic(
        out_dir / "metrics.json", json.dumps(doc, indent=2), "the explanation metrics"
    )
    return doc
