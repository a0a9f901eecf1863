"""The typed configuration: params.yaml is the schema's defaults, bad values are one line
naming the key, and every command refuses a missing or bad params file cleanly."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.config import ConfigError, Params, load_params
from lungcad.config.reference import configuration_markdown

REPO = Path(__file__).resolve().parents[2]
runner = CliRunner()


def test_params_yaml_holds_exactly_the_schema_defaults() -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    assert load_params(REPO / "params.yaml") == Params()
    # every key of the schema is written out, none is extra
    assert Params.model_validate(raw).model_dump() == Params().model_dump()
    assert set(raw) == set(Params.model_fields)


@pytest.mark.parametrize(
    ("text", "key", "expected"),
    [
        ("train: {lr: abc}", "train.lr", "valid number"),
        ('train: {model: {attributes: "false"}}', "train.model.attributes", "valid boolean"),
        ("train: {batch_size: 16.5}", "train.batch_size", "valid integer"),
        ('train: {deterministic: "no"}', "train.deterministic", "valid boolean"),
        ("detect: {threshold: 1.5}", "detect.threshold", "less than or equal to 1"),
        (
            "candidates: {candidate_min_response: 30}",
            "candidates.candidate_min_response",
            "unknown",
        ),
        ("train: {det_loss: hinge}", "train.det_loss", "'bce' or 'focal'"),
        ("preprocess: {cube_sise: 64}", "preprocess.cube_sise", "unknown"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_key(tmp_path, text, key, expected) -> None:
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert key in message and expected in message and "\n" not in message
    result = runner.invoke(app, ["params", "check", str(path)])
    assert (
        result.exit_code == 2
        and result.exception is None
        or isinstance(result.exception, SystemExit)
    )
    assert result.output.startswith("error: ") and key in result.output
    assert "Traceback" not in result.output


def test_yaml_11_exponent_floats_are_numbers(tmp_path) -> None:
    path = tmp_path / "params.yaml"
    path.write_text("train:\n  lr: 2e-3\n  weight_decay: 1E-5\n")
    config = load_params(path).train
    assert config.lr == 0.002 and config.weight_decay == 1e-5


def test_an_overlay_changes_only_its_keys() -> None:
    fast = load_params(REPO / "configs" / "real-lidc-gpu-fast.yaml")
    reference = load_params(REPO / "configs" / "real-lidc-gpu.yaml")
    assert fast.train.batch_size == 64 and reference.train.batch_size == 12
    assert fast.train.model.blocks == reference.train.model.blocks == (2, 2, 2, 2)
    assert fast.preprocess == Params().preprocess  # from params.yaml through extends:


@pytest.mark.parametrize(
    "command",
    [
        ["train"],
        ["evaluate"],
        ["explain"],
        ["tune"],
        ["promote"],
        ["detect", "data/raw"],
        ["evaluate-detection"],
        ["data", "build", "--raw", "data/raw"],
        ["data", "split"],
        ["data", "phantom"],
        ["data", "realism"],
        ["params", "check"],
    ],
)
def test_every_command_refuses_a_missing_or_bad_params_file(tmp_path, command) -> None:
    missing = tmp_path / "no-such.yaml"
    args = (
        [*command, str(missing)] if command[0] == "params" else [*command, "--params", str(missing)]
    )
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: params file") and "Traceback" not in result.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  lr: fast\n")
    args = [*command, str(bad)] if command[0] == "params" else [*command, "--params", str(bad)]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "train.lr = 'fast'" in result.output, result.output


def test_the_configuration_page_is_generated_from_the_schema() -> None:
    page = (REPO / "docs" / "configuration.md").read_text()
    assert page == configuration_markdown(), (
        "docs/configuration.md is out of date: python -m lungcad.config.reference > "
        "docs/configuration.md"
    )


@pytest.mark.parametrize("folds", [[0], [1, 2], [0, 2, 1], []])
def test_cv_folds_must_number_two_or_more_folds_from_zero(folds) -> None:
    from lungcad.config import CvConfig

    with pytest.raises(ValueError, match="fold numbers 0 to K-1"):
        CvConfig(folds=folds)
    assert CvConfig(folds=[0, 1, 2]).folds == [0, 1, 2]
