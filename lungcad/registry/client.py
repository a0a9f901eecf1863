"""Client side of the served model: encode HU cubes as a request, post them, read the answer.

Two request encodings, both understood by MLflow's own scoring server (no custom server):

- ``json``: ``{"inputs": [...]}``, the cubes as nested lists, about 2 MB of text per cube.
- ``parquet`` (``Content-Type: application/vnd.apache.parquet``): one column ``cube``, one
  row per cube holding its 64³ float32 HU values flattened in (z, y, x) order, zstd
  compressed, about 0.3 MB per cube. MLflow reshapes each row to the signature's
  ``(1, 64, 64, 64)`` tensor before the model sees it.
"""

from __future__ import annotations

import contextlib
import io
import json
import urllib.error
import urllib.request
from typing import Literal

import numpy as np
import pandas as pd

from lungcad.errors import LungcadError
from lungcad.tracking.pyfunc import MAX_BATCH_CUBES

Encoding = Literal["json", "parquet"]
CONTENT_TYPES: dict[str, str] = {
    "json": "application/json",
    "parquet": "application/vnd.apache.parquet",
}


class ServingError(LungcadError, RuntimeError):
    """The server refused a request (HTTP status and its message) or could not be reached."""


def as_cube_batch(cubes: np.ndarray) -> np.ndarray:
    """``cubes`` viewed as (N, D, D, D), without a copy (a memory map stays one); accepts
    (N, 1, D, D, D) and (D, D, D) too.

    Any cube edge D is encoded; the server checks it against the model's (64 by default).
    """
    array = np.asarray(cubes)
    if array.ndim == 3:
        array = array[None]
    if array.ndim == 5 and array.shape[1] == 1:
        array = array[:, 0]
    if array.ndim != 4 or len(set(array.shape[1:])) != 1:
        raise ValueError(
            f"cubes of shape {array.shape} are not (N, D, D, D) cubes:"
            " send 1 mm HU cubes as written by `lungcad data build` (D = 64)"
        )
    return array


def encode_cubes(cubes: np.ndarray, encoding: Encoding = "parquet") -> tuple[bytes, str]:
    """The request body and its Content-Type for a batch of HU cubes."""
    batch = np.asarray(as_cube_batch(cubes), dtype=np.float32)
    if encoding == "json":
        return json.dumps({"inputs": batch[:, None].tolist()}).encode(), CONTENT_TYPES["json"]
    if encoding == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        flat = pa.array(batch.reshape(-1), type=pa.float32())
        column = pa.FixedSizeListArray.from_arrays(flat, int(np.prod(batch.shape[1:])))
        buffer = io.BytesIO()
        pq.write_table(pa.table({"cube": column}), buffer, compression="zstd")
        return buffer.getvalue(), CONTENT_TYPES["parquet"]
    raise ValueError(f"unknown encoding {encoding!r}: use 'json' or 'parquet'")


def post(url: str, body: bytes, content_type: str, timeout: float = 300.0) -> pd.DataFrame:
    """POST one request to ``<url>/invocations``; the predictions as a table."""
    request = urllib.request.Request(
        url.rstrip("/") + "/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.loads(response.read())
    except urllib.error.HTTPError as err:
        detail = err.read().decode(errors="replace")
        with contextlib.suppress(ValueError, AttributeError):  # MLflow's {"message": ...}
            detail = json.loads(detail).get("message", detail)
        raise ServingError(f"{url} answered HTTP {err.code}: {detail}") from err
    except OSError as err:
        raise ServingError(
            f"cannot reach {url}: {err}; is `lungcad serve` running on that port?"
        ) from err
    return pd.DataFrame(answer["predictions"])


def predict_remote(
    url: str,
    cubes: np.ndarray,
    encoding: Encoding = "parquet",
    batch_size: int = 16,
    timeout: float = 300.0,
    progress: bool = False,
) -> pd.DataFrame:
    """Predictions of the model served at ``url`` for every cube, ``batch_size`` per request."""
    from tqdm.auto import tqdm

    if not 1 <= batch_size <= MAX_BATCH_CUBES:
        raise ValueError(
            f"batch_size must be 1 to {MAX_BATCH_CUBES} (the server's maximum), got {batch_size}"
        )
    batch = as_cube_batch(cubes)
    frames = []
    starts = range(0, len(batch), batch_size)
    for start in tqdm(starts, desc="requests", unit="req", disable=not progress):
        body, content_type = encode_cubes(batch[start : start + batch_size], encoding)
        frames.append(post(url, body, content_type, timeout))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
