"""The trained model as an MLflow pyfunc: HU cubes in, nodule probability and malignancy out
(and, for a model with the segmentation head, the nodule outlined at each cube's centre in
compact form: its sizes, type and Lung-RADS category).

Input is validated before inference (shape, dtype, finiteness, non-empty batch); a bad
request raises an MlflowException with INVALID_PARAMETER_VALUE, which MLflow's scoring
server answers with HTTP 400 and the message, and keeps serving.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature
from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE
from mlflow.pyfunc import PythonModel
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema, TensorSpec

from lungcad.config import ServeLimits

#: The largest batch one request to ``lungcad serve`` may hold by default
#: (``limits.serve.max_cubes``: about 32 MB of float32 64³ cubes); larger batches get a 400
#: that says so, and clients split their cubes into batches (`lungcad query`). The server
#: sets it through ``MAX_CUBES_ENV``; in-process ``predict`` (a notebook, a batch job) takes
#: any number and batches internally.
MAX_BATCH_CUBES = ServeLimits().max_cubes
MAX_CUBES_ENV = "LUNGCAD_SERVE_MAX_CUBES"
#: ``params: {"explain": true}`` adds ``detection_map``: each cube's Grad-CAM map of the
#: detection logit averaged over blocks of this many voxels per axis (16³ values for a 64³
#: cube, block (i, j, k) = voxels 4i..4i+3 along z, y, x), in [0, 1], 3 decimals.
EXPLAIN_POOL = 4


def model_signature(
    cube_size: int = 64,
    with_decision: bool = False,
    output_names: tuple[str, ...] = (),
    findings: bool = False,
) -> ModelSignature:
    """Input: float32 (N, 1, D, D, D) HU cubes; output per cube: nodule_prob, malignancy
    (and the 0/1 ``nodule`` decision when the model carries a threshold, and the network's
    optional outputs ``output_names`` as ``attr_<name>``, the finding record's attribute
    columns: the predicted attributes, each on its LIDC scale, and the readers' predicted
    malignancy sd; with ``findings`` the outlined nodule's ``MEASURE`` fields of the finding
    record, typed as the record types them)."""
    from dataclasses import fields

    from lungcad.core.findings.cube import CUBE_FINDING_COLUMNS
    from lungcad.core.findings.record import Finding, attribute_columns

    outputs = [ColSpec("double", "nodule_prob"), ColSpec("double", "malignancy")]
    if with_decision:
        outputs.append(ColSpec("long", "nodule"))
    outputs += [ColSpec("double", name) for name in attribute_columns(output_names)]
    if findings:
        kinds = {f.name: f.type for f in fields(Finding)}
        outputs += [
            ColSpec("string" if kinds[name] == "str" else "double", name)
            for name in CUBE_FINDING_COLUMNS
        ]
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, 1, cube_size, cube_size, cube_size))]),
        outputs=Schema(outputs),
        params=ParamSchema([ParamSpec("explain", "boolean", False)]),
    )


def _bad_request(message: str) -> MlflowException:
    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def validate_cubes(model_input: Any, cube_size: int, max_cubes: int | None = None) -> np.ndarray:
    """The request as a float32 (N, 1, D, D, D) array, or a 400-class MlflowException
    (``max_cubes``: the most cubes one request may hold; None: any number)."""
    if isinstance(model_input, dict):  # a named-tensor payload: {"name": array}
        if len(model_input) != 1:
            raise _bad_request("send one tensor of HU cubes, shape (N, 1, D, D, D)")
        model_input = next(iter(model_input.values()))
    if isinstance(model_input, pd.DataFrame):
        raise _bad_request("send HU cubes as a tensor ('inputs'), not as a table")
    try:
        cubes = np.asarray(model_input, dtype=np.float32)
    except (TypeError, ValueError) as exc:
        raise _bad_request(f"input is not a numeric array of HU cubes: {exc}") from exc
    expected = (1, cube_size, cube_size, cube_size)
    if cubes.ndim == 4 and cubes.shape[1:] == expected[1:]:
        cubes = cubes[:, None]
    if cubes.ndim != 5 or cubes.shape[1:] != expected:
        raise _bad_request(f"input shape {cubes.shape} is not (N, {', '.join(map(str, expected))})")
    if cubes.shape[0] == 0:
        raise _bad_request("empty batch: send at least one cube")
    if max_cubes is not None and cubes.shape[0] > max_cubes:
        raise _bad_request(
            f"batch of {cubes.shape[0]} cubes is over the maximum of {max_cubes} per "
            "request; split it into smaller requests"
        )
    if not np.isfinite(cubes).all():
        raise _bad_request("input holds NaN or infinite values; send finite HU values")
    return cubes


class LungcadPyfunc(PythonModel):
    """Loads a lungcad checkpoint from the model's artifacts and predicts on HU cubes."""

    def load_context(self, context) -> None:
        import torch

        from lungcad.core.model.loading import load, resolve_amp

        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        loaded = load(context.artifacts["checkpoint"], self.device)
        self.model, self.config = loaded.network, loaded.config
        self.spacing_mm = float(loaded.cut.preprocess.spacing_mm)
        self.amp_dtype = resolve_amp(self.config.amp, self.device)
        config = context.model_config or {}
        self.threshold = float(config["threshold"]) if "threshold" in config else None
        self.cube_size = int(config.get("cube_size", 64))
        limit = os.environ.get(MAX_CUBES_ENV)
        self.max_cubes = int(limit) if limit else None
        self._explainer = None  # built on the first request that asks for maps

    def predict(self, context, model_input: np.ndarray, params=None) -> pd.DataFrame:
        # np.ndarray: the tensor of the signature; MLflow infers no schema from it (lungcad
        # validates the request itself, validate_cubes) and prints no type-hint advice.
        from lungcad.core.model.predict import predict_hu_cubes

        cubes = validate_cubes(model_input, self.cube_size, self.max_cubes)
        prob, mal, attrs, masks = predict_hu_cubes(
            self.model,
            cubes,
            self.config.window_hu,
            self.device,
            self.config.eval_batch_size,
            self.amp_dtype,
            named_outputs=True,
            masks=True,
        )
        out = pd.DataFrame({"nodule_prob": prob.astype(float), "malignancy": mal.astype(float)})
        if self.threshold is not None:
            out["nodule"] = (prob >= self.threshold).astype(np.int64)
        from lungcad.core.findings.record import attribute_columns

        for i, name in enumerate(attribute_columns(self.model.output_names)):
            out[name] = attrs[:, i].astype(float)  # on their LIDC scales
        if masks is not None:  # the nodule outlined at each cube's centre, compact
            from lungcad.core.findings.cube import cube_finding

            texture = out["attr_texture"].to_numpy() if "attr_texture" in out else [None] * len(out)
            rows = [
                cube_finding(m, c[0], self.spacing_mm, t) for m, c, t in zip(masks, cubes, texture)
            ]
            out = pd.concat([out, pd.DataFrame(rows, index=out.index)], axis=1)
        if (params or {}).get("explain"):
            out["detection_map"] = self._maps(cubes)
        return out

    def _maps(self, cubes: np.ndarray) -> list:
        """Pooled detection maps (``EXPLAIN_POOL``) as nested lists, one per cube."""
        import torch.nn.functional as F
        from torch import from_numpy

        from lungcad.core.model.cam import CubeExplainer

        if self._explainer is None:
            self._explainer = CubeExplainer(self.model, self.config.window_hu, device=self.device)
        maps = from_numpy(self._explainer(cubes))[:, None]
        pooled = F.avg_pool3d(maps, EXPLAIN_POOL)[:, 0].numpy().round(3)
        return [m.tolist() for m in pooled]


def log_pyfunc_model(
    checkpoint: str | Path,
    input_example: np.ndarray,
    name: str = "model",
    model_config: dict[str, Any] | None = None,
):
    """Log the checkpoint as a pyfunc model of the active run; returns its ModelInfo.

    The model is logged from code (``pyfunc_entry.py``), not as a pickled Python object,
    and its weights are a plain checkpoint read with weights-only loading.
    """
    import mlflow

    import lungcad
    from lungcad.core.model.checkpoint import load_checkpoint
    from lungcad.core.model.loading import checkpoint_train_config
    from lungcad.core.model.network import output_names

    cube_size = int(input_example.shape[-1])
    config = {"cube_size": cube_size, **(model_config or {})}
    trained = checkpoint_train_config(load_checkpoint(checkpoint), f"checkpoint {checkpoint}")
    names = output_names(trained.model)
    return mlflow.pyfunc.log_model(
        name=name,
        python_model=str(Path(__file__).with_name("pyfunc_entry.py")),  # no pickled object
        artifacts={"checkpoint": str(checkpoint)},
        code_paths=[str(Path(lungcad.__file__).parent)],
        signature=model_signature(
            cube_size,
            with_decision="threshold" in config,
            output_names=names,
            findings=trained.model.segmentation,
        ),
        input_example=input_example.astype(np.float32),
        model_config=config,
        pip_requirements=_requirements(),
    )


def _requirements() -> list[str]:
    from importlib.metadata import version

    pkgs = ["torch", "monai", "numpy", "pandas", "scipy", "scikit-learn", "mlflow"]
    return [f"{p}=={version(p)}" for p in pkgs]
