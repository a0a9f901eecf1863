"""Distributed training: two gloo processes on the CPU under torchrun (`lungcad train --nproc 2`).

Validation gathered over the ranks equals one process's validation of the same weights; only
rank 0 opens the MLflow run; a rank killed mid-training stops the job with that rank named,
and `--resume` ends with the weights of an uninterrupted distributed run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient

from lungcad.config import TrainConfig
from lungcad.core.dataset import load_cube_data
from lungcad.core.model.checkpoint import load_checkpoint
from lungcad.distributed.ddp import DistContext, gather_predictions, shard_order
from lungcad.training.trainer import Trainer
from tests.conftest import make_tiny_dataset, tiny_train_config

EPOCHS = 4


def _train(workdir: Path, out: str, *extra: str, nproc: int = 2) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lungcad.cli.main", "train", "--dataset", "dataset"]
    cmd += ["--splits", "dataset/splits.json", "--out", out, "--params", "params.yaml"]
    cmd += ["--nproc", str(nproc), "--quiet", *extra]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{workdir}/mlflow.db"}
    return subprocess.Popen(
        cmd, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output.decode()[-3000:]
    return output.decode()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("ddp")
    # 3 cubes a patient and 3 val patients: nodules and negatives on both ranks, so that a
    # rank validating with its own BatchNorm statistics would change the gathered metrics.
    make_tiny_dataset(workdir / "dataset", n_patients=10, per_patient=3, n_val=3)
    config = tiny_train_config(epochs=EPOCHS, model={"widths": [8, 16, 32, 32]})
    (workdir / "params.yaml").write_text(yaml.safe_dump({"train": config.to_dict()}))
    output = _finish(_train(workdir, "straight"))
    return workdir, config, output


def test_shards_cover_every_row_and_change_every_epoch() -> None:
    ranks = [DistContext(r, 3) for r in range(3)]
    epoch0 = [shard_order(10, 7, 0, c) for c in ranks]
    assert {len(s) for s in epoch0} == {4}  # padded to equal steps: 12 = 10 + 2 repeats
    assert set(torch.cat(epoch0).tolist()) == set(range(10))
    epoch1 = [shard_order(10, 7, 1, c) for c in ranks]
    assert not all(torch.equal(a, b) for a, b in zip(epoch0, epoch1))
    assert torch.equal(shard_order(10, 7, 1, ranks[2]), epoch1[2])  # same seed, same shard


def test_one_process_gathers_nothing() -> None:
    prob = np.array([0.1, 0.9])
    assert gather_predictions(np.arange(2), (prob,), 2, DistContext())[0] is prob


@pytest.mark.slow
def test_gathered_validation_equals_one_process_on_the_same_weights(setup) -> None:
    workdir, config, _ = setup
    history = json.loads((workdir / "straight" / "history.json").read_text())
    assert [h["epoch"] for h in history] == list(range(1, EPOCHS + 1))
    state = load_checkpoint(workdir / "straight" / "checkpoints" / "last.pt")
    assert TrainConfig.model_validate(state["config"]) == config
    data = load_cube_data(workdir / "dataset", workdir / "dataset" / "splits.json")
    single = Trainer(config, data, workdir / "single", progress=False)
    single.on_train_start()
    single.model.load_state_dict(state["model"])
    metrics = single.validate()
    for key in ("val_auc", "val_mae", "val_pearson", "val_objective"):
        assert metrics[key] == pytest.approx(history[-1][key], abs=1e-6), key


def test_rank_zero_alone_opens_the_mlflow_run(setup) -> None:
    workdir, _, output = setup
    client = MlflowClient(f"sqlite:///{workdir}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("lungcad").experiment_id])
    assert len(runs) == 1
    run = runs[0]
    assert run.info.status == "FINISHED" and run.data.tags["world_size"] == "2"
    assert len(client.get_metric_history(run.info.run_id, "val_auc")) == EPOCHS
    assert output.count("MLflow run") == 1  # one summary line, from rank 0
    info = json.loads((workdir / "straight" / "train_run.json").read_text())
    assert info["run_id"] == run.info.run_id


def _rank_process(proc: subprocess.Popen, rank: int) -> psutil.Process:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        for child in psutil.Process(proc.pid).children(recursive=True):
            try:
                env = child.environ()
            except psutil.Error:
                continue
            if env.get("RANK") == str(rank) and "lungcad.cli.main" in " ".join(child.cmdline()):
                return child
        time.sleep(0.05)
    raise AssertionError(f"no worker of rank {rank} appeared")


@pytest.mark.slow
def test_a_killed_rank_stops_the_job_and_resume_finishes_it(setup) -> None:
    workdir, _, _ = setup
    last = workdir / "killed" / "checkpoints" / "last.pt"
    proc = _train(workdir, "killed")
    rank1 = _rank_process(proc, 1)
    deadline = time.monotonic() + 300
    while not last.exists():
        assert proc.poll() is None and time.monotonic() < deadline, "training ended early"
        time.sleep(0.02)
    rank1.send_signal(signal.SIGKILL)
    output, _ = proc.communicate(timeout=120)
    text = output.decode()
    assert proc.returncode != 0, text[-2000:]
    assert "local_rank: 1" in text or "rank: 1" in text, text[-2000:]
    assert "--resume" in text  # the launcher says how to go on
    assert 1 <= load_checkpoint(last)["epochs_done"] < EPOCHS
    survivors = [p for p in psutil.Process().children(recursive=True) if p.is_running()]
    assert not [p for p in survivors if "lungcad.cli.main" in " ".join(p.cmdline())]

    _finish(_train(workdir, "killed", "--resume"))
    straight = load_checkpoint(workdir / "straight" / "checkpoints" / "last.pt")["model"]
    resumed = load_checkpoint(last)["model"]
    for key in straight:
        assert torch.equal(straight[key], resumed[key]), key
