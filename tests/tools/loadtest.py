"""A bounded hostile load test of a served lungcad model: valid and malformed requests mixed,
sent concurrently over loopback, every answer checked, the server's memory sampled.

The malformed requests are drawn by Hypothesis (the ``dev`` extra): wrong shapes, wrong
dtypes, NaN/inf, huge dimensions, truncated bodies, wrong content types, batches over the
maximum, bodies over the size limit (with and without Content-Length), garbage. Hypothesis
draws a small spec per request and the body is built from it, so even large bodies cost
the generator nothing. The same seed gives the same requests.

Used by the test suite (a tiny model) and by ``bench/serve_hostile.py`` (the champion).
"""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lungcad.registry.client import CONTENT_TYPES
from lungcad.tracking.pyfunc import MAX_BATCH_CUBES

WRONG_CONTENT_TYPES = [
    "text/plain",
    "application/xml",
    "image/png",
    "multipart/form-data; boundary=x",
    "application/json; charset=latin-1",
    "application/json; version=2",
    "",
]
KINDS = [
    "wrong_shape",
    "wrong_dtype",
    "nonfinite",
    "huge_dims",
    "truncated",
    "content_type",
    "over_batch",
    "over_limit",
    "over_limit_chunked",
    "garbage",
    "wrong_method",
]


@dataclass(frozen=True)
class Spec:
    """One request to make: ``kind`` ("valid_json", "valid_parquet" or one of KINDS) and
    the drawn details it is built from."""

    kind: str
    n: int = 1
    shape: tuple[int, ...] = ()
    value: Any = None
    position: float = 0.0
    content_type: str = ""

    @property
    def valid(self) -> bool:
        return self.kind.startswith("valid")


@dataclass
class Answer:
    spec: Spec
    status: int
    seconds: float
    message: str
    n_predictions: int = 0


@dataclass
class LoadReport:
    answers: list[Answer]
    rss_mb: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        valid = [a for a in self.answers if a.spec.valid]
        bad = [a for a in self.answers if not a.spec.valid]
        latencies = np.array([a.seconds for a in valid if a.status == 200]) * 1000
        return {
            "requests": len(self.answers),
            "valid": len(valid),
            "malformed": len(bad),
            "2xx": sum(200 <= a.status < 300 for a in self.answers),
            "4xx": sum(400 <= a.status < 500 for a in self.answers),
            "5xx": sum(a.status >= 500 for a in self.answers),
            "no_answer": sum(a.status == 0 for a in self.answers),
            "valid_p50_ms": float(np.percentile(latencies, 50)) if len(latencies) else None,
            "valid_p95_ms": float(np.percentile(latencies, 95)) if len(latencies) else None,
            "bad_by_kind": {
                k: sorted({a.status for a in bad if a.spec.kind == k})
                for k in sorted({a.spec.kind for a in bad})
            },
            "rss_mb": self.rss_mb,
            "seconds": round(self.seconds, 1),
        }


def hostile_specs(n_bad: int, seed: int, cube_size: int) -> list[Spec]:
    """``n_bad`` malformed-request specs drawn by Hypothesis (reproducible from ``seed``)."""
    from hypothesis import HealthCheck, Phase, given, settings
    from hypothesis import seed as hypothesis_seed
    from hypothesis import strategies as st

    dims = st.integers(1, 40)
    shapes = (
        st.lists(dims, min_size=1, max_size=6)
        .map(tuple)
        .filter(lambda s: s[-3:] != (cube_size,) * 3 and int(np.prod(s)) <= 200_000)
    )
    odd_values = st.one_of(
        st.text(max_size=8),
        st.booleans(),
        st.none(),
        st.dictionaries(st.text(max_size=4), st.integers(), max_size=3),
        st.lists(st.text(max_size=3), max_size=4),
    )
    encodings = st.sampled_from(["json", "parquet"])
    by_kind = {
        "wrong_shape": st.builds(Spec, kind=st.just("wrong_shape"), shape=shapes),
        "wrong_dtype": st.builds(Spec, kind=st.just("wrong_dtype"), value=odd_values),
        "nonfinite": st.builds(
            Spec,
            kind=st.just("nonfinite"),
            n=st.integers(1, 3),
            value=st.sampled_from(["nan", "inf", "-inf"]),
            position=st.floats(0, 1),
            content_type=encodings,
        ),
        # Few bytes on the wire (zeros compress), millions of values once decoded.
        "huge_dims": st.builds(
            Spec,
            kind=st.just("huge_dims"),
            shape=st.tuples(
                st.just(1),
                st.just(1),
                st.integers(1, 16),
                st.integers(1, 16),
                st.integers(2000, 20000),
            ),
        ),  # fmt: skip
        "truncated": st.builds(
            Spec, kind=st.just("truncated"), position=st.floats(0.0, 0.99), content_type=encodings
        ),
        "content_type": st.builds(
            Spec, kind=st.just("content_type"), content_type=st.sampled_from(WRONG_CONTENT_TYPES)
        ),
        "over_batch": st.builds(Spec, kind=st.just("over_batch"), n=st.integers(1, 4)),
        "over_limit": st.just(Spec("over_limit")),
        "over_limit_chunked": st.just(Spec("over_limit_chunked")),
        "garbage": st.builds(
            Spec, kind=st.just("garbage"), value=st.binary(max_size=256), content_type=encodings
        ),
        "wrong_method": st.just(Spec("wrong_method")),
    }
    # Kinds equally often; the request number keeps Hypothesis from skipping the kinds that
    # have a single form (it does not run an example twice).
    spec = st.tuples(
        st.sampled_from(KINDS).flatmap(by_kind.__getitem__), st.integers(0, 2**30)
    ).map(lambda drawn: drawn[0])
    drawn: list[Spec] = []

    @hypothesis_seed(seed)
    @settings(
        max_examples=n_bad,
        database=None,
        phases=[Phase.generate],
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(spec)
    def collect(s: Spec) -> None:
        drawn.append(s)

    collect()
    return drawn[:n_bad]


def make_specs(n_requests: int, bad_share: float, seed: int, cube_size: int) -> list[Spec]:
    """Valid (1..4 cubes, JSON or Parquet) and malformed specs, shuffled together."""
    rng = random.Random(seed)
    n_bad = round(n_requests * bad_share)
    bad = hostile_specs(n_bad, seed, cube_size)
    while len(bad) < n_bad:  # Hypothesis may stop early once a space is exhausted
        bad.append(rng.choice(bad))
    valid = [
        Spec(rng.choice(["valid_json", "valid_parquet"]), n=rng.randint(1, 4))
        for _ in range(n_requests - n_bad)
    ]
    specs = bad + valid
    rng.shuffle(specs)
    return specs


def _json_body(cubes: np.ndarray) -> bytes:
    return json.dumps({"inputs": cubes.tolist()}).encode()


def _parquet_body(cubes: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    flat = cubes.reshape(len(cubes), -1)
    pd.DataFrame({"cube": list(flat)}).to_parquet(buffer, compression="zstd")
    return buffer.getvalue()


class RequestBuilder:
    """Turns specs into (method, body, content type) with real cubes as the valid payload."""

    JSON, PARQUET = CONTENT_TYPES["json"], CONTENT_TYPES["parquet"]

    def __init__(self, cubes: np.ndarray, max_body_bytes: int) -> None:
        self.cubes = np.asarray(cubes, dtype=np.float32).reshape(len(cubes), 1, *cubes.shape[-3:])
        self.max_body_bytes = max_body_bytes

    def _cubes(self, n: int, offset: int = 0) -> np.ndarray:
        idx = (np.arange(n) + offset) % len(self.cubes)
        return self.cubes[idx]

    def build(self, spec: Spec, i: int) -> tuple[str, bytes | None, str, bool]:
        """(method, body, content type, chunked) for ``spec``; ``i`` varies the cubes."""
        kind = spec.kind
        encode = _parquet_body if spec.content_type == "parquet" else _json_body
        ctype = self.PARQUET if spec.content_type == "parquet" else self.JSON
        if kind == "valid_json":
            return "POST", _json_body(self._cubes(spec.n, i)), self.JSON, False
        if kind == "valid_parquet":
            return "POST", _parquet_body(self._cubes(spec.n, i)), self.PARQUET, False
        if kind == "wrong_shape":
            return "POST", _json_body(np.zeros(spec.shape, np.float32)), self.JSON, False
        if kind == "wrong_dtype":
            return "POST", json.dumps({"inputs": spec.value}).encode(), self.JSON, False
        if kind == "nonfinite":
            cubes = self._cubes(spec.n, i).copy()
            flat = cubes.reshape(-1)
            flat[int(spec.position * (flat.size - 1))] = float(spec.value)
            return "POST", encode(cubes), ctype, False
        if kind == "huge_dims":
            return "POST", _parquet_body(np.zeros(spec.shape, np.float32)), self.PARQUET, False
        if kind == "truncated":
            body = encode(self._cubes(1, i))
            return "POST", body[: int(len(body) * spec.position)], ctype, False
        if kind == "content_type":
            return "POST", _json_body(self._cubes(1, i)), spec.content_type, False
        if kind == "over_batch":
            n = MAX_BATCH_CUBES + spec.n
            return "POST", _parquet_body(self._cubes(n, i)), self.PARQUET, False
        if kind in ("over_limit", "over_limit_chunked"):
            body = b'{"inputs": [' + b"0," * (self.max_body_bytes // 2) + b"0]}"
            return "POST", body, self.JSON, kind == "over_limit_chunked"
        if kind == "garbage":
            return "POST", bytes(spec.value), ctype, False
        if kind == "wrong_method":
            return "GET", None, self.JSON, False
        raise ValueError(f"unknown request kind {kind!r}")


def _send(
    host: str,
    port: int,
    method: str,
    body: bytes | None,
    ctype: str,
    chunked: bool,
    expect_refusal: bool = False,
) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection(host, port, timeout=120)
    try:
        headers = {"Content-Type": ctype} if ctype else {}
        if chunked:
            conn.putrequest(method, "/invocations", skip_accept_encoding=True)
            for key, value in {**headers, "Transfer-Encoding": "chunked"}.items():
                conn.putheader(key, value)
            conn.endheaders()
            step = 1 << 20
            try:
                for start in range(0, len(body or b""), step):
                    chunk = body[start : start + step]
                    conn.send(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                conn.send(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                pass  # refused midway: the answer is already waiting
        elif expect_refusal:
            # Content-Length over the limit: like a client sending "Expect: 100-continue",
            # wait for the server's answer before the body; the server decides unread.
            conn.putrequest(method, "/invocations", skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            conn.putheader("Content-Length", str(len(body or b"")))
            conn.putheader("Expect", "100-continue")
            conn.endheaders()
        else:
            conn.putrequest(method, "/invocations", skip_accept_encoding=True)
            for key, value in headers.items():
                conn.putheader(key, value)
            if body is not None:
                conn.putheader("Content-Length", str(len(body)))
            conn.endheaders()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                conn.send(body or b"")
        response = conn.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return 0, f"no answer: {type(exc).__name__}: {exc}".encode()
    finally:
        conn.close()


def rss_mb(pid: int) -> float:
    """Resident memory of process ``pid`` and its children (uvicorn workers), in MB."""
    import psutil

    proc = psutil.Process(pid)
    total = proc.memory_info().rss
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += child.memory_info().rss
    return total / 1e6


def run_load(
    url: str,
    specs: list[Spec],
    builder: RequestBuilder,
    concurrency: int = 8,
    server_pid: int | None = None,
    progress: bool = False,
) -> LoadReport:
    """Send every spec's request to ``url`` (http://host:port), ``concurrency`` at a time.

    The server's RSS is read before, after the first half and at the end.
    """
    from tqdm.auto import tqdm

    host, port = url.removeprefix("http://").rstrip("/").split(":")

    def one(item: tuple[int, Spec]) -> Answer:
        i, spec = item
        method, body, ctype, chunked = builder.build(spec, i)
        started = time.perf_counter()
        refusal = spec.kind == "over_limit"
        status, raw = _send(host, int(port), method, body, ctype, chunked, refusal)
        seconds = time.perf_counter() - started
        message, n = "", 0
        try:
            doc = json.loads(raw)
            if isinstance(doc, dict):
                message = str(doc.get("message", doc.get("detail", "")))
                n = len(doc.get("predictions", []))
        except ValueError:
            message = raw.decode("utf-8", "replace")
        return Answer(spec, status, seconds, message.strip(), n)

    rss: dict[str, float] = {}
    if server_pid:
        rss["before"] = rss_mb(server_pid)
    answers: list[Answer] = []
    started = time.perf_counter()
    half = len(specs) // 2
    with (
        ThreadPoolExecutor(concurrency) as pool,
        tqdm(total=len(specs), desc="hostile load", unit="req", disable=not progress) as bar,
    ):
        for part, chunk in (("half", specs[:half]), ("after", specs[half:])):
            offset = 0 if part == "half" else half
            for answer in pool.map(one, enumerate(chunk, start=offset)):
                answers.append(answer)
                bar.update()
            if server_pid:
                rss[part] = rss_mb(server_pid)
    return LoadReport(answers, rss, time.perf_counter() - started)


def write_report(report: LoadReport, path: str | Path) -> dict[str, Any]:
    summary = report.summary()
    Path(path).write_text(json.dumps(summary, indent=2))
    return summary
