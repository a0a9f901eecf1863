"""Optuna sweep of the loss weights and learning rate, each trial a nested MLflow run.

The objective is the validation objective of training (val AUC - val MAE / 4), reported
every epoch so the pruner can stop poor trials early. The study lives in persistent
storage: by default an Optuna JournalStorage file (safe for several processes on one
machine; never one SQLite file shared by parallel workers), or any RDB URL so that workers
on several machines share one study. Several ``lungcad tune`` processes on one storage run
exactly ``n_trials`` trials together: a trial is only asked for under a lock while fewer
than ``n_trials`` exist (a file lock next to a journal or SQLite file; a PostgreSQL
advisory lock in the study's own database, which every machine sees).

A worker that dies (SIGKILL, a lost node) does not leave its trial RUNNING forever: every
running trial beats a heartbeat (Optuna's, on an RDB; the journal's own below), and any
worker asking for a trial first fails those silent for ``grace_period_s``. A failed stale
trial is queued again with the same parameters (``RetryFailedTrialCallback``) and does not
count towards ``trials``; its MLflow run and the dead worker's parent run are closed as
KILLED. A worker whose budget is spent waits while other trials are still running, so
that a trial orphaned late is still re-run and the study ends with exactly ``trials``.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import socket
import threading
import time
import warnings
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import optuna
import yaml
from filelock import FileLock
from optuna.storages import RetryHeartbeatStaleTrialCallback
from optuna.storages._heartbeat import BaseHeartbeat
from optuna.storages.journal import JournalFileBackend, JournalStorage
from optuna.trial import FrozenTrial, TrialState

from lungcad.config import SearchSpace, TrainConfig, TuneConfig
from lungcad.errors import LungcadError
from lungcad.tracking.mlflow_run import (
    ensure_experiment,
    git_commit,
    log_params_flat,
    redact_uri,
)
from lungcad.training.tracked import train_tracked

log = logging.getLogger(__name__)


@contextlib.contextmanager
def _optuna_quiet() -> Iterator[None]:
    """Silence Optuna's advice that does not apply here: lungcad uses its experimental
    stale-trial callback and plots knowingly, and beats each trial's heartbeat itself
    (``_Heartbeat``), which is what ``Study.optimize`` would do."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)
        warnings.filterwarnings("ignore", message="Heartbeat of storage is supposed to be used")
        yield


class StaleTrialHandler:
    """What happens to a trial whose worker died: its MLflow run and the dead worker's parent
    run are closed as KILLED (with a tag saying why), then it is queued again."""

    def __init__(self, max_retries: int) -> None:
        with _optuna_quiet():
            self.retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retries)

    def __call__(self, study: optuna.Study, trial: FrozenTrial) -> None:
        from mlflow.tracking import MlflowClient

        why = (
            f"worker {trial.user_attrs.get('worker', '?')} lost: trial {trial.number} "
            "stopped beating its heartbeat"
        )
        log.warning("%s; it is failed and queued again", why)
        client = MlflowClient()
        for key in ("mlflow_run_id", "mlflow_parent_run_id"):
            run_id = trial.user_attrs.get(key)
            if not run_id:
                continue
            try:
                if client.get_run(run_id).info.status == "RUNNING":
                    client.set_tag(run_id, "error", why)
                    client.set_terminated(run_id, status="KILLED")
            except mlflow.exceptions.MlflowException as exc:
                log.warning("could not close MLflow run %s: %s", run_id, exc)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            self.retry(study, trial)


class Heartbeat:
    """Beat a running trial's heartbeat from a thread until the block ends."""

    def __init__(self, study: optuna.Study, trial: optuna.Trial) -> None:
        self.storage = study._storage
        self.trial_id = trial._trial_id
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None

    def _beat(self) -> None:
        interval = self.storage.get_heartbeat_interval()
        while True:
            try:
                self.storage.record_heartbeat(self.trial_id)
            except optuna.exceptions.UpdateFinishedTrialError:
                return  # told (or failed as stale) meanwhile
            except Exception as exc:  # a storage hiccup: say so, keep beating
                log.warning("heartbeat of trial %d not recorded: %s", self.trial_id, exc)
            if self.stop.wait(interval):
                return

    def __enter__(self) -> Heartbeat:
        if isinstance(self.storage, BaseHeartbeat) and self.storage.get_heartbeat_interval():
            self.thread = threading.Thread(target=self._beat, name="optuna-heartbeat", daemon=True)
            self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        if self.thread is not None:
            self.thread.join()


class StorageError(LungcadError, RuntimeError):
    """The study storage cannot be opened (bad URL, server down, driver missing)."""


HEARTBEAT_ATTR = "lungcad:heartbeat"


class HeartbeatJournalStorage(JournalStorage, BaseHeartbeat):
    """Optuna's journal file storage with the heartbeat its RDB storage has.

    A beat is the time of day written as a system attribute of the running trial (one short
    journal line per beat); a RUNNING trial whose last beat (or start) is older than the
    grace period is stale. Workers sharing a journal file share one clock.
    """

    def __init__(
        self,
        backend: JournalFileBackend,
        heartbeat_interval: int,
        grace_period: int,
        stale_trial_callback: Callable[[optuna.Study, FrozenTrial], None] | None = None,
    ) -> None:
        super().__init__(backend)
        self.heartbeat_interval = heartbeat_interval
        self.grace_period = grace_period
        self.stale_trial_callback = stale_trial_callback

    def record_heartbeat(self, trial_id: int) -> None:
        self.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())

    def _get_stale_trial_ids(self, study_id: int) -> list[int]:
        now = time.time()
        stale = []
        for trial in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
            last = trial.system_attrs.get(HEARTBEAT_ATTR)
            if last is None and trial.datetime_start is not None:
                last = trial.datetime_start.timestamp()
            if last is not None and now - last > self.grace_period:
                stale.append(trial._trial_id)
        return stale

    def get_heartbeat_interval(self) -> int:
        return self.heartbeat_interval

    def get_heartbeat_stale_trial_callback(
        self,
    ) -> Callable[[optuna.Study, FrozenTrial], None] | None:
        return self.stale_trial_callback


def make_storage(
    url: str, tune: TuneConfig | None = None, stale_trial_callback: Callable | None = None
) -> optuna.storages.BaseStorage:
    """Journal file storage for "journal:<path>", RDB storage for a database URL; with
    ``tune``, running trials beat a heartbeat and stale ones go to ``stale_trial_callback``."""
    beat = (
        {}
        if tune is None
        else {
            "heartbeat_interval": tune.heartbeat_interval_s,
            "grace_period": tune.grace_period_s,
        }
    )
    if url.startswith("journal:"):
        path = Path(url.removeprefix("journal:"))
        path.parent.mkdir(parents=True, exist_ok=True)
        if tune is None:
            return JournalStorage(JournalFileBackend(str(path)))
        return HeartbeatJournalStorage(
            JournalFileBackend(str(path)), **beat, stale_trial_callback=stale_trial_callback
        )
    if url.startswith("sqlite:"):
        log.warning(
            "an SQLite study must not be shared by parallel workers; use journal: or an RDB"
        )
    if tune is None:
        return optuna.storages.RDBStorage(url)
    return optuna.storages.RDBStorage(
        url, **beat, heartbeat_stale_trial_callback=stale_trial_callback
    )


@contextlib.contextmanager
def storage_errors(url: str):
    """Turn a missing driver or an unreachable/bad database into a StorageError that says so."""
    import sqlalchemy.exc

    try:
        yield
    except ModuleNotFoundError as exc:
        raise StorageError(
            f"study storage {redact_uri(url)}: its database driver ({exc.name}) is not "
            "installed; for PostgreSQL: pip install 'lungcad[postgres]'"
        ) from exc
    except (sqlalchemy.exc.SQLAlchemyError, ValueError) as exc:
        raise StorageError(
            f"cannot open the study storage {redact_uri(url)}: {exc}. Check the URL "
            "(journal:<file> or dialect://user:password@host/database), that the server "
            "is up and that the user may create tables"
        ) from exc


def open_study(tune: TuneConfig) -> tuple[optuna.Study, Any]:
    """Create or load the study, and the lock its workers share.

    The storage's tables and the study are created under that lock too, so workers started
    at the same moment on an empty database do not race on the schema.
    """
    with storage_errors(tune.storage):
        lock = storage_lock(tune.storage, tune.study_name)
        with lock:
            study = optuna.create_study(
                study_name=tune.study_name,
                storage=make_storage(tune.storage, tune, StaleTrialHandler(tune.max_retries)),
                direction="maximize",
                load_if_exists=True,
                sampler=optuna.samplers.TPESampler(seed=tune.seed),
                pruner=make_pruner(tune),
            )
    return study, lock


class DatabaseLock:
    """A PostgreSQL session advisory lock, so workers on several machines exclude each other.

    Each acquisition opens its own connection and releases the lock before closing it; a
    worker that dies while holding it loses its session, and with it the lock.
    """

    def __init__(self, url: str, name: str) -> None:
        import sqlalchemy

        self.engine = sqlalchemy.create_engine(url, poolclass=sqlalchemy.pool.NullPool)
        if self.engine.dialect.name != "postgresql":
            raise ValueError(f"no database lock for {self.engine.dialect.name}")
        # A stable signed 64-bit key for pg_advisory_lock.
        digest = hashlib.sha256(f"lungcad-tune:{name}".encode()).digest()[:8]
        self.key = int.from_bytes(digest, "big", signed=True)
        self.connection = None

    def __enter__(self) -> DatabaseLock:
        from sqlalchemy import text

        self.connection = self.engine.connect()
        self.connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": self.key})
        return self

    def __exit__(self, *exc: object) -> None:
        from sqlalchemy import text

        try:
            self.connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": self.key})
        finally:
            self.connection.close()
            self.connection = None


def storage_lock(url: str, study_name: str) -> Any:
    """The lock that serialises asking for trials among all workers of ``url``."""
    for prefix in ("journal:", "sqlite:///"):
        if url.startswith(prefix):
            path = Path(url.removeprefix(prefix) + ".ask.lock")
            path.parent.mkdir(parents=True, exist_ok=True)
            return FileLock(str(path))
    try:
        return DatabaseLock(url, study_name)
    except ValueError:
        log.warning(
            "%s: no cross-machine lock for this database (PostgreSQL has one); parallel "
            "workers may run a few trials more than requested",
            redact_uri(url),
        )
        return contextlib.nullcontext()


def make_pruner(config: TuneConfig) -> optuna.pruners.BasePruner:
    if config.pruner == "median":
        return optuna.pruners.MedianPruner(
            n_startup_trials=config.startup_trials, n_warmup_steps=config.warmup_epochs
        )
    if config.pruner == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=config.epochs)
    return optuna.pruners.NopPruner()


def suggest(trial: optuna.Trial, space: SearchSpace) -> dict[str, Any]:
    """Draw one point of the search space."""
    params: dict[str, Any] = {
        "lambda_det": trial.suggest_float("lambda_det", *space.lambda_det, log=True),
        "lambda_mal": trial.suggest_float("lambda_mal", *space.lambda_mal, log=True),
        "lr": trial.suggest_float("lr", *space.lr, log=True),
    }
    if space.weight_decay is not None:
        params["weight_decay"] = trial.suggest_float("weight_decay", *space.weight_decay, log=True)
    if space.batch_size is not None:
        params["batch_size"] = trial.suggest_categorical("batch_size", list(space.batch_size))
    if space.lambda_attr is not None:
        params["lambda_attr"] = trial.suggest_float("lambda_attr", *space.lambda_attr, log=True)
    return params


class PruningCallback:
    """Trainer callback: report the validation objective each epoch; prune when told."""

    def __init__(self, trial: optuna.Trial) -> None:
        self.trial = trial

    def on_epoch_end(self, trainer, epoch: int, metrics: dict[str, float]) -> None:
        self.trial.report(metrics["val_objective"], step=epoch)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")

    def on_train_end(self, trainer, result) -> None:
        pass


@dataclass
class TuneResult:
    study_name: str
    n_trials: int
    states: dict[str, int]
    best_value: float | None
    best_params: dict[str, Any]
    best_params_file: Path | None
    parent_run_id: str
    seconds: float


def retried_numbers(trials: list[FrozenTrial]) -> set[int]:
    """Numbers of the stale trials that were queued again (they do not count)."""
    return {n for t in trials for n in t.system_attrs.get("retry_history", [])}


class _TrialBudget:
    """Asks for a trial only while the study holds fewer than ``n`` (across processes).

    Trials of dead workers are failed and queued again first; a failed-and-retried trial
    does not count. The sampler is re-seeded from (seed, trial number) before each trial is
    drawn, so that workers started with the same seed do not draw the same points, and one
    worker's study is reproducible.
    """

    def __init__(self, study: optuna.Study, config: TuneConfig, lock: Any) -> None:
        self.study, self.config = study, config
        self.thread_lock = threading.Lock()
        self.process_lock = lock

    def ask(self, deadline: float | None = None) -> tuple[optuna.Trial, dict[str, Any]] | None:
        """The next trial and its parameters, or None when the study is complete (or the
        deadline passed). While others still run the last trials, wait: one may be orphaned."""
        while True:
            with self.thread_lock, self.process_lock:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    optuna.storages.fail_stale_trials(self.study)
                trials = self.study.get_trials(deepcopy=False)
                retried = retried_numbers(trials)
                counted = [t for t in trials if t.number not in retried]
                waiting = any(t.state == TrialState.WAITING for t in counted)
                if len(counted) < self.config.trials or waiting:
                    self.study.sampler = optuna.samplers.TPESampler(
                        seed=self.config.seed * 100_003 + len(trials)
                    )
                    with _optuna_quiet():
                        trial = self.study.ask()
                    return trial, suggest(trial, self.config.space)
                running = any(t.state == TrialState.RUNNING for t in counted)
            if not running or (deadline is not None and time.monotonic() > deadline):
                return None
            time.sleep(min(5.0, self.config.heartbeat_interval_s))


def run_study(
    tune: TuneConfig,
    train: TrainConfig,
    dataset_dir: str | Path,
    splits_file: str | Path,
    n_jobs: int = 1,
    timeout_s: float | None = None,
    progress: bool = True,
) -> TuneResult:
    """Run (or resume) the study until it holds ``tune.trials`` trials or time runs out."""
    started = time.perf_counter()
    study, lock = open_study(tune)
    out_dir = Path(tune.out_dir)
    budget = _TrialBudget(study, tune, lock)
    experiment_id = ensure_experiment(train.experiment)
    base = train.replace(epochs=tune.epochs)
    with mlflow.start_run(
        experiment_id=experiment_id, run_name=f"tune {tune.study_name}"
    ) as parent:
        mlflow.set_tags(
            {
                "lungcad.kind": "tune",
                "optuna_study": tune.study_name,
                "git_commit": git_commit(),
                "optuna_storage": redact_uri(tune.storage),
            }
        )
        log_params_flat({**tune.to_dict(), "storage": redact_uri(tune.storage)}, prefix="tune.")

        def one_trial(trial: optuna.Trial, params: dict[str, Any]) -> None:
            trial_dir = out_dir / "trials" / f"{tune.study_name}-{trial.number}"
            trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
            trial.set_user_attr("mlflow_parent_run_id", parent.info.run_id)
            try:
                with Heartbeat(study, trial):
                    run = train_tracked(
                        base.replace(**params),
                        dataset_dir,
                        splits_file,
                        trial_dir,
                        run_name=f"trial {trial.number}",
                        callbacks=[PruningCallback(trial)],
                        nested=True,
                        parent_run_id=parent.info.run_id,
                        progress=False,
                        log_model=False,
                        on_run_start=lambda run_id: trial.set_user_attr("mlflow_run_id", run_id),
                    )
                value = max(h["val_objective"] for h in run.result.history)
                study.tell(trial, value)
                log.info("trial %d: %s -> %.4f", trial.number, params, value)
            except optuna.TrialPruned as exc:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                log.info("trial %d pruned: %s", trial.number, exc)
            except Exception as exc:  # a failed trial is recorded and the study goes on
                trial.set_user_attr("error", f"{type(exc).__name__}: {exc}")
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
                log.warning("trial %d failed: %s: %s", trial.number, type(exc).__name__, exc)
            finally:
                shutil.rmtree(trial_dir, ignore_errors=True)

        deadline = None if timeout_s is None else time.monotonic() + timeout_s

        def worker() -> None:
            while deadline is None or time.monotonic() < deadline:
                drawn = budget.ask(deadline)
                if drawn is None:
                    return
                one_trial(*drawn)

        if n_jobs > 1:
            with ThreadPoolExecutor(n_jobs) as pool:
                for f in [pool.submit(worker) for _ in range(n_jobs)]:
                    f.result()
        else:
            worker()
        result = summarise(study, out_dir, parent.info.run_id, time.perf_counter() - started)
    return result


def summarise(study: optuna.Study, out_dir: Path, parent_run_id: str, seconds: float) -> TuneResult:
    """Log the study summary to the active (parent) run and write best_params.yaml."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    trials = study.get_trials(deepcopy=False)
    states: dict[str, int] = {}
    for t in trials:
        states[t.state.name] = states.get(t.state.name, 0) + 1
    completed = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    best_file = None
    best_value, best_params = None, {}
    mlflow.log_metrics({f"trials_{k.lower()}": v for k, v in states.items()})
    if completed:
        best = study.best_trial
        best_value, best_params = best.value, dict(best.params)
        mlflow.log_metric("best_value", best_value)
        mlflow.log_params({f"best.{k}": v for k, v in best_params.items()})
        out_dir.mkdir(parents=True, exist_ok=True)
        best_file = out_dir / "best_params.yaml"
        best_file.write_text(yaml.safe_dump({"train": best_params}, sort_keys=True))
        mlflow.log_artifact(str(best_file))
        figures = out_dir / "figures"
        figures.mkdir(exist_ok=True)
        plots = {"optimization_history": optuna.visualization.matplotlib.plot_optimization_history}
        if len(completed) >= 2:
            plots["parallel_coordinate"] = optuna.visualization.matplotlib.plot_parallel_coordinate
            try:
                importances = optuna.importance.get_param_importances(study)
                mlflow.log_dict(
                    {k: float(v) for k, v in importances.items()}, "param_importances.json"
                )
                plots["param_importances"] = optuna.visualization.matplotlib.plot_param_importances
            except (RuntimeError, ValueError) as exc:
                log.warning("parameter importances unavailable: %s", exc)
        for name, plot in plots.items():
            with _optuna_quiet():
                ax = plot(study)
            fig = (ax[0] if hasattr(ax, "__len__") else ax).figure
            fig.set_size_inches(8, 5)
            fig.tight_layout()
            fig.savefig(figures / f"{name}.png", dpi=90)
            plt.close(fig)
            mlflow.log_artifact(str(figures / f"{name}.png"), artifact_path="figures")
    failed = {
        t.number: t.user_attrs.get("error", "")
        for t in trials
        if t.state == optuna.trial.TrialState.FAIL
    }
    if failed:
        mlflow.log_dict({str(k): v for k, v in failed.items()}, "failed_trials.json")
    summary = {
        "study": study.study_name,
        "states": states,
        "best_value": best_value,
        "best_params": best_params,
        "seconds": round(seconds, 1),
    }
    mlflow.log_dict(summary, "study_summary.json")
    (out_dir / "study_summary.json").parent.mkdir(parents=True, exist_ok=True)
    (out_dir / "study_summary.json").write_text(json.dumps(summary, indent=2))
    return TuneResult(
        study.study_name,
        len(trials),
        states,
        best_value,
        best_params,
        best_file,
        parent_run_id,
        seconds,
    )
