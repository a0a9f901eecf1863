"""`lungcad train` killed with SIGKILL (no exception handler runs) resumes to the same
weights as an uninterrupted run; a half-written checkpoint left by a kill is never read."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from lungcad.core.model.checkpoint import load_checkpoint
from tests.conftest import make_tiny_dataset, tiny_train_config

EPOCHS = 6


def _train(workdir: Path, dataset: tuple[Path, Path], out: str, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lungcad.cli.main", "train", "--dataset", str(dataset[0])]
    cmd += ["--splits", str(dataset[1]), "--out", out, "--params", "params.yaml", "--quiet"]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    return subprocess.Popen(
        [*cmd, *extra], cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _finish(proc: subprocess.Popen) -> None:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output.decode()[-3000:]


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("kill")
    dataset = make_tiny_dataset(workdir / "dataset", n_patients=8)
    config = tiny_train_config(epochs=EPOCHS, model={"widths": [8, 16, 32, 32]})
    (workdir / "params.yaml").write_text(yaml.safe_dump({"train": config.to_dict()}))
    _finish(_train(workdir, dataset, "straight"))
    return workdir, dataset


def _weights(path: Path) -> dict[str, torch.Tensor]:
    return load_checkpoint(path)["model"]


def _kill_after_first_checkpoint(proc: subprocess.Popen, last: Path) -> int:
    """SIGKILL shortly after the first epoch's checkpoint: inside the next epoch."""
    deadline = time.monotonic() + 300
    while not last.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended early"
        time.sleep(0.02)
    time.sleep(0.3)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    done = load_checkpoint(last)["epochs_done"]
    assert 1 <= done < EPOCHS  # killed before the end
    return done


def _assert_same_weights(a: Path, b: Path) -> None:
    first, second = _weights(a), _weights(b)
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key


def test_sigkill_mid_training_then_resume_gives_the_uninterrupted_weights(setup) -> None:
    workdir, dataset = setup
    last = workdir / "killed" / "checkpoints" / "last.pt"
    _kill_after_first_checkpoint(_train(workdir, dataset, "killed"), last)
    _finish(_train(workdir, dataset, "killed", "--resume"))
    _assert_same_weights(workdir / "straight" / "checkpoints" / "last.pt", last)
    # The killed run's MLflow run was continued and closed, not left RUNNING.
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lungcad").experiment_id])
    assert sorted(r.info.status for r in runs) == ["FINISHED", "FINISHED"]


def test_a_checkpoint_half_written_when_killed_is_never_read(setup) -> None:
    workdir, dataset = setup
    ckpt = workdir / "torn" / "checkpoints"
    _kill_after_first_checkpoint(_train(workdir, dataset, "torn"), ckpt / "last.pt")
    # What SIGKILL inside `save_checkpoint` leaves: a partial temporary file beside the
    # last complete checkpoint (the rename to last.pt never happened).
    (ckpt / "last.pt.tmp").write_bytes((ckpt / "last.pt").read_bytes()[:4096])
    _finish(_train(workdir, dataset, "torn", "--resume"))
    assert load_checkpoint(ckpt / "last.pt")["epochs_done"] == EPOCHS
    assert not (ckpt / "last.pt.tmp").exists()  # replaced by the next complete write
    _assert_same_weights(workdir / "straight" / "checkpoints" / "last.pt", ckpt / "last.pt")
