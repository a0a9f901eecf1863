"""The committed DVC remote: `dvc push` from one clone, `dvc pull` into a second, and the
second's `dvc repro` reruns nothing (the phantom, preprocess and split stages on 3 scans)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.conftest import REPO

pytestmark = pytest.mark.slow  # a pipeline pushed and pulled through a DVC remote

STAGES = ("phantom", "preprocess", "split")


def _run(cwd: Path, *cmd: str) -> str:
    env = {
        **os.environ,
        "DVC_NO_ANALYTICS": "1",
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
    }
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (" ".join(cmd), (proc.stdout + proc.stderr)[-3000:])
    return proc.stdout + proc.stderr


def test_push_then_pull_into_a_fresh_clone_reruns_nothing(tmp_path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    _run(tmp_path, "git", "clone", "-q", str(REPO), str(first))
    params = yaml.safe_load((first / "params.yaml").read_text())
    params["phantom"]["scans"] = 3
    (first / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    _run(first, "dvc", "repro", "split")
    remote = tmp_path / "lungcad-dvc-storage"  # the default remote: beside the clone
    assert "storage" in _run(first, "dvc", "remote", "default")
    _run(first, "dvc", "push", "--with-deps", "split")
    assert remote.is_dir() and any(remote.rglob("*"))
    _run(first, "git", "add", "params.yaml", "dvc.lock")
    _run(first, "git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "3 scans")

    _run(tmp_path, "git", "clone", "-q", str(first), str(second))
    assert not (second / "data" / "processed").exists()
    _run(second, "dvc", "pull", "--with-deps", "split")
    for path in ("data/raw/LIDC-IDRI", "data/processed/cubes.npy", "data/splits.json"):
        assert (second / path).exists(), path
    out = _run(second, "dvc", "repro", "split")
    assert "Running stage" not in out, out
    for stage in STAGES:
        assert f"Stage '{stage}' didn't change, skipping" in out, out
    assert (second / "data" / "splits.json").read_bytes() == (
        first / "data" / "splits.json"
    ).read_bytes()
