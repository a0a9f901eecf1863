"""Collect the environment facts behind `lungcad doctor`.

Every fact is gathered defensively: a part that cannot be read says why instead of failing
the report. Nothing patient-related is read, and passwords in URIs are hidden.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
from pathlib import Path
from typing import Any

import torch

from lungcad import __version__
from lungcad.tracking.mlflow_run import (
    DEFAULT_TRACKING_URI,
    TrackingUnreachableError,
    check_tracking,
    redact_uri,
    tracking_uri,
)

PACKAGES = ("torch", "monai", "mlflow", "dvc", "optuna", "numpy", "SimpleITK", "pydicom")
ADD_REMOTE = "dvc remote add -d storage /mnt/nas/lungcad-dvc"


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def versions() -> dict[str, str]:
    return {
        "lungcad": __version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        **{name: _version(name) for name in PACKAGES},
    }


def device() -> dict[str, str]:
    """CPU cores, and each GPU with its memory and bf16 support; DDP backends."""
    facts = {
        "cpu_cores": str(os.cpu_count()),
        "torch_cuda_build": str(torch.version.cuda),
        "cuda_available": str(torch.cuda.is_available()).lower(),
        "ddp_backends": ", ".join(
            name
            for name, ok in (
                ("gloo", torch.distributed.is_gloo_available()),
                ("nccl", torch.distributed.is_nccl_available()),
            )
            if ok
        )
        or "none",
    }
    if torch.cuda.is_available():
        facts["bf16_supported"] = str(torch.cuda.is_bf16_supported()).lower()
        for i in range(torch.cuda.device_count()):
            props = torch.cuda.get_device_properties(i)
            facts[f"gpu{i}"] = f"{props.name}, {props.total_memory / 2**30:.1f} GiB"
    return facts


def tracking() -> dict[str, str]:
    """The tracking URI (password hidden), whether it answers, and the registered champion."""
    uri = tracking_uri()
    facts = {"uri": redact_uri(uri), "source": "MLFLOW_TRACKING_URI"}
    if "MLFLOW_TRACKING_URI" not in os.environ:
        facts["source"] = "default"
    if uri == DEFAULT_TRACKING_URI and not Path("mlflow.db").is_file():
        facts["reachable"] = "no local mlflow.db here yet (created by the first run)"
        return facts
    try:
        check_tracking(uri, timeout_s=5)
    except TrackingUnreachableError as exc:
        facts["reachable"] = f"no: {exc}"
        return facts
    facts["reachable"] = "yes"
    facts["champion"] = _champion(uri)
    return facts


def _champion(uri: str) -> str:
    from mlflow.exceptions import MlflowException
    from mlflow.tracking import MlflowClient

    from lungcad.tracking.model_ref import CHAMPION, REGISTERED_MODEL

    try:
        version = MlflowClient(uri).get_model_version_by_alias(REGISTERED_MODEL, CHAMPION)
    except MlflowException:
        return f"none registered (`lungcad promote` registers {REGISTERED_MODEL}@{CHAMPION})"
    return f"{REGISTERED_MODEL} version {version.version} (run {version.run_id})"


def dvc_remote(repo: str | Path = ".") -> dict[str, str]:
    """The repository's DVC remotes (URLs resolved as DVC resolves them) and the default,
    with whether a local one exists yet."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc_repo:
            config = dvc_repo.config
            default = config["core"].get("remote")
            remotes = {name: str(opts.get("url", "")) for name, opts in config["remote"].items()}
    except (DvcException, OSError) as exc:
        return {"remote": f"unknown: {exc}"}
    facts: dict[str, str] = {}
    for name, url in remotes.items():
        shown = redact_uri(url)
        if "://" not in url:
            shown += " (exists)" if Path(url).is_dir() else " (not created yet: dvc push makes it)"
        facts[f"remote {name}"] = shown + (" [default]" if name == default else "")
    if not facts:
        facts["remote"] = f"none: add one with `{ADD_REMOTE}`"
    return facts


def collect(repo: str | Path = ".") -> dict[str, dict[str, str]]:
    """Every section of the report."""
    return {
        "versions": versions(),
        "device": device(),
        "tracking": tracking(),
        "dvc": dvc_remote(repo),
    }


def format_report(doc: dict[str, dict[str, Any]]) -> str:
    lines = []
    for section, facts in doc.items():
        lines.append(f"[{section}]")
        lines += [f"  {key}: {value}" for key, value in facts.items()]
    return "\n".join(lines)
