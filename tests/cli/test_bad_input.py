"""The command line's answer to bad input: one ``error:`` line naming what is wrong, exit 2,
no traceback, and nothing from a crafted file runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from lungcad.cli.main import app

runner = CliRunner()


class _RunsCodeOnUnpickling:
    """What an attacker pickles: unpickling it calls os.system."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def crafted(tmp_path) -> dict[str, Path]:
    """A checkpoint that runs code when unpickled, and a foreign one (plain data, but no
    lungcad weights and settings)."""
    marker = tmp_path / "ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({"model": _RunsCodeOnUnpickling(marker), "config": {}}, hostile)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {"w": torch.zeros(2)}}, foreign)
    return {"hostile": hostile, "foreign": foreign, "marker": marker}


def _commands(model: Path, dataset: Path, splits: Path, slab: Path, out: Path) -> dict:
    data = ["--dataset", str(dataset), "--splits", str(splits)]
    return {
        "evaluate": ["evaluate", *data, "--model", str(model), "--out", str(out / "eval")],
        "explain": ["explain", *data, "--model", str(model), "--out", str(out / "cam")],
        "detect": ["detect", str(slab), "--model", str(model), "--out", str(out / "det")],
    }


@pytest.mark.parametrize("kind", ["hostile", "foreign"])
@pytest.mark.parametrize("command", ["evaluate", "explain", "detect", "train --resume"])
def test_a_crafted_checkpoint_is_one_error_line_and_runs_nothing(
    crafted, tiny_dataset, slab_root, tmp_path, command, kind, monkeypatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    dataset, splits = tiny_dataset
    if command == "train --resume":
        models = tmp_path / "models"
        (models / "checkpoints").mkdir(parents=True)
        (models / "checkpoints" / "last.pt").write_bytes(crafted[kind].read_bytes())
        params = tmp_path / "params.yaml"
        params.write_text(
            "extends: " + str(Path(__file__).resolve().parents[2] / "params.yaml") + "\n"
            "train:\n  epochs: 1\n  device: cpu\n"
        )
        args = [
            "train",
            "--dataset",
            str(dataset),
            "--splits",
            str(splits),
            "--out",
            str(models),
            "--params",
            str(params),
            "--resume",
            "--quiet",
        ]
    else:
        args = _commands(crafted[kind], dataset, splits, slab_root, tmp_path)[command]
    result = runner.invoke(app, args)
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    named = "last.pt" if command == "train --resume" else crafted[kind].name
    assert lines[-1].startswith("error: ") and named in lines[-1], result.output
    assert "Traceback" not in result.output
    assert not crafted["marker"].exists()  # the pickled os.system never ran


@pytest.mark.slow
def test_ordinary_commands_print_no_library_warnings(tmp_path) -> None:
    import subprocess
    import sys

    lungcad = str(Path(sys.executable).with_name("lungcad"))
    for args in (["--help"], ["params", "check"], ["train", "--params", str(tmp_path / "x")]):
        done = subprocess.run(
            [lungcad, *args],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert "Warning" not in done.stderr, done.stderr


@pytest.mark.parametrize("words", [["detect"], ["cv", "split"], ["benchmark", "score"]])
def test_an_unknown_option_is_a_usage_error_not_a_bug(words) -> None:
    import subprocess
    import sys

    done = subprocess.run(
        [sys.executable, "-m", "lungcad.cli.main", *words, "--no-such-option"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "No such option" in done.stderr and "unexpected" not in done.stdout + done.stderr
