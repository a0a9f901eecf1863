"""Checkpoints are plain data: a file crafted to run code on loading is refused, unrun."""

from __future__ import annotations

import os

import pytest
import torch

from lungcad.core.dataset import load_cube_data
from lungcad.core.model.checkpoint import UnsafeCheckpointError, load_checkpoint
from lungcad.core.model.loading import load_model
from lungcad.training.trainer import Trainer
from tests.conftest import tiny_train_config


class _RunsCodeOnUnpickling:
    """What an attacker pickles: unpickling it calls os.system."""

    def __init__(self, marker) -> None:
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.fixture
def trained(tiny_dataset, tmp_path):
    data = load_cube_data(*tiny_dataset)
    return Trainer(tiny_train_config(epochs=1), data, tmp_path / "m", progress=False).fit()


def test_a_checkpoint_that_runs_code_is_refused_and_nothing_runs(
    trained, tiny_dataset, tmp_path
) -> None:
    state = torch.load(trained.best_checkpoint, weights_only=True)
    marker = tmp_path / "code-ran"
    hostile = tmp_path / "hostile.pt"
    torch.save({**state, "extra": {"payload": _RunsCodeOnUnpickling(marker)}}, hostile)
    with pytest.raises(
        UnsafeCheckpointError, match=r"hostile\.pt is not a plain lungcad.*run code"
    ):
        load_model(hostile)
    with pytest.raises(UnsafeCheckpointError):
        load_checkpoint(hostile)  # what resume and evaluate read through
    trained.last_checkpoint.write_bytes(hostile.read_bytes())  # planted where resume looks
    data = load_cube_data(*tiny_dataset)
    with pytest.raises(UnsafeCheckpointError, match=r"last\.pt is not a plain"):
        Trainer(tiny_train_config(epochs=2), data, tmp_path / "m", progress=False).fit(resume=True)
    assert not marker.exists()
    torch.load(hostile, weights_only=False)  # the file is a real exploit: unpickling runs it
    assert marker.exists()


def test_lungcad_checkpoints_load_weights_only(trained) -> None:
    for path in (trained.best_checkpoint, trained.last_checkpoint):
        state = torch.load(path, weights_only=True)  # no pickled object beyond plain data
        assert isinstance(state["torch_version"], str) and state["epochs_done"] == 1
    model, config = load_model(trained.best_checkpoint)
    assert config == tiny_train_config(epochs=1)
    # Checkpoints of earlier lungcad versions kept torch.__version__ as a TorchVersion.
    older = trained.best_checkpoint.with_name("older.pt")
    state = torch.load(trained.best_checkpoint, weights_only=True)
    torch.save({**state, "torch_version": torch.__version__}, older)
    assert load_model(older)[1] == config


def test_truncated_or_foreign_files_get_a_clear_error(trained, tmp_path) -> None:
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(trained.best_checkpoint.read_bytes()[:5000])
    with pytest.raises(UnsafeCheckpointError, match="truncated.pt is not a readable"):
        load_model(truncated)
    foreign = tmp_path / "weights.pt"
    torch.save({"conv.weight": torch.zeros(2)}, foreign)
    with pytest.raises(UnsafeCheckpointError, match="not a lungcad checkpoint"):
        load_model(foreign)
    with pytest.raises(FileNotFoundError, match="nowhere.pt does not exist"):
        load_model(tmp_path / "nowhere.pt")
