"""The served model under a bounded hostile load: 1000 requests at concurrency 8 over
loopback, half of them malformed (drawn by Hypothesis). No 5xx, every bad request a 4xx
with a message, the valid ones answered correctly, memory flat, the server alive at the end."""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request

import mlflow
import numpy as np
import pytest

from lungcad.config import ServeLimits
from lungcad.registry.serve_command import serve_command
from lungcad.training.tracked import train_tracked
from tests.conftest import make_tiny_dataset, tiny_train_config
from tests.tools.loadtest import RequestBuilder, make_specs, rss_mb, run_load
from tests.tools.serving import ServerNotReadyError, free_port, wait_until_serving

REQUESTS = 1000
CONCURRENCY = 8
MAX_BODY = 8 << 20  # small: over-limit bodies are cheap to send; 36 32³ cubes fit


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    dataset = make_tiny_dataset(tmp / "dataset", n_patients=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(tmp)
        mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp}/mlflow.db")
        run = train_tracked(
            tiny_train_config(epochs=1, experiment="hostile"), *dataset, tmp / "m", progress=False
        )
        port = free_port()
        cmd, env = serve_command(
            f"runs:/{run.run_id}/model",
            port=port,
            limits=ServeLimits(max_body_bytes=MAX_BODY, max_decoded_bytes=MAX_BODY),
        )
    log = (tmp / "server.log").open("w")
    server = subprocess.Popen(cmd, cwd=tmp, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_serving(port, server)
    except ServerNotReadyError as exc:
        raise AssertionError((tmp / "server.log").read_text()) from exc
    cubes = np.load(dataset[0] / "cubes.npy").astype(np.float32)
    yield {"url": f"http://127.0.0.1:{port}", "server": server, "cubes": cubes, "tmp": tmp}
    server.terminate()
    server.wait(timeout=30)
    mlflow.set_tracking_uri(None)


def test_hostile_load_gets_no_5xx_every_bad_request_a_4xx_and_flat_memory(served) -> None:
    builder = RequestBuilder(served["cubes"], MAX_BODY)
    specs = make_specs(REQUESTS, bad_share=0.5, seed=0, cube_size=served["cubes"].shape[-1])
    kinds = {s.kind for s in specs}
    assert {"wrong_shape", "nonfinite", "truncated", "over_limit", "over_batch"} <= kinds
    # Warm the server up (first-call allocations are not growth), then measure.
    run_load(served["url"], specs[:40], builder, CONCURRENCY)
    report = run_load(served["url"], specs, builder, CONCURRENCY, served["server"].pid)
    summary = report.summary()
    (served["tmp"] / "load.json").write_text(json.dumps(summary, indent=2))

    assert summary["requests"] == REQUESTS and summary["5xx"] == 0, summary
    assert summary["no_answer"] == 0, [a for a in report.answers if a.status == 0][:3]
    for a in report.answers:
        if a.spec.valid:
            assert a.status == 200 and a.n_predictions == a.spec.n, (a.spec, a.status, a.message)
        else:
            assert 400 <= a.status < 500, (a.spec, a.status, a.message)
            assert a.message, (a.spec, a.status)  # says what is wrong
            assert "Traceback" not in a.message and "stack_trace" not in a.message
    over = [a for a in report.answers if a.spec.kind.startswith("over_limit")]
    assert over and all(a.status == 413 and "limit" in a.message for a in over)
    # Parquet bodies of a few kB that decode to more than the limit: refused from the footer.
    bombs = [
        a for a in report.answers
        if a.spec.kind == "huge_dims" and np.prod(a.spec.shape) * 4 > MAX_BODY
    ]  # fmt: skip
    assert bombs and all(a.status == 413 and "decoded" in a.message for a in bombs)
    batch = [a for a in report.answers if a.spec.kind == "over_batch"]
    assert batch and all("over the maximum" in a.message for a in batch)
    # Memory: no growth from the first half of the run to the second.
    rss = summary["rss_mb"]
    assert rss["after"] <= rss["half"] * 1.10 + 20, rss
    assert served["server"].poll() is None  # alive
    with urllib.request.urlopen(f"{served['url']}/ping", timeout=5) as r:
        assert r.status == 200


def _post(url: str, body: bytes, content_type: str) -> tuple[int, str]:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": content_type}
    )
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())["message"]


def test_a_parquet_of_millions_of_strings_is_refused_unparsed(served) -> None:
    """About 200 kB of Parquet that would decode to two million Python strings (gigabytes
    in the scoring server): refused from its footer, the server's memory flat."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    buffer = io.BytesIO()
    column = pa.array(["lungcad-" * 8] * 2_000_000).dictionary_encode()
    pq.write_table(pa.table({"cube": column}), buffer, compression="zstd")
    body = buffer.getvalue()
    assert len(body) < 1 << 20
    before = rss_mb(served["server"].pid)
    status, message = _post(served["url"], body, "application/vnd.apache.parquet")
    assert status == 400 and "hold strings or bytes" in message, (status, message)
    assert rss_mb(served["server"].pid) - before <= 200


def test_json_nested_deeper_than_the_limit_is_refused_unparsed(served) -> None:
    body = b'{"inputs": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    status, message = _post(served["url"], body, "application/json")
    assert status == 400 and "JSON nested 100001 deep" in message, (status, message)
    assert served["server"].poll() is None
