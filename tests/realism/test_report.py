"""The realism report end to end: real slab against the phantom, and without a reference."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.config.schema import RandomiseConfig
from lungcad.phantom.writer import write_phantom
from lungcad.realism.report import TARGET_STATS, realism_report
from tests.conftest import SERIES_0001


@pytest.fixture(scope="module")
def report(slab_root, db, tmp_path_factory):
    phantom_root = tmp_path_factory.mktemp("phantom")
    write_phantom(
        phantom_root, n_scans=2, seed=3, progress=False, db=db, randomise=RandomiseConfig()
    )
    out = tmp_path_factory.mktemp("realism")
    return realism_report(slab_root, phantom_root, out, patches=120, progress=False), out


@pytest.mark.slow
def test_report_measures_real_phantom_and_the_paired_phantom(report) -> None:
    metrics, out = report
    scans = pd.read_csv(out / "scans.csv")
    assert sorted(scans["source"]) == ["paired", "phantom", "phantom", "real"]
    paired = scans[scans["source"] == "paired"].iloc[0]
    assert paired["series_uid"] == SERIES_0001 and paired["slice_mm"] == pytest.approx(2.5)
    assert json.loads((out / "metrics.json").read_text()) == json.loads(json.dumps(metrics))
    assert (out / "realism.png").stat().st_size > 20_000
    real = metrics["real"]
    assert real["vessel_fraction"] == pytest.approx(0.031, abs=0.001)
    assert real["parenchyma_hu_width"] == pytest.approx(166, abs=1)
    domain = metrics["domain_classifier"]
    assert domain["n_real_patches"] >= 100 and domain["n_phantom_patches"] >= 100
    assert 0.0 <= domain["gradient_boosting"] <= 1.0 and 0.0 <= domain["logistic_regression"] <= 1.0
    assert metrics["wasserstein_hu"]["paired"] >= 0


@pytest.mark.slow
def test_each_drawn_setting_is_measured_apart(report) -> None:
    metrics, _ = report
    per = metrics["per_setting"]
    assert set(per) == {"kernel", "background", "reconstruction"}
    for values in per.values():  # every measured phantom scan in one value of each setting
        assert sum(v["scans"] for v in values.values()) == 2
        for entry in values.values():
            assert set(entry["targets"]) == set(TARGET_STATS)
            assert ("domain_auc" in entry) == (entry["scans"] >= 2)


def test_the_phantom_of_the_real_scan_is_as_real_as_the_targets_ask(report) -> None:
    """The realism targets on the phantom of LIDC-IDRI-0001 (same grid, same slices)."""
    metrics, _ = report
    paired = metrics["targets"]["paired"]
    assert set(paired) == set(TARGET_STATS)
    for name, row in paired.items():
        assert row["within_tolerance"], f"{name}: phantom {row['phantom']:.3f} vs {row['real']:.3f}"


def test_cli_without_a_real_reference_says_so_and_writes_an_empty_report(tmp_path) -> None:
    result = CliRunner().invoke(
        app,
        [
            "data",
            "realism",
            "--real",
            str(tmp_path / "missing"),
            "--phantom",
            str(tmp_path),
            "--out",
            str(tmp_path / "out"),
            "--no-mlflow",
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "no real reference" in result.output
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert "no real reference" in metrics["skipped"]
    assert (tmp_path / "out" / "realism.png").exists()


def test_cli_with_an_empty_phantom_folder_is_a_clear_error(slab_root, tmp_path) -> None:
    (tmp_path / "empty").mkdir()
    result = CliRunner().invoke(
        app,
        [
            "data",
            "realism",
            "--real",
            str(slab_root),
            "--phantom",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "out"),
            "--no-mlflow",
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "contains no files" in result.output
