"""Two `lungcad tune` workers share a study; one is SIGKILLed inside a trial. Its trial is
failed by the heartbeat and run again, the study ends with exactly --trials finished trials
and no MLflow run is left RUNNING."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time

import optuna
import yaml
from mlflow.tracking import MlflowClient

from lungcad.tuning.study import make_storage
from tests.conftest import make_tiny_dataset, tiny_train_config

TRIALS = 4


def _worker(tmp_path, dataset) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "lungcad.cli.main", "tune", "--params", "params.yaml"]
    cmd += ["--dataset", str(dataset[0]), "--splits", str(dataset[1])]
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path}/mlflow.db"}
    return subprocess.Popen(
        cmd, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )


def _running_trial_of(study: optuna.Study, pid: int) -> optuna.trial.FrozenTrial | None:
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.user_attrs.get("worker", "").endswith(f":{pid}") and "mlflow_run_id" in t.user_attrs:
            return t
    return None


def test_a_killed_tuning_worker_s_trial_is_failed_rerun_and_its_mlflow_run_closed(
    tmp_path,
) -> None:
    dataset = make_tiny_dataset(tmp_path / "dataset", n_patients=4)
    storage = f"journal:{tmp_path}/study.log"
    params = {
        "train": tiny_train_config(experiment="lost-worker", epochs=3).to_dict(),
        "tune": {
            "trials": TRIALS,
            "epochs": 3,
            "pruner": "none",
            "study_name": "lost",
            "storage": storage,
            "out_dir": str(tmp_path / "tune"),
            "heartbeat_interval_s": 1,
            "grace_period_s": 4,
        },
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    client = MlflowClient(f"sqlite:///{tmp_path}/mlflow.db")
    client.create_experiment("lost-worker")  # the MLflow database, once, before the workers

    victim, survivor = _worker(tmp_path, dataset), _worker(tmp_path, dataset)
    study = None
    deadline = time.monotonic() + 240
    killed = None
    while killed is None:
        assert victim.poll() is None and time.monotonic() < deadline, "no trial to kill"
        if study is None and (tmp_path / "study.log").exists():
            # the journal file is there a moment before the study is in it
            with contextlib.suppress(KeyError):
                study = optuna.load_study(study_name="lost", storage=make_storage(storage))
        if study is not None:
            killed = _running_trial_of(study, victim.pid)
        time.sleep(0.1)
    time.sleep(0.5)  # inside the trial's training
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    output, _ = survivor.communicate(timeout=600)
    assert survivor.returncode == 0, output.decode()[-3000:]

    trials = optuna.load_study(study_name="lost", storage=make_storage(storage)).trials
    by_number = {t.number: t for t in trials}
    assert by_number[killed.number].state == optuna.trial.TrialState.FAIL
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed.number]
    assert len(retries) == 1 and retries[0].params == killed.params  # run again, same point
    counted = [t for t in trials if t.number != killed.number]
    assert len(counted) == TRIALS  # exactly --trials, the retry in place of the lost one
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in counted)

    experiment = client.get_experiment_by_name("lost-worker").experiment_id
    runs = {r.info.run_id: r for r in client.search_runs([experiment])}
    lost_run = runs[killed.user_attrs["mlflow_run_id"]]
    assert lost_run.info.status == "KILLED"
    assert "stopped beating its heartbeat" in lost_run.data.tags["error"]
    assert runs[killed.user_attrs["mlflow_parent_run_id"]].info.status == "KILLED"
    assert not [r for r in runs.values() if r.info.status == "RUNNING"]
    assert sum(r.info.status == "FINISHED" for r in runs.values()) == 1 + TRIALS  # parent too
