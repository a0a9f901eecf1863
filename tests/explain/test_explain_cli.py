"""`lungcad explain` on a dataset: maps, pictures, checks; bad rows, models and layers."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import SimpleITK as sitk
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.core.dataset import load_cube_data
from lungcad.training.trainer import Trainer
from tests.conftest import TEST_PARAMS, make_tiny_dataset, tiny_train_config


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("explain")
    dataset, splits = make_tiny_dataset(tmp / "dataset", n_patients=6, n_test=2)
    result = Trainer(
        tiny_train_config(epochs=2), load_cube_data(dataset, splits), tmp / "m", progress=False
    ).fit()
    return tmp, dataset, splits, result.best_checkpoint


def _explain(dataset, splits, checkpoint, out, *extra):
    return CliRunner().invoke(
        app,
        [
            "explain",
            "--dataset",
            str(dataset),
            "--splits",
            str(splits),
            "--model",
            str(checkpoint),
            "--out",
            str(out),
            "--params",
            str(TEST_PARAMS),
            "--threshold",
            "0.5",
            "--quiet",
            *extra,
        ],
    )


def test_explain_writes_maps_pictures_and_checks(trained) -> None:
    tmp, dataset, splits, checkpoint = trained
    out = tmp / "report"
    result = _explain(dataset, splits, checkpoint, out)
    assert result.exit_code == 0, result.output
    assert "pointing game" in result.output
    index = pd.read_csv(dataset / "index.csv")
    test_ids = json.loads(splits.read_text())["test"]
    test = index[index["patient_id"].isin(test_ids)]
    table = pd.read_csv(out / "cubes.csv")
    assert sorted(table["cube_index"]) == sorted(test["cube_index"])
    nodules = test[test["label"] == 1]
    for row in test.itertuples():
        stem = f"cube{row.cube_index:05d}"
        assert (out / "figures" / f"{stem}.png").stat().st_size > 10_000
        image = sitk.ReadImage(str(out / "maps" / f"{stem}_detection.nii.gz"))
        assert image.GetSize() == (32, 32, 32)
        centre = image.TransformContinuousIndexToPhysicalPoint((15.5, 15.5, 15.5))
        np.testing.assert_allclose(centre, [row.center_x_mm, row.center_y_mm, row.center_z_mm])
        has_mal = (out / "maps" / f"{stem}_malignancy.nii.gz").exists()
        assert has_mal == (row.label == 1)
    doc = json.loads((out / "metrics.json").read_text())
    for target in ("detection", "malignancy"):
        assert doc[target]["n_nodule_cubes"] == len(nodules)
        for method in ("gradcam", "gradcampp"):
            m = doc[target][method]
            assert 0.0 <= m["pointing_game"] <= 1.0
            # Chance: the tiny nodules' dilated masks over the 32³ cube.
            assert 0.0 < m["pointing_chance"] < 0.2
            assert set(m["ci95"]) >= {"pointing_game", "sanity_rank_correlation"}
    hits = table.loc[table["is_nodule"], "detection_gradcam_hit"].astype(bool)
    assert doc["detection"]["gradcam"]["pointing_game"] == pytest.approx(hits.mean())


def test_bad_rows_are_skipped_and_reported(trained) -> None:
    tmp, dataset, splits, checkpoint = trained
    out = tmp / "some"
    result = _explain(dataset, splits, checkpoint, out, "--cubes", "0,2,999")
    assert result.exit_code == 0, result.output
    assert "1 requested cube(s) skipped" in result.output
    skipped = pd.read_csv(out / "skipped.csv")
    assert list(skipped["cube_index"]) == [999] and "no row 999" in skipped["reason"][0]
    assert sorted(pd.read_csv(out / "cubes.csv")["cube_index"]) == [0, 2]


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--layer", "backbone.layer7"], "layer 'backbone.layer7' is not a module"),
        (["--method", "saliency"], "explain.methods.0 = 'saliency'"),
    ],
)
def test_bad_layer_or_method_fails_clearly(trained, extra, message) -> None:
    tmp, dataset, splits, checkpoint = trained
    result = _explain(dataset, splits, checkpoint, tmp / "bad", *extra)
    assert result.exit_code == 2 and message in result.output


def test_unknown_model_reference_fails_clearly(trained, tmp_path, monkeypatch) -> None:
    tmp, dataset, splits, _ = trained
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    result = _explain(dataset, splits, tmp / "nowhere.pt", tmp / "bad")
    assert result.exit_code == 2 and "no such checkpoint file" in result.output
    result = _explain(dataset, splits, "models:/no-such-model@champion", tmp / "bad")
    assert result.exit_code == 2 and "models:/no-such-model@champion" in result.output
