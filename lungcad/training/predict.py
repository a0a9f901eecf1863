"""Batched inference of a NoduleNet on cubes (validation, evaluation and serving)."""

from __future__ import annotations

import numpy as np
import torch

from lungcad.training.model import NoduleNet


@torch.no_grad()
def predict_hu_cubes(
    model: NoduleNet,
    cubes_hu: np.ndarray,
    window_hu: tuple[float, float],
    device: torch.device,
    batch_size: int = 32,
) -> tuple[np.ndarray, np.ndarray]:
    """Nodule probability and malignancy for (N, 64, 64, 64) or (N, 1, 64, 64, 64) HU cubes.

    The HU window is applied here (clipped to [0, 1]), exactly as in training.
    """
    model.eval()
    probs, mals = [], []
    low, high = window_hu
    for start in range(0, len(cubes_hu), batch_size):
        chunk = np.asarray(cubes_hu[start : start + batch_size], dtype=np.float32)
        if chunk.ndim == 4:
            chunk = chunk[:, None]
        x = torch.from_numpy(np.clip((chunk - low) / (high - low), 0.0, 1.0)).to(device)
        logit, mal = model(x)
        probs.append(torch.sigmoid(logit.float()).cpu().numpy())
        mals.append(mal.float().cpu().numpy())
    if not probs:
        return np.zeros(0, np.float32), np.zeros(0, np.float32)
    return np.concatenate(probs), np.concatenate(mals)


def predict_rows(
    model: NoduleNet,
    cubes: np.ndarray,
    rows,
    window_hu: tuple[float, float],
    device: torch.device,
    batch_size: int = 32,
):
    """``rows`` of the cube index (sorted by cube_index, for sequential memory-mapped reads)
    with ``nodule_prob`` and ``malignancy_pred`` columns added."""
    rows = rows.sort_values("cube_index")
    prob, mal = predict_hu_cubes(
        model, cubes[rows["cube_index"].to_numpy()], window_hu, device, batch_size
    )
    return rows.assign(nodule_prob=prob, malignancy_pred=mal)
