"""Team tracking: a real `mlflow server` on PostgreSQL (pgserver) with proxied artifacts,
used by `lungcad train` and `lungcad promote` over HTTP and read back as
`models:/lungcad@champion`; an unreachable server stops a command at once with the URI named
and its password hidden; commands creating a new local mlflow.db at once all succeed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import yaml
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.tracking.mlflow_run import TrackingUnreachableError, check_tracking, redact_uri
from tests.conftest import REPO, TEST_PARAMS, make_tiny_dataset, tiny_train_config
from tests.tools.serving import free_port, wait_until_serving

pytestmark = pytest.mark.slow  # an MLflow server, several processes


def _lungcad(workdir: Path, env: dict, *args: str) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "lungcad.cli.main", *args],
        cwd=workdir,
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    return proc.stdout


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """`mlflow server` on loopback: runs in PostgreSQL, artifacts proxied to a folder."""
    tmp = tmp_path_factory.mktemp("server")
    port = free_port()
    backend = postgres.replace("postgresql://", "postgresql+psycopg://", 1)
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", backend]
        + ["--artifacts-destination", str(tmp / "artifacts"), "--serve-artifacts"]
        + ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=tmp,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_until_serving(port, server, timeout_s=180, path="/health")
        yield f"http://127.0.0.1:{port}", tmp / "artifacts"
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_train_promote_and_load_the_champion_through_the_server(tracking_server, tmp_path):
    uri, artifacts = tracking_server
    make_tiny_dataset(tmp_path / "dataset", n_patients=10, n_test=4)
    params = {
        "train": tiny_train_config(epochs=1, experiment="team").to_dict(),
        "evaluate": {"bootstrap": 20, "seed": 0},
        "promote": {"bootstrap": 20},
        "tune": {"trials": 1, "epochs": 1, "pruner": "none", "study_name": "team"},
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    env = {"MLFLOW_TRACKING_URI": uri}
    data = ["--dataset", "dataset", "--splits", "dataset/splits.json", "--params", "params.yaml"]
    _lungcad(tmp_path, env, "train", *data, "--out", "models", "--quiet")
    _lungcad(tmp_path, env, "evaluate", *data, "--model", "models/best.pt", "--out", "reports")
    _lungcad(tmp_path, env, "tune", *data)
    _lungcad(tmp_path, env, "promote", *data, "--out", "promotion")

    # Nothing was tracked locally: runs are in PostgreSQL, files in the server's store.
    assert not (tmp_path / "mlflow.db").exists() and not (tmp_path / "mlruns").exists()
    assert list(artifacts.rglob("best.pt")) and list(artifacts.rglob("MLmodel"))

    mlflow.set_tracking_uri(uri)
    try:
        champion = mlflow.pyfunc.load_model("models:/lungcad@champion")
        cubes = np.load(tmp_path / "dataset" / "cubes.npy")[:3].astype(np.float32)[:, None]
        out = champion.predict(cubes)
        assert {"nodule_prob", "malignancy"} <= set(out.columns) and len(out) == 3
        assert out["nodule_prob"].between(0, 1).all()
        version = mlflow.MlflowClient().get_model_version_by_alias("lungcad", "champion")
        run = mlflow.get_run(version.run_id)
        assert run.data.tags["world_size"] == "1" and "val_auc" in run.data.metrics
        assert "test_detection_auc" in run.data.metrics  # `lungcad evaluate` logged to it
        runs = mlflow.search_runs(experiment_names=["team"])
        trials = runs[runs["tags.mlflow.parentRunId"].notna()]
        assert len(trials) == 1  # `lungcad tune`'s one trial, nested under the study's run
    finally:
        mlflow.set_tracking_uri(None)


def test_an_unreachable_server_stops_the_command_at_once_without_the_password(
    tmp_path, monkeypatch
) -> None:
    port = free_port()  # nothing listens there
    uri = f"http://alice:s3cret@127.0.0.1:{port}"
    assert redact_uri(uri) == f"http://alice:***@127.0.0.1:{port}"
    with pytest.raises(TrackingUnreachableError, match=r"alice:\*\*\*@127\.0\.0\.1") as err:
        check_tracking(uri, timeout_s=2)
    assert "s3cret" not in str(err.value)
    db = f"postgresql+psycopg://bob:hunter2@127.0.0.1:{port}/mlflow"
    with pytest.raises(TrackingUnreachableError) as err:
        check_tracking(db, timeout_s=2)
    assert "bob:***@127.0.0.1" in str(err.value) and "hunter2" not in str(err.value)

    make_tiny_dataset(tmp_path / "dataset")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    result = CliRunner().invoke(
        app,
        [
            "train",
            "--dataset",
            "dataset",
            "--splits",
            "dataset/splits.json",
            "--params",
            str(TEST_PARAMS),
            "--quiet",
        ],
    )
    assert result.exit_code == 2
    assert "unreachable" in result.output and "s3cret" not in result.output
    assert not (tmp_path / "models").exists()  # stopped before training began


def test_commands_creating_a_new_local_store_at_once_all_succeed(tmp_path) -> None:
    code = (
        "from lungcad.tracking.mlflow_run import ensure_experiment;print(ensure_experiment('race'))"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": "sqlite:///mlflow.db", "PYTHONPATH": str(REPO)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    results = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, [err[-1500:] for _, err in results]
    assert len({out.strip().splitlines()[-1] for out, _ in results}) == 1  # one experiment
