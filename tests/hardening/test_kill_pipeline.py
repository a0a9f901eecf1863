"""`lungcad data build` and `dvc repro` killed with SIGKILL in the middle of a scan: the
rerun finishes, gives what an uninterrupted build gives, and no half-written file is read."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import psutil
import yaml

from tests.conftest import REPO, TEST_PARAMS
from tests.hardening.conftest import PHANTOM_SCANS


def _lungcad(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "lungcad.cli.main", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def _finish(proc: subprocess.Popen) -> str:
    output, _ = proc.communicate(timeout=600)
    assert proc.returncode == 0, output.decode()[-3000:]
    return output.decode()


def _kill_when_a_scan_is_done(proc: subprocess.Popen, out: Path, group: bool = False) -> None:
    """SIGKILL once the first scan's result is saved: inside the next scan."""
    deadline = time.monotonic() + 300
    while not list(out.glob(".parts/*/*[0-9].npz")):
        assert proc.poll() is None and time.monotonic() < deadline, "the build ended early"
        time.sleep(0.02)
    descendants = psutil.Process(proc.pid).children(recursive=True)
    if group:  # a job killed as a whole (the shell, dvc and the stage's command)
        os.killpg(proc.pid, signal.SIGKILL)
    else:  # the build alone: its worker processes must not live on as orphans
        proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    _, alive = psutil.wait_procs(descendants, timeout=10)
    assert not alive, [p.cmdline() for p in alive]


def test_data_build_killed_mid_scan_reruns_to_the_uninterrupted_dataset(
    phantom_root, tmp_path
) -> None:
    build = ["data", "build", "--raw", str(phantom_root), "--params", str(TEST_PARAMS), "--quiet"]
    _finish(_lungcad(*build, "--out", "straight", cwd=tmp_path))

    proc = _lungcad(*build, "--out", "killed", "--workers", "2", cwd=tmp_path)
    _kill_when_a_scan_is_done(proc, tmp_path / "killed")
    killed = tmp_path / "killed"
    assert not (killed / "index.csv").exists() and not (killed / "cubes.npy").exists()
    # What a kill inside np.savez leaves: a torn temporary beside the finished results.
    part_dir = next((killed / ".parts").iterdir())
    (part_dir / "1.2.3.4.99999.tmp.npz").write_bytes(b"PK\x03\x04 torn")

    _finish(_lungcad(*build, "--out", "killed", cwd=tmp_path))
    for name in ("index.csv", "skipped.csv"):
        pd.testing.assert_frame_equal(
            pd.read_csv(killed / name), pd.read_csv(tmp_path / "straight" / name)
        )
    np.testing.assert_array_equal(
        np.load(killed / "cubes.npy"), np.load(tmp_path / "straight" / "cubes.npy")
    )
    assert not (killed / ".parts").exists()
    assert not [p.name for p in killed.iterdir() if ".tmp" in p.name or "staged" in p.name]


def test_dvc_repro_killed_mid_stage_reruns_to_completion(phantom_root, tmp_path) -> None:
    # The project's own dvc.yaml and params.yaml, in a scratch DVC project with the lungcad
    # sources its stages depend on; the phantom stage is already done (the raw root).
    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "dvc.yaml", project)
    shutil.copytree(
        REPO / "lungcad", project / "lungcad", ignore=shutil.ignore_patterns("__pycache__")
    )
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["data"]["raw_root"] = str(phantom_root)
    (project / "params.yaml").write_text(yaml.safe_dump(params))
    bin_dir = str(Path(sys.executable).parent)  # the stages call the `lungcad` script
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{bin_dir}:{os.environ['PATH']}"}
    dvc = [sys.executable, "-m", "dvc"]
    subprocess.run([*dvc, "init", "--no-scm", "-q"], cwd=project, env=env, check=True)

    def repro() -> subprocess.Popen:
        return subprocess.Popen(
            [*dvc, "repro", "preprocess"],
            cwd=project,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    _kill_when_a_scan_is_done(repro(), project / "data" / "processed", group=True)
    assert not (project / "dvc.lock").exists()  # nothing recorded for the killed stage
    output = _finish(repro())
    assert "Running stage 'preprocess'" in output
    status = subprocess.run(
        [*dvc, "status", "preprocess"], cwd=project, env=env, capture_output=True, text=True
    )
    assert status.returncode == 0 and "up to date" in status.stdout, status.stdout
    index = pd.read_csv(project / "data" / "processed" / "index.csv")
    cubes = np.load(project / "data" / "processed" / "cubes.npy", mmap_mode="r")
    assert len(index) == len(cubes) > 0
    assert index["series_uid"].nunique() == PHANTOM_SCANS
