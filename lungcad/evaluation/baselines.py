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
    y = train["malignancy_mean"].to_numpy(float)
    out = {}
    for name, cols in (("semantic_oracle", SEMANTIC_FEATURES), ("diameter_only", ["diameter_mm"])):
        model = GradientBoostingRegressor(
            n_estimators=150, max_depth=2, learning_rate=0.05, subsample=0.8, random_state=seed
        )
        model.fit(train[cols].to_numpy(float), y)
        out[name] = np.clip(model.predict(test[cols].to_numpy(float)), 1.0, 5.0)
    return out
