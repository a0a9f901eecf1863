"""The trained model as an MLflow pyfunc: HU cubes in, nodule probability and malignancy out."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, Schema, TensorSpec

CUBE_SHAPE = (1, 64, 64, 64)


def model_signature(cube_size: int = 64) -> ModelSignature:
    """Input: float32 (N, 1, D, D, D) HU cubes; output: nodule_prob, malignancy per cube."""
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, cube_size, cube_size, cube_size))]),
        outputs=Schema([ColSpec("double", "nodule_prob"), ColSpec("double", "malignancy")]),
    )


class LungcadPyfunc(PythonModel):
    """Loads a lungcad checkpoint from the model's artifacts and predicts on HU cubes."""

    def load_context(self, context) -> None:
        import torch

        from lungcad.training.trainer import load_model

        self.torch = torch
        self.model, self.config = load_model(context.artifacts["checkpoint"], "cpu")

    def predict(self, context, model_input, params=None) -> pd.DataFrame:
        from lungcad.training.predict import predict_hu_cubes

        if isinstance(model_input, dict):  # a named-tensor payload: {"name": array}
            model_input = next(iter(model_input.values()))
        cubes = np.asarray(model_input, dtype=np.float32)
        prob, mal = predict_hu_cubes(
            self.model, cubes, self.config.window_hu, self.torch.device("cpu")
        )
        return pd.DataFrame({"nodule_prob": prob.astype(float), "malignancy": mal.astype(float)})


def log_pyfunc_model(checkpoint: str | Path, input_example: np.ndarray, name: str = "model"):
    """Log the checkpoint as a pyfunc model of the active run; returns its ModelInfo."""
    import mlflow

    import lungcad

    return mlflow.pyfunc.log_model(
        name=name,
        python_model=LungcadPyfunc(),
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(Path(lungcad.__file__).parent)],
        signature=model_signature(input_example.shape[-1]),
        input_example=input_example.astype(np.float32),
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "monai", "numpy", "pandas", "scipy", "scikit-learn", "mlflow"]
    return [f"{p}=={version(p)}" for p in pkgs]
