"""Which trained network `lungcad detect` uses: a checkpoint file, or a registered model
(``models:/lungcad@champion``, ``models:/lungcad/3``, ``runs:/<id>/...``) downloaded from the
MLflow registry. Without a reference the registry's champion is used when a registry
exists, else ``models/best.pt``."""

from __future__ import annotations

from pathlib import Path

from lungcad.errors import LungcadError
from lungcad.tracking.mlflow_run import DEFAULT_TRACKING_URI, setup_tracking, tracking_uri

#: The registered model and its aliases (``lungcad promote`` moves them).
REGISTERED_MODEL = "lungcad"
CHAMPION, PREVIOUS = "champion", "previous"
CHAMPION_URI = f"models:/{REGISTERED_MODEL}@{CHAMPION}"
DEFAULT_CHECKPOINT = Path("models/best.pt")


class ModelReferenceError(LungcadError, ValueError):
    """The model reference cannot be resolved; the message says why and what to do."""


def _registry_exists() -> bool:
    uri = tracking_uri()
    if uri == DEFAULT_TRACKING_URI:
        return Path("mlflow.db").is_file()  # do not create an empty store by asking
    return True


def _champion_exists() -> bool:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    setup_tracking()
    try:
        MlflowClient().get_model_version_by_alias("lungcad", "champion")
    except MlflowException:
        return False
    return True


def _with_version(ref: str) -> str:
    """``models:/name@alias`` as ``models:/name/<version>`` (which model an alias named at
    the time: what reports and DICOM objects must record); other references as given."""
    if not ref.startswith("models:/") or "@" not in ref:
        return ref
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    name, alias = ref.removeprefix("models:/").split("@", 1)
    try:
        version = MlflowClient().get_model_version_by_alias(name, alias).version
    except MlflowException:
        return ref
    return f"models:/{name}/{version}"


def resolve_checkpoint(ref: str | None, workdir: str | Path) -> tuple[Path, str]:
    """(local checkpoint path, what it is) for a model reference (see module docstring).

    Raises:
        ModelReferenceError: no such file, or the registry cannot give that model.
    """
    if ref is None:
        if _registry_exists() and _champion_exists():
            ref = CHAMPION_URI
        elif DEFAULT_CHECKPOINT.is_file():
            return DEFAULT_CHECKPOINT, str(DEFAULT_CHECKPOINT)
        else:
            raise ModelReferenceError(
                "no model given, no registered champion and no models/best.pt: pass --model "
                "with a checkpoint or a models:/ URI, or train one (dvc repro train)"
            )
    if ref.startswith(("models:/", "runs:/")):
        import mlflow
        from mlflow.exceptions import MlflowException

        setup_tracking()
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=ref, dst_path=str(workdir))
            )
        except (MlflowException, OSError) as exc:
            raise ModelReferenceError(
                f"--model {ref}: the MLflow registry at {tracking_uri()} cannot give it "
                f"({str(exc).splitlines()[0]}); check the name/alias with `mlflow ui`"
            ) from exc
        found = [local] if local.is_file() else sorted(local.rglob("*.pt"))
        if not found:
            raise ModelReferenceError(f"--model {ref}: the logged model holds no .pt checkpoint")
        return found[0], _with_version(ref)
    path = Path(ref)
    if not path.is_file():
        raise ModelReferenceError(
            f"--model {ref}: no such checkpoint file (give a lungcad .pt checkpoint or a "
            "models:/name@alias URI)"
        )
    return path, str(path)
