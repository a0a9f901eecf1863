"""Optuna study: nested MLflow runs, resume, failed trials recorded, two workers share one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient

from lungcad.tracking.mlflow_run import ensure_experiment
from lungcad.training.config import TrainConfig
from lungcad.tuning.study import SearchSpace, TuneConfig, make_storage, run_study
from tests.conftest import make_tiny_dataset, tiny_train_config


def _tune(tmp_path: Path, trials: int, **changes) -> TuneConfig:
    return TuneConfig.from_mapping(
        {
            "trials": trials,
            "epochs": 2,
            "pruner": "median",
            "startup_trials": 1,
            "study_name": "t",
            "storage": f"journal:{tmp_path}/study.log",
            "out_dir": str(tmp_path / "tune"),
            **changes,
        }
    )


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    return make_tiny_dataset(tmp_path / "dataset", n_patients=4)


def test_trials_are_nested_runs_and_the_study_resumes(env, tmp_path) -> None:
    train = tiny_train_config(experiment="tune-test")
    first = run_study(_tune(tmp_path, 2), train, *env)
    assert first.n_trials == 2 and first.best_params_file.exists()
    assert set(first.best_params) == {"lambda_det", "lambda_mal", "lr"}
    second = run_study(_tune(tmp_path, 3), train, *env)  # same study: one more trial
    assert second.n_trials == 3
    study = optuna.load_study(study_name="t", storage=make_storage(f"journal:{tmp_path}/study.log"))
    assert [t.number for t in study.trials] == [0, 1, 2]
    client = MlflowClient()
    children = client.search_runs(
        [client.get_experiment_by_name("tune-test").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{second.parent_run_id}'",
    )
    assert len(children) == 1  # the second invocation ran one trial under its own parent
    child = children[0]
    assert "train.lr" in child.data.params
    assert len(client.get_metric_history(child.info.run_id, "val_objective")) >= 1
    parent_artifacts = {a.path for a in client.list_artifacts(second.parent_run_id)}
    assert {"best_params.yaml", "study_summary.json", "figures"} <= parent_artifacts
    assert "param_importances.json" in parent_artifacts


def test_a_failing_trial_is_recorded_and_the_study_goes_on(env, tmp_path) -> None:
    # A batch size of 0 is refused by the training settings: those trials fail.
    space = SearchSpace(batch_size=(0, 4))
    train = tiny_train_config(experiment="tune-fail", batch_size=4)
    result = run_study(_tune(tmp_path, 4, seed=1, space=space.__dict__), train, *env)
    study = optuna.load_study(study_name="t", storage=make_storage(f"journal:{tmp_path}/study.log"))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    done = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert result.n_trials == 4 and failed and done
    assert all("batch_size must be > 0" in t.user_attrs["error"] for t in failed)
    assert all(t.params["batch_size"] == 0 for t in failed)


def test_two_processes_share_one_study_without_extra_trials(env, tmp_path) -> None:
    code = (
        "import sys; from tests.conftest import tiny_train_config;"
        "from lungcad.tuning.study import TuneConfig, run_study;"
        f"t = TuneConfig.from_mapping(dict(trials=4, epochs=1, pruner='none', study_name='t',"
        f" storage='journal:{tmp_path}/study.log', out_dir='{tmp_path}/tune'));"
        f"run_study(t, tiny_train_config(experiment='tune-par'), '{env[0]}', '{env[1]}')"
    )
    ensure_experiment("tune-par")  # create the MLflow database once, before the workers
    repo = Path(__file__).resolve().parents[2]
    environ = {**os.environ, "PYTHONPATH": str(repo)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=environ) for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    study = optuna.load_study(study_name="t", storage=make_storage(f"journal:{tmp_path}/study.log"))
    numbers = [t.number for t in study.trials]
    assert sorted(numbers) == [0, 1, 2, 3]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == 4  # no trial ran twice


def test_tune_config_rejects_unknown_pruner() -> None:
    with pytest.raises(ValueError, match="pruner"):
        TuneConfig(pruner="asha")
    assert TrainConfig().replace(epochs=2).epochs == 2


def test_threads_in_one_process_share_the_study_and_nest_under_one_parent(env, tmp_path) -> None:
    result = run_study(
        _tune(tmp_path, 3, epochs=1, pruner="none"),
        tiny_train_config(experiment="tune-threads"),
        *env,
        n_jobs=2,
    )
    assert result.n_trials == 3 and result.states == {"COMPLETE": 3}
    client = MlflowClient()
    children = client.search_runs(
        [client.get_experiment_by_name("tune-threads").experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{result.parent_run_id}'",
    )
    assert len(children) == 3
