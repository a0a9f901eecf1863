"""`lungcad doctor`: the facts of this machine, the tracking URI without its password and
whether it answers, the champion, and the DVC remote or how to add one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from typer.testing import CliRunner

from lungcad.cli.main import app
from tests.tools.serving import free_port


def _doctor() -> dict:
    result = CliRunner().invoke(app, ["doctor", "--json"])
    assert result.exit_code == 0, result.output
    return json.loads(result.output[result.output.index("{") :])


def _dvc(cwd: Path, *args: str) -> None:
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = str(Path(sys.executable).parent / "dvc")
    subprocess.run([dvc, *args], cwd=cwd, env=env, check=True, capture_output=True)


def test_doctor_reports_this_machine_and_an_unreachable_server(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}")
    _dvc(tmp_path, "init", "--no-scm")
    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://ann:pa55word@127.0.0.1:{port}")
    doc = _doctor()
    assert doc["versions"]["torch"] == torch.__version__
    assert doc["device"]["cuda_available"] == str(torch.cuda.is_available()).lower()
    assert doc["device"]["cpu_cores"] == str(os.cpu_count())
    assert "gloo" in doc["device"]["ddp_backends"]
    assert doc["tracking"]["uri"] == f"http://ann:***@127.0.0.1:{port}"
    assert doc["tracking"]["reachable"].startswith("no:")
    assert "pa55word" not in json.dumps(doc)
    assert "dvc remote add -d" in doc["dvc"]["remote"]  # none yet: says how to add one

    storage = tmp_path / "nas"
    _dvc(tmp_path, "remote", "add", "-d", "storage", str(storage))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    doc = _doctor()
    assert doc["dvc"]["remote storage"].startswith(str(storage))
    assert doc["dvc"]["remote storage"].endswith("[default]")
    assert doc["tracking"]["reachable"] == "yes"
    assert doc["tracking"]["champion"].startswith("none registered")
