"""Reference points for the malignancy head: the readers' own semantic ratings, and size.

The "semantic oracle" is gradient boosting on the readers' mean ratings of the eight other
characteristics plus diameter, trained on the train-split nodules: it shows how much of the
malignancy signal a model can reach from what radiologists describe. "Diameter only" is
the classic size rule. Both predict the mean malignancy rating of a nodule.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.ensemble import GradientBoostingRegressor

from lungcad.core.annotations.lidc_db import CHARACTERISTICS

SEMANTIC_FEATURES = [f"mean_{c}" for c in CHARACTERISTICS if c != "malignancy"] + ["diameter_mm"]

#: Figures the project was specified against, measured on real LIDC-IDRI (not on the phantom).
REFERENCE_REAL_LIDC = {
    "detection": {
        "auc": 0.906,
        "accuracy": 0.859,
        "precision": 0.777,
        "recall": 0.979,
        "f1": 0.867,
    },
    "malignancy": {"mae": 0.72, "rmse": 1.11, "pearson": 0.686},
}


def fit_predict_baselines(
    train: pd.DataFrame, test: pd.DataFrame, seed: int = 0
) -> dict[str, np.ndarray]:
    """Malignancy predictions on ``test`` nodules from the two baselines, fit on ``train``.

    Args:
        train, test: index rows of nodule cubes (label 1) of each split.
        seed: seeds the gradient boosting.

    Returns:
        {"semantic_oracle": (n_test,), "diameter_only": (n_test,)} predictions.
    """
    out = {}
    for name, cols in (("semantic_oracle", SEMANTIC_FEATURES), ("diameter_only", ["diameter_mm"])):
        model = _fit(train, cols, seed)
        out[name] = np.clip(model.predict(test[cols].to_numpy(float)), 1.0, 5.0)
    return out


def _fit(train: pd.DataFrame, cols: list[str], seed: int) -> GradientBoostingRegressor:
    model = GradientBoostingRegressor(
        n_estimators=150, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=seed
    )
    return model.fit(train[cols].to_numpy(float), train["malignancy_mean"].to_numpy(float))


def diameter_only_model(train: pd.DataFrame, seed: int = 0) -> GradientBoostingRegressor:
    """The diameter-only baseline fit on ``train`` nodules: ``predict`` takes an (n, 1)
    array of diameters in mm (clip its output to 1-5)."""
    return _fit(train, ["diameter_mm"], seed)
