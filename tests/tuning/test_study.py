"""Optuna study: nested MLflow runs, resume, failed trials recorded, two workers share one."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import optuna
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.config import SearchSpace, TrainConfig, TuneConfig
from lungcad.tracking.mlflow_run import ensure_experiment, redact_uri
from lungcad.tuning.study import make_storage, run_study
from tests.conftest import TEST_PARAMS, make_tiny_dataset, tiny_train_config


def _tune(tmp_path: Path, trials: int, **changes) -> TuneConfig:
    return TuneConfig.model_validate(
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
    # A batch size of 0 is refused by the training settings: those trials fail. (The search
    # space's own schema refuses it too, so it is put in unvalidated.)
    space = SearchSpace.model_construct(**{**SearchSpace().model_dump(), "batch_size": (0, 4)})
    train = tiny_train_config(experiment="tune-fail", batch_size=4)
    tune = _tune(tmp_path, 4, seed=1).model_copy(update={"space": space})
    result = run_study(tune, train, *env)
    study = optuna.load_study(study_name="t", storage=make_storage(f"journal:{tmp_path}/study.log"))
    failed = [t for t in study.trials if t.state == optuna.trial.TrialState.FAIL]
    done = [t for t in study.trials if t.state != optuna.trial.TrialState.FAIL]
    assert result.n_trials == 4 and failed and done
    assert all("batch_size = 0" in t.user_attrs["error"] for t in failed)
    assert all(t.params["batch_size"] == 0 for t in failed)


def _two_workers(storage: str, env, tmp_path: Path, trials: int = 4) -> optuna.Study:
    """Start two `run_study` processes on ``storage`` at the same moment; the shared study."""
    code = (
        "import sys; from tests.conftest import tiny_train_config;"
        "from lungcad.config import TuneConfig; from lungcad.tuning.study import run_study;"
        f"t = TuneConfig.model_validate(dict(trials={trials}, epochs=1, pruner='none',"
        f" study_name='t', storage={storage!r}, out_dir='{tmp_path}/tune'));"
        f"run_study(t, tiny_train_config(experiment='tune-par'), '{env[0]}', '{env[1]}')"
    )
    ensure_experiment("tune-par")  # create the MLflow database once, before the workers
    repo = Path(__file__).resolve().parents[2]
    environ = {**os.environ, "PYTHONPATH": str(repo)}
    procs = [
        subprocess.Popen([sys.executable, "-c", code], cwd=tmp_path, env=environ) for _ in range(2)
    ]
    assert [p.wait(timeout=300) for p in procs] == [0, 0]
    return optuna.load_study(study_name="t", storage=make_storage(storage))


def _assert_exactly_once(study: optuna.Study, trials: int = 4) -> None:
    assert sorted(t.number for t in study.trials) == list(range(trials))
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)
    params = [tuple(sorted(t.params.items())) for t in study.trials]
    assert len(set(params)) == trials  # no trial ran twice


@pytest.mark.slow
def test_two_processes_share_one_study_without_extra_trials(env, tmp_path) -> None:
    _assert_exactly_once(_two_workers(f"journal:{tmp_path}/study.log", env, tmp_path))


@pytest.mark.slow
def test_two_processes_share_a_postgresql_study(env, tmp_path, postgres) -> None:
    # The multi-machine path: both workers start on an empty database (schema creation and
    # the trial budget are serialised by a PostgreSQL advisory lock, not a local file).
    study = _two_workers(postgres, env, tmp_path)
    _assert_exactly_once(study)
    parents = MlflowClient().search_runs(
        [MlflowClient().get_experiment_by_name("tune-par").experiment_id],
        filter_string="tags.`lungcad.kind` = 'tune'",
    )
    assert len(parents) == 2
    assert all(p.data.params["tune.storage"].startswith("postgresql://") for p in parents)


def test_storage_urls_are_logged_without_password() -> None:
    assert redact_uri("postgresql://tuner:s3cret@db.lab:5432/optuna") == (
        "postgresql://tuner:***@db.lab:5432/optuna"
    )
    assert redact_uri("journal:tune/optuna-journal.log") == "journal:tune/optuna-journal.log"


def test_an_unreachable_study_database_is_a_clear_cli_error(env) -> None:
    result = CliRunner().invoke(
        app,
        [
            "tune",
            "--trials",
            "1",
            "--dataset",
            str(env[0]),
            "--splits",
            str(env[1]),
            "--storage",
            "postgresql://tuner:s3cret@127.0.0.1:9/optuna",
            "--params",
            str(TEST_PARAMS),
        ],
    )
    assert result.exit_code == 2, result.output
    assert "cannot open the study storage postgresql://tuner:***@127.0.0.1:9/optuna" in (
        result.output
    )
    assert "s3cret" not in result.output


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


def test_the_attribute_loss_weight_is_searched_when_asked(env, tmp_path) -> None:
    space = {"lambda_attr": [0.05, 2.0]}
    model = {"widths": [4, 8, 8, 16], "feature_dim": 16, "attributes": True}
    train = tiny_train_config(experiment="tune-attr", model=model)
    result = run_study(_tune(tmp_path, 2, space=space, pruner="none"), train, *env)
    study = optuna.load_study(study_name="t", storage=make_storage(f"journal:{tmp_path}/study.log"))
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert all(0.05 <= t.params["lambda_attr"] <= 2.0 for t in study.trials)
    assert "lambda_attr" in result.best_params
