"""Request encodings of the serving client: what MLflow's scoring server will read back."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from lungcad.registry.client import as_cube_batch, encode_cubes, predict_remote


def _cubes(n: int = 2, size: int = 8) -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(-1024, 400, (n, size, size, size)).astype(np.int16)


def test_parquet_rows_are_the_flattened_cubes_in_zyx_order() -> None:
    cubes = _cubes()
    body, content_type = encode_cubes(cubes, "parquet")
    assert content_type == "application/vnd.apache.parquet"
    table = pd.read_parquet(io.BytesIO(body))  # what the scoring server does
    assert list(table.columns) == ["cube"] and len(table) == 2
    row = table["cube"][1]
    assert row.dtype == np.float32 and row.shape == (8**3,)
    np.testing.assert_array_equal(row.reshape(8, 8, 8), cubes[1].astype(np.float32))


def test_json_body_is_the_signature_tensor() -> None:
    cubes = _cubes()
    body, content_type = encode_cubes(cubes[:, None], "json")
    assert content_type == "application/json"
    inputs = np.asarray(json.loads(body)["inputs"])
    assert inputs.shape == (2, 1, 8, 8, 8)
    np.testing.assert_array_equal(inputs[:, 0], cubes)


def test_one_cube_is_a_batch_of_one_and_non_cubes_are_refused(tmp_path) -> None:
    assert as_cube_batch(np.zeros((8, 8, 8))).shape == (1, 8, 8, 8)
    np.save(tmp_path / "cubes.npy", _cubes(3)[:, None])
    mapped = np.load(tmp_path / "cubes.npy", mmap_mode="r")
    view = as_cube_batch(mapped)  # batches are read and converted one request at a time
    assert view.shape == (3, 8, 8, 8) and view.dtype == np.int16
    assert np.shares_memory(view, mapped)
    with pytest.raises(ValueError, match=r"\(2, 8, 8, 4\) are not \(N, D, D, D\)"):
        encode_cubes(np.zeros((2, 8, 8, 4)))
    with pytest.raises(ValueError, match="unknown encoding 'npz'"):
        encode_cubes(_cubes(), "npz")  # type: ignore[arg-type]


def test_an_unreachable_server_is_a_clear_error() -> None:
    from lungcad.registry.client import ServingError

    with pytest.raises(ServingError, match="cannot reach http://127.0.0.1:9.*lungcad serve"):
        predict_remote("http://127.0.0.1:9", _cubes(), timeout=5)
