from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lungcad import __version__
from lungcad.cli.main import app

runner = CliRunner()


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0 and __version__ in result.output


@pytest.mark.parametrize(
    "command",
    [[], ["data"], ["data", "phantom"], ["data", "build"], ["data", "split"], ["data", "montage"]],
)
def test_every_command_has_help(command) -> None:
    result = runner.invoke(app, [*command, "--help"])
    assert result.exit_code == 0 and "Usage" in result.output


def test_wrong_root_is_a_clear_error_with_nonzero_exit(tmp_path) -> None:
    result = runner.invoke(
        app,
        [
            "data",
            "build",
            "--raw",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "does not exist" in result.output and "nope" in result.output
    (tmp_path / "empty").mkdir()
    result = runner.invoke(
        app,
        [
            "data",
            "build",
            "--raw",
            str(tmp_path / "empty"),
            "--out",
            str(tmp_path / "out"),
            "--quiet",
        ],
    )
    assert result.exit_code == 2 and "contains no files" in result.output


def test_build_split_and_montage_on_the_real_slab(tmp_path, slab_root) -> None:
    out = tmp_path / "processed"
    params = tmp_path / "params.yaml"
    params.write_text(
        "preprocess:\n  min_readers: 3\n  negatives_per_positive: 2.0\n"
        "  candidate_negative_fraction: 0.0\n  hard_negative_fraction: 0.5\n"
    )
    result = runner.invoke(
        app,
        [
            "data",
            "build",
            "--raw",
            str(slab_root),
            "--out",
            str(out),
            "--params",
            str(params),
            "--quiet",
        ],
    )
    assert result.exit_code == 0, result.output
    assert "1 cubes" in result.output and "skipped" in result.output
    # One patient cannot be split three ways: a clear error, not a traceback.
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            "--index",
            str(out / "index.csv"),
            "--out",
            str(tmp_path / "splits.json"),
        ],
    )
    assert result.exit_code == 2 and "cannot fill" in result.output
    result = runner.invoke(
        app,
        [
            "data",
            "split",
            "--index",
            str(out / "index.csv"),
            "--out",
            str(tmp_path / "splits.json"),
            "--val",
            "0",
            "--test",
            "0",
        ],
    )
    assert result.exit_code == 0, result.output
    assert json.loads((tmp_path / "splits.json").read_text())["train"] == ["LIDC-IDRI-0001"]
    result = runner.invoke(
        app, ["data", "montage", "--dataset", str(out), "--out", str(tmp_path / "m.png")]
    )
    assert result.exit_code == 0 and (tmp_path / "m.png").stat().st_size > 5000


def test_bad_params_file_names_the_parameter(tmp_path, slab_root) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("preprocess:\n  cube_sise: 64\n")
    result = runner.invoke(
        app,
        [
            "data",
            "build",
            "--raw",
            str(slab_root),
            "--out",
            str(tmp_path / "o"),
            "--params",
            str(params),
            "--quiet",
        ],
    )
    assert result.exit_code == 2 and "cube_sise" in result.output
    assert not pd.io.common.file_exists(tmp_path / "o" / "index.csv")


def test_apply_params_merges_keeps_comments_and_refuses_a_bad_value(tmp_path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text((Path(__file__).resolve().parents[2] / "params.yaml").read_text())
    best = tmp_path / "best.yaml"
    best.write_text("train:\n  lr: 0.0042\n  lambda_mal: 0.8\n")
    result = runner.invoke(app, ["apply-params", str(best), "--params", str(params)])
    assert result.exit_code == 0, result.output
    text = params.read_text()
    assert "lr: 0.0042" in text and "# One section per stage" in text
    from lungcad.config import load_params

    assert load_params(params).train.lambda_mal == 0.8
    before = params.read_text()
    best.write_text("train:\n  lr: fast\n")
    result = runner.invoke(app, ["apply-params", str(best), "--params", str(params)])
    assert result.exit_code == 2 and "train.lr = 'fast'" in result.output
    assert params.read_text() == before  # nothing written


@pytest.mark.parametrize("content", ["", "not json", '{"run": "abc"}', '["abc"]', '{"run_id": 7}'])
@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--model", "nope.pt"],
        ["explain", "--model", "nope.pt"],
        ["evaluate-detection", "--detections", "nope"],
    ],
)
def test_a_run_info_that_is_not_a_train_run_is_one_clear_line(
    tmp_path, monkeypatch, command, content
) -> None:
    monkeypatch.chdir(tmp_path)
    run_info = tmp_path / "train_run.json"
    run_info.write_text(content)
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    result = runner.invoke(app, [*command, "--params", str(params), "--run-info", str(run_info)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: --run-info")
    assert str(run_info) in lines[0] and "Traceback" not in result.output


def test_promote_refuses_detection_metrics_that_are_not_json_in_one_line(
    tmp_path, monkeypatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the tracking database of this test: ./mlflow.db
    metrics, run_info = tmp_path / "metrics.json", tmp_path / "train_run.json"
    metrics.write_text("cpm: 0.9")
    run_info.write_text('{"run_id": "abc"}')
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    args = ["promote", "--params", str(params), "--detection-metrics", str(metrics)]
    result = runner.invoke(app, [*args, "--run-info", str(run_info)])
    assert result.exit_code == 2, result.output
    # (after MLflow's notes on creating the database) one line naming the file
    errors = [line for line in result.output.splitlines() if line.startswith("error:")]
    assert errors == [errors[-1]] and errors[-1].startswith(f"error: --detection-metrics {metrics}")
    assert "Traceback" not in result.output


@pytest.mark.parametrize(
    "content", ["", "{}", '{"threshold": 0.5}', '{"threshold": {"value": "x"}}']
)
def test_explain_refuses_eval_metrics_without_a_threshold_in_one_line(
    tmp_path, monkeypatch, content
) -> None:
    monkeypatch.chdir(tmp_path)
    metrics = tmp_path / "metrics.json"
    metrics.write_text(content)
    params = Path(__file__).resolve().parents[2] / "params.yaml"
    args = ["explain", "--model", "nope.pt", "--params", str(params)]
    result = runner.invoke(app, [*args, "--eval-metrics", str(metrics)])
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: --eval-metrics {metrics}")
