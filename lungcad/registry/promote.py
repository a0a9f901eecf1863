"""Guarded promotion of the best run to the MLflow model registry, with aliases.

The candidate is the run with the highest declared criterion among the experiment's
training runs that logged a model (tuning trials log none). It is evaluated, and so is the
current champion, with the same code on the same splits, and the two are compared on the
val split: a candidate whose validation objective (detection AUC - malignancy MAE / 4) is
lower is refused unless forced. The test split chooses nothing: its figures are reported
once, for the model promoted. A promoted candidate becomes a new version of the registered
model with its validation objective and test metrics as tags, its evaluation report in its
run, a description carrying the model-card facts (input, HU window, spacing, data version,
intended use), the alias ``champion``, and the old champion keeps the alias ``previous``.
Registry stages are not used (deprecated).
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

from lungcad.config import EvaluateConfig
from lungcad.core.metrics import validation_objective
from lungcad.errors import LungcadError
from lungcad.evaluation.cube_evaluation import evaluate_model
from lungcad.tracking.mlflow_run import ensure_experiment, log_evaluation
from lungcad.tracking.model_ref import CHAMPION, PREVIOUS, REGISTERED_MODEL
from lungcad.tracking.pyfunc import log_pyfunc_model

DISCLAIMER = (
    "Intended use: research on lung nodule detection and malignancy estimation. Not a medical "
    "device; not for diagnosis or patient management."
)


class NoCandidateError(LungcadError, LookupError):
    """No finished training run with a logged model to promote."""


@dataclass(frozen=True)
class PromotionDecision:
    promoted: bool
    reason: str
    candidate_run_id: str
    candidate_objective: float  # on the val split
    champion_version: str | None
    champion_objective: float | None  # on the val split
    new_version: str | None
    metrics: dict[str, Any]


def promotion_objective(doc: dict[str, Any]) -> float:
    """The promotion score, on the val split: detection AUC - malignancy MAE / 4."""
    val = doc["val"]
    return validation_objective(val["detection"]["auc"], val["malignancy"]["mae"])


def best_candidate(experiment: str, criterion: str = "metrics.best_val_metric") -> str:
    """Run id of the experiment's best finished run that logged a model, by ``criterion``."""
    experiment_id = ensure_experiment(experiment)
    runs = mlflow.search_runs(
        [experiment_id],
        filter_string="attributes.status = 'FINISHED' and tags.`lungcad.has_model` = 'true'",
        order_by=[f"{criterion} DESC"],
        max_results=1,
        output_format="list",
    )
    if not runs:
        raise NoCandidateError(
            f"experiment {experiment!r} has no finished training run with a logged model: run "
            "`lungcad train` (DVC stage `train`) first"
        )
    return runs[0].info.run_id


def _checkpoint_of(client: MlflowClient, run_id: str, where: Path) -> Path:
    return Path(client.download_artifacts(run_id, "checkpoint/best.pt", str(where)))


def _model_card(run_id: str, doc: dict[str, Any], run: Any, threshold: float) -> str:
    params = run.data.params
    d, m = doc["detection"], doc["malignancy"]
    return "\n".join(
        [
            "lungcad multi-task 3D CNN: nodule detection + malignancy (1-5) on 64^3 CT cubes.",
            "Input: float32 array (N, 1, 64, 64, 64) of HU values, 1 mm isotropic voxels along the "
            "patient axes, cube centred on the candidate (lungcad data build).",
            f"HU window: {params.get('train.window_hu', '?')} (applied inside the model).",
            f"Output: nodule_prob, malignancy, nodule (decision at threshold {threshold:.3f}, "
            "chosen on validation by Youden's J).",
            f"Data version (DVC md5 of data/processed): {run.data.tags.get('dvc_data_md5', '?')}; "
            f"code: {run.data.tags.get('git_commit', '?')}; source run {run_id}.",
            f"Test split: detection AUC {d['auc']:.3f}, recall {d['recall']:.3f}, "
            f"F1 {d['f1']:.3f}; "
            f"malignancy MAE {m['mae']:.3f}, Pearson {m['pearson']:.3f}. Evaluation report: "
            "artifact evaluation/report.md of the source run.",
            DISCLAIMER,
        ]
    )


def promote(
    dataset_dir: str | Path,
    splits_file: str | Path,
    experiment: str = "lungcad",
    criterion: str = "metrics.best_val_metric",
    run_id: str | None = None,
    force: bool = False,
    report_dir: str | Path = "reports/promotion",
    eval_config: EvaluateConfig | None = None,
    detection: tuple[str, dict[str, Any]] | None = None,
) -> PromotionDecision:
    """Compare the candidate with the champion on val, then register it or refuse.

    Args:
        dataset_dir, splits_file: the dataset and splits both are evaluated on.
        experiment: where candidates are looked for.
        criterion: MLflow ``order_by`` column choosing the candidate (highest wins).
        run_id: a specific candidate run instead.
        force: promote even when the candidate is worse than the champion.
        report_dir: the candidate's evaluation report is written here.
        detection: (run id, metrics) of a whole-scan detection evaluation
            (``lungcad evaluate-detection``); when that run is the one promoted, its CPM
            and sensitivities become tags of the registered version.
    """
    eval_config = eval_config or EvaluateConfig(bootstrap=200)
    client = MlflowClient()
    run_id = run_id or best_candidate(experiment, criterion)
    run = client.get_run(run_id)
    report_dir = Path(report_dir)
    with tempfile.TemporaryDirectory() as tmp:
        doc = evaluate_model(
            dataset_dir,
            splits_file,
            _checkpoint_of(client, run_id, Path(tmp)),
            report_dir,
            eval_config,
        )
        candidate_score = promotion_objective(doc)
        champion = _alias_version(client, CHAMPION)
        champion_score = None
        if champion is not None:
            if champion.run_id == run_id:
                # Same model: its whole-scan detection figures may be new (a new detect run).
                for key, value in _detection_tags(detection, run_id).items():
                    client.set_model_version_tag(REGISTERED_MODEL, champion.version, key, value)
                return PromotionDecision(
                    False,
                    f"run {run_id} is already the champion (version {champion.version})",
                    run_id,
                    candidate_score,
                    str(champion.version),
                    candidate_score,
                    None,
                    doc,
                )
            champ_dir = Path(tmp) / "champion"
            champ_doc = evaluate_model(
                dataset_dir,
                splits_file,
                _checkpoint_of(client, champion.run_id, champ_dir),
                champ_dir / "report",
                eval_config,
            )
            champion_score = promotion_objective(champ_doc)
            if candidate_score < champion_score and not force:
                reason = (
                    f"candidate run {run_id} scores {candidate_score:.4f} on the val split "
                    f"(AUC - MAE/4), below champion version {champion.version} at "
                    f"{champion_score:.4f}; kept the champion (use --force to replace it)"
                )
                return PromotionDecision(
                    False,
                    reason,
                    run_id,
                    candidate_score,
                    str(champion.version),
                    champion_score,
                    None,
                    doc,
                )
    log_evaluation(run_id, report_dir, doc)
    threshold = float(doc["threshold"]["value"])
    with mlflow.start_run(run_id=run_id), tempfile.TemporaryDirectory() as tmp:
        checkpoint = _checkpoint_of(client, run_id, Path(tmp))
        info = log_pyfunc_model(
            checkpoint,
            _example_cube(dataset_dir),
            name="registered_model",
            model_config={"threshold": threshold},
        )
    registered = mlflow.register_model(info.model_uri, REGISTERED_MODEL)
    new_version = str(registered.version)
    tags = {
        "val_objective": f"{candidate_score:.4f}",
        "threshold": f"{threshold:.4f}",
        "source_run": run_id,
    }
    for section in ("detection", "malignancy"):
        for key, value in doc[section].items():
            if isinstance(value, (int, float)):
                tags[f"test_{section}_{key}"] = f"{value:.4f}"
    tags.update(_detection_tags(detection, run_id))
    for key, value in tags.items():
        client.set_model_version_tag(REGISTERED_MODEL, new_version, key, value)
    client.update_model_version(
        REGISTERED_MODEL, new_version, description=_model_card(run_id, doc, run, threshold)
    )
    if champion is not None:
        client.set_registered_model_alias(REGISTERED_MODEL, PREVIOUS, champion.version)
    client.set_registered_model_alias(REGISTERED_MODEL, CHAMPION, new_version)
    reason = (
        f"registered version {new_version} as {CHAMPION} (val objective "
        f"{candidate_score:.4f}"
        + (f" vs {champion_score:.4f}" if champion_score is not None else ", no previous champion")
        + ")"
    )
    if force and champion_score is not None and candidate_score < champion_score:
        reason += " -- forced although worse"
    return PromotionDecision(
        True,
        reason,
        run_id,
        candidate_score,
        str(champion.version) if champion else None,
        champion_score,
        new_version,
        doc,
    )


def _detection_tags(detection: tuple[str, dict[str, Any]] | None, run_id: str) -> dict[str, str]:
    """Registry tags of a whole-scan detection evaluation of this run's model."""
    if detection is None or detection[0] != run_id:
        return {}
    keys = ("cpm", "cpm_ci_low", "cpm_ci_high", "candidate_sensitivity", "seconds_per_scan")
    return {
        f"test_scan_{k}": f"{detection[1][k]:.4f}"
        for k in keys
        if isinstance(detection[1].get(k), (int, float))
    }


def _alias_version(client: MlflowClient, alias: str):
    try:
        return client.get_model_version_by_alias(REGISTERED_MODEL, alias)
    except MlflowException:
        return None


def _example_cube(dataset_dir: str | Path):
    import numpy as np

    cubes = np.load(Path(dataset_dir) / "cubes.npy", mmap_mode="r")
    return np.asarray(cubes[:1], dtype=np.float32)[:, None]


def write_decision(decision: PromotionDecision, path: str | Path) -> None:
    doc = {k: v for k, v in decision.__dict__.items() if k != "metrics"}
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(doc, indent=2))
