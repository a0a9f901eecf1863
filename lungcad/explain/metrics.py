"""Is a heat map right? The pointing game against the readers' consensus, and the
model-randomisation sanity check, each with patient-bootstrap CIs.

- Pointing game (Zhang et al., 2018): a nodule cube scores a hit when its map's maximum lies
  inside the nodule's consensus mask dilated by ``dilate_mm``. Chance level: the dilated
  mask's share of the cube (where a maximum dropped at random would land).
- Sanity (Adebayo et al., 2018): Spearman rank correlation between the map of the trained
  network and the map of the same architecture with random weights, per cube. A map that
  barely changes is an edge detector, not an explanation. A map that is zero everywhere has
  no ranking: such cubes are counted and left out of the mean.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy.stats import spearmanr

from lungcad.core.metrics import bootstrap_ci, dilate_mm, pointing

__all__ = ["dilate_mm", "pointing", "rank_correlation", "summarise"]


def rank_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman correlation of two maps' voxels; NaN when either map is constant."""
    a, b = np.ravel(a), np.ravel(b)
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(spearmanr(a, b).statistic)


def summarise(table: pd.DataFrame, n_boot: int, seed: int) -> dict[str, Any]:
    """Metrics of a per-cube table (columns ``patient_id``, ``is_nodule``, ``detected``,
    and per method ``{method}_hit``, ``{method}_chance``, ``{method}_random_hit``,
    ``{method}_rho``) with 95% patient-bootstrap CIs."""
    methods = sorted(c[: -len("_rho")] for c in table.columns if c.endswith("_rho"))
    nod = table[table["is_nodule"]]
    out: dict[str, Any] = {"n_cubes": int(len(table)), "n_nodule_cubes": int(len(nod))}
    for method in methods:
        hit = nod[f"{method}_hit"].to_numpy(float)
        rand_hit = nod[f"{method}_random_hit"].to_numpy(float)
        chance = nod[f"{method}_chance"].to_numpy(float)
        detected = nod["detected"].to_numpy(bool)
        rho = table[f"{method}_rho"].to_numpy(float)

        def stats(i: np.ndarray, hit=hit, rand_hit=rand_hit, detected=detected) -> dict:
            det = i[detected[i]]
            return {
                "pointing_game": float(hit[i].mean()) if len(i) else float("nan"),
                "pointing_game_random_weights": float(rand_hit[i].mean())
                if len(i)
                else float("nan"),
                "pointing_game_detected": float(hit[det].mean()) if len(det) else float("nan"),
            }

        def rho_stat(i: np.ndarray, rho=rho) -> dict:
            r = rho[i]
            r = r[~np.isnan(r)]
            return {"sanity_rank_correlation": float(r.mean()) if len(r) else float("nan")}

        point = {**stats(np.arange(len(nod))), **rho_stat(np.arange(len(table)))}
        cis = {
            **bootstrap_ci(nod["patient_id"].to_numpy(), stats, n_boot, seed),
            **bootstrap_ci(table["patient_id"].to_numpy(), rho_stat, n_boot, seed),
        }
        out[method] = {
            **point,
            "pointing_chance": float(chance.mean()) if len(chance) else float("nan"),
            "n_detected": int(detected.sum()),
            "n_rank_defined": int((~np.isnan(rho)).sum()),
            "ci95": {k: list(cis.get(k, (float("nan"), float("nan")))) for k in point},
        }
    return out
