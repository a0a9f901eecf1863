"""Promotion to the registry with aliases and a guard; the champion served over HTTP."""

from __future__ import annotations

import io
import json
import subprocess
import urllib.error
import urllib.request

import numpy as np
import pandas as pd
import pytest
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from lungcad.cli.main import app
from lungcad.config import EvaluateConfig
from lungcad.core.findings.cube import CUBE_FINDING_COLUMNS
from lungcad.registry.client import encode_cubes, predict_remote
from lungcad.registry.promote import REGISTERED_MODEL, promote
from lungcad.registry.serve_command import serve_command
from lungcad.tracking.model_ref import resolve_checkpoint
from lungcad.training.tracked import train_tracked
from tests.conftest import make_tiny_dataset, tiny_train_config
from tests.tools.serving import free_port, wait_until_serving

pytestmark = pytest.mark.slow  # registry promotion and a served model

EVAL = EvaluateConfig(bootstrap=20)


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("registry")
    dataset = make_tiny_dataset(tmp / "dataset", n_patients=10, n_test=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        good = train_tracked(
            tiny_train_config(epochs=20, lr=1e-2, batch_size=8, experiment="reg"),
            *dataset,
            tmp / "good",
            progress=False,
        )
        weak = train_tracked(
            tiny_train_config(epochs=1, lr=1e-7, experiment="reg"),
            *dataset,
            tmp / "weak",
            progress=False,
        )
        first = promote(*dataset, experiment="reg", report_dir=tmp / "p1", eval_config=EVAL)
        refused = promote(*dataset, run_id=weak.run_id, report_dir=tmp / "p2", eval_config=EVAL)
        yield {
            "tmp": tmp,
            "dataset": dataset,
            "good": good,
            "weak": weak,
            "first": first,
            "refused": refused,
            "mp": mp,
        }


def test_best_run_becomes_the_champion_with_metrics_and_card(registry) -> None:
    first, good = registry["first"], registry["good"]
    assert first.promoted and first.candidate_run_id == good.run_id and first.new_version == "1"
    client = MlflowClient()
    version = client.get_model_version_by_alias(REGISTERED_MODEL, "champion")
    assert str(version.version) == "1" and version.run_id == good.run_id
    for tag in (
        "test_detection_auc",
        "test_malignancy_mae",
        "test_malignancy_pearson",
        "threshold",
    ):
        assert tag in version.tags
    assert "Not a medical device" in version.description and "HU window" in version.description
    assert "evaluation/report.md" in {
        a.path for a in client.list_artifacts(good.run_id, "evaluation")
    }
    # detect and explain name the model by the version the alias points at
    checkpoint, label = resolve_checkpoint(
        f"models:/{REGISTERED_MODEL}@champion", registry["tmp"] / "download"
    )
    assert label == f"models:/{REGISTERED_MODEL}/1" and checkpoint.suffix == ".pt"


def test_a_worse_candidate_is_refused_unless_forced(registry) -> None:
    refused = registry["refused"]
    assert not refused.promoted and "below champion version 1" in refused.reason
    assert refused.candidate_objective < refused.champion_objective
    client = MlflowClient()
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version) == "1"
    forced = promote(
        *registry["dataset"],
        run_id=registry["weak"].run_id,
        force=True,
        report_dir=registry["tmp"] / "p3",
        eval_config=EVAL,
    )
    assert forced.promoted and "forced" in forced.reason
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version) == "2"
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL, "previous").version) == "1"
    # Put the good model back as champion for the serving test.
    promote(
        *registry["dataset"],
        run_id=registry["good"].run_id,
        force=True,
        report_dir=registry["tmp"] / "p4",
        eval_config=EVAL,
    )
    assert str(client.get_model_version_by_alias(REGISTERED_MODEL, "champion").version) == "3"


def _post(port: int, body: bytes, content_type: str = "application/json") -> tuple[int, dict]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": content_type},
    )
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read() or b"{}")


def _parquet(columns: dict) -> bytes:
    buffer = io.BytesIO()
    pd.DataFrame(columns).to_parquet(buffer)
    return buffer.getvalue()


def test_champion_is_served_and_bad_input_gets_4xx(registry) -> None:
    tmp = registry["tmp"]
    port = free_port()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        cmd, env = serve_command(f"models:/{REGISTERED_MODEL}@champion", port=port)
    server = subprocess.Popen(
        cmd, cwd=tmp, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_until_serving(port, server)
        cubes = np.load(registry["dataset"][0] / "cubes.npy")[:3].astype(np.float32)[:, None]
        status, body = _post(port, json.dumps({"inputs": cubes.tolist()}).encode())
        assert status == 200, body
        rows = body["predictions"]
        # the nodule outlined at each cube's centre, compact (the champion segments)
        found = set(CUBE_FINDING_COLUMNS)
        assert len(rows) == 3 and set(rows[0]) == {"nodule_prob", "malignancy", "nodule", *found}
        assert all(r["lung_rads"] in ("0", "2", "3", "4A", "4B") for r in rows)
        assert all(0 <= r["nodule_prob"] <= 1 and r["nodule"] in (0, 1) for r in rows)
        # Asked for, the detection map comes back too: 32³ cubes pooled by 4 -> 8³ values.
        ask = {"inputs": cubes.tolist(), "params": {"explain": True}}
        status, body = _post(port, json.dumps(ask).encode())
        assert status == 200, body
        explained = body["predictions"]
        assert set(explained[0]) == {"nodule_prob", "malignancy", "nodule", *found, "detection_map"}
        for plain, r in zip(rows, explained):
            assert r["nodule_prob"] == pytest.approx(plain["nodule_prob"], abs=1e-6)
            cam = np.array(r["detection_map"])
            assert cam.shape == (8, 8, 8) and cam.min() >= 0.0 and cam.max() <= 1.0
        bad = {
            "wrong shape": json.dumps({"inputs": np.zeros((1, 1, 8, 8, 8)).tolist()}).encode(),
            "wrong dtype": json.dumps({"inputs": [["a"] * 4]}).encode(),
            "NaN": json.dumps({"inputs": np.full((1, 1, 32, 32, 32), np.nan).tolist()}).encode(),
            "empty batch": json.dumps({"inputs": []}).encode(),
            "malformed JSON": b'{"inputs": [[1, 2',
        }
        for name, payload in bad.items():
            status, body = _post(port, payload)
            assert 400 <= status < 500, (name, status, body)
            assert "Traceback" not in json.dumps(body), name
        status, _ = _post(port, json.dumps({"inputs": cubes[:1].tolist()}).encode())
        assert status == 200  # still serving

        # The compact encoding: same answers as JSON, in a sixth of the bytes.
        body, content_type = encode_cubes(cubes, "parquet")
        assert len(body) < len(encode_cubes(cubes, "json")[0]) / 4
        status, compact = _post(port, body, content_type)
        assert status == 200, compact
        expected = pd.DataFrame(rows)
        pd.testing.assert_frame_equal(pd.DataFrame(compact["predictions"]), expected)
        table = predict_remote(f"http://127.0.0.1:{port}", cubes, "parquet", batch_size=2)
        pd.testing.assert_frame_equal(table, expected)
        flat = cubes.reshape(3, -1)
        bad_parquet = {
            "wrong length": _parquet({"cube": [flat[0, :1000]]}),
            "NaN": _parquet({"cube": [np.full_like(flat[0], np.nan)]}),
            "empty batch": _parquet({"cube": pd.Series([], dtype=object)}),
            "scalar column": _parquet({"cube": [1.0]}),
        }
        for name, payload in bad_parquet.items():
            status, answer = _post(port, payload, content_type)
            assert 400 <= status < 500, (name, status, answer)
            assert "Traceback" not in json.dumps(answer), name
        # A body that is not Parquet at all: 400 with the parser's message (MLflow's scoring
        # server attaches the parser's stack trace to this one answer, documented).
        status, answer = _post(port, b"PAR1 this is not a parquet file", content_type)
        assert status == 400 and "Failed to parse input" in answer["message"]

        # `lungcad query` against the server: predictions to CSV; a refusal is a clear error.
        np.save(tmp / "query.npy", cubes[:, 0])
        runner = CliRunner()
        result = runner.invoke(
            app,
            [
                "query",
                str(tmp / "query.npy"),
                "--url",
                f"http://127.0.0.1:{port}",
                "--out",
                str(tmp / "query.csv"),
            ],
        )
        assert result.exit_code == 0, result.output
        assert len(pd.read_csv(tmp / "query.csv")) == 3
        np.save(tmp / "nan.npy", np.full_like(cubes[:1, 0], np.nan))
        result = runner.invoke(
            app, ["query", str(tmp / "nan.npy"), "--url", f"http://127.0.0.1:{port}"]
        )
        assert result.exit_code == 2 and "HTTP 400" in result.output and "NaN" in result.output
        status, _ = _post(port, body, content_type)
        assert status == 200  # still serving
    finally:
        server.terminate()
        server.wait(timeout=30)
