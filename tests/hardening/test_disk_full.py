"""Writing the dataset or a checkpoint where it does not fit gives one clear error and leaves
the previous complete outputs as they were.

"Does not fit" is a file-size limit (RLIMIT_FSIZE) on the writing process: the kernel then
refuses the write with EFBIG exactly as a full disk refuses it with ENOSPC (Python ignores
SIGXFSZ), it needs no privileges (a tmpfs mount does) and chmod cannot stand in for it when
the tests run as root.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from lungcad.core.model.checkpoint import load_checkpoint
from lungcad.preprocessing.build import build_dataset
from tests.conftest import TEST_PARAMS, make_tiny_dataset, small_params, tiny_train_config


def _limited(limit: int):
    def apply() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _lungcad(cwd: Path, *args: str, limit: int | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{cwd}/mlflow.db"}
    return subprocess.run(
        [sys.executable, "-m", "lungcad.cli.main", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        preexec_fn=None if limit is None else _limited(limit),
    )


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in folder.iterdir() if p.is_file()}


def test_a_dataset_that_does_not_fit_is_one_clear_error_and_the_old_one_stays(
    tmp_path, slab_root, db
) -> None:
    out = tmp_path / "processed"
    build_dataset(slab_root, out, small_params().preprocess, db=db, progress=False)
    before = _snapshot(out)
    assert {"cubes.npy", "index.csv", "skipped.csv", "fingerprint.json"} <= set(before)

    result = _lungcad(
        tmp_path, "data", "build", "--raw", str(slab_root), "--out", str(out), "--quiet",
        "--params", str(TEST_PARAMS),
        limit=256 << 10,  # half a cube: the slab gives one nodule cube
    )  # fmt: skip
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert f"cannot write the dataset to {out}" in errors[0]
    assert "file-size limit" in errors[0] and "intact" in errors[0]
    assert _snapshot(out) == before  # every previous file byte for byte, nothing added
    leftovers = [p for p in out.rglob("*") if ".tmp" in p.name or "staged" in p.name]
    assert leftovers == []


@pytest.fixture
def trained(tmp_path) -> tuple[Path, tuple[Path, Path]]:
    dataset = make_tiny_dataset(tmp_path / "dataset", n_patients=4)
    # Wide enough that a checkpoint (weights + AdamW moments) is over the limit.
    config = tiny_train_config(epochs=1, model={"widths": [16, 32, 64, 96]})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"train": config.to_dict()}))
    args = ["train", "--dataset", str(dataset[0]), "--splits", str(dataset[1]), "--quiet"]
    done = _lungcad(tmp_path, *args, "--out", "models")
    assert done.returncode == 0, done.stderr[-3000:]
    return tmp_path, dataset


def test_a_checkpoint_that_does_not_fit_is_one_clear_error_and_the_old_one_stays(
    trained,
) -> None:
    workdir, dataset = trained
    models = workdir / "models"
    before = _snapshot(models) | _snapshot(models / "checkpoints")
    # The MLflow database would hit the limit too: give it room, keep the checkpoint's.
    mlflow_db = workdir / "mlflow.db"
    limit = mlflow_db.stat().st_size + (2 << 20)
    assert (models / "checkpoints" / "last.pt").stat().st_size > limit  # else: widen the model
    args = ["train", "--dataset", str(dataset[0]), "--splits", str(dataset[1]), "--quiet"]
    result = _lungcad(workdir, *args, "--out", "models", limit=limit)  # a second run, same place
    assert result.returncode == 2, result.stdout + result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Traceback" not in result.stderr, result.stderr
    assert "cannot write the checkpoint to" in errors[0] and "last.pt" in errors[0]
    assert "the previous last.pt is intact" in errors[0]
    assert _snapshot(models) | _snapshot(models / "checkpoints") == before
    assert load_checkpoint(models / "checkpoints" / "last.pt")["epochs_done"] == 1
