"""The served model: MLflow's scoring app (``/invocations``, ``/ping``; the protocol of
``mlflow models serve``) behind a guard for requests from outside.

The guard, a plain ASGI middleware, answers before MLflow sees the request:

- a body over ``max_body_bytes`` gets 413, decided from Content-Length before a byte of the
  body is read (or as soon as a body without one passes the limit), so it is never parsed;
- a Parquet body is judged from its footer before any column is decoded: more rows than
  ``max_cubes`` gets 400; a column of strings or bytes (whose decoded size the footer
  cannot bound: 200 kB of a repeated string decodes to gigabytes of Python objects) gets
  400, as lungcad's model takes numbers only; columns that decode to more than
  ``max_decoded_bytes`` (a few kB of zeros can declare gigabytes) get 413;
- a JSON body nested deeper than ``max_json_depth`` gets 400 before it is parsed (Python's
  parser would recurse until it fails with a 500);
- a request without a Content-Type gets 415 (MLflow's server would fail with a 500).

The limits are ``limits.serve`` of params.yaml (``lungcad serve`` passes them on).

and on the way out it drops the ``stack_trace`` MLflow attaches to some 4xx answers, so no
server internals (paths, code) reach a client. The batch size is limited by the served
model (:data:`lungcad.tracking.pyfunc.MAX_BATCH_CUBES`, set through the environment by
``serve_command``; a 400 beyond it).

Run it with ``lungcad serve`` (uvicorn, ``app_from_env`` as factory).
"""

from __future__ import annotations

import io
import json
import os
import re
from collections.abc import Awaitable, Callable
from typing import Any

import numpy as np

from lungcad.config import ServeLimits
from lungcad.registry.client import CONTENT_TYPES

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

MODEL_URI_ENV = "LUNGCAD_SERVE_MODEL_URI"
#: ``limits.serve`` as JSON, for the server process.
LIMITS_ENV = "LUNGCAD_SERVE_LIMITS"


async def _answer(send: Send, status: int, error_code: str, message: str) -> None:
    body = json.dumps({"error_code": error_code, "message": message}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """ASGI middleware: size, shape, depth and content-type checks in, no stack traces out."""

    def __init__(self, app: ASGIApp, limits: ServeLimits | None = None) -> None:
        self.app = app
        self.limits = limits or ServeLimits()

    def _too_large(self, size: str) -> str:
        return (
            f"request body of {size} is over this server's limit of {self.limits.max_body_bytes} "
            "bytes; send fewer cubes per request (Parquet is about 6x smaller than JSON)"
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if not headers.get("content-type", "").strip():
            await _answer(
                send,
                415,
                "UNSUPPORTED_MEDIA_TYPE",
                "no Content-Type: send application/json or application/x-parquet",
            )
            return
        declared = headers.get("content-length")
        if declared is not None:
            if not declared.strip().isdigit():
                await _answer(send, 400, "BAD_REQUEST", f"Content-Length {declared!r} is invalid")
                return
            if int(declared) > self.limits.max_body_bytes:
                await _answer(send, 413, "REQUEST_TOO_LARGE", self._too_large(f"{declared} bytes"))
                return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.limits.max_body_bytes:
                await _answer(send, 413, "REQUEST_TOO_LARGE", self._too_large("over the limit"))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        refusal = self._refusal(headers["content-type"], body)
        if refusal is not None:
            await _answer(send, *refusal)
            return
        await self.app(scope, _replay(body, receive), _without_stack_trace(send))

    def _refusal(self, content_type: str, body: bytes) -> tuple[int, str, str] | None:
        """(status, code, message) for a body that must not reach the parser, or None."""
        media = content_type.split(";")[0].strip().lower()
        limits = self.limits
        if media == CONTENT_TYPES["parquet"]:
            shape = _parquet_shape(body)
            if shape is None:
                return None  # not Parquet at all: MLflow answers 400 "Failed to parse input"
            rows, decoded, text_columns = shape
            if text_columns:
                return (
                    400,
                    "BAD_REQUEST",
                    f"Parquet column(s) {', '.join(text_columns[:3])} hold strings or bytes: "
                    "send HU cubes as float32 (lungcad query does)",
                )
            if rows > limits.max_cubes:
                return (
                    400,
                    "BAD_REQUEST",
                    f"batch of {rows} rows (cubes) is over the maximum of {limits.max_cubes} "
                    "per request; split it into smaller requests",
                )
            if decoded > limits.max_decoded_bytes:
                return (
                    413,
                    "REQUEST_TOO_LARGE",
                    f"request body of {decoded} bytes decoded is over this server's limit of "
                    f"{limits.max_decoded_bytes} bytes; send fewer cubes per request",
                )
        elif media == CONTENT_TYPES["json"]:
            depth = json_depth(body)
            if depth > limits.max_json_depth:
                return (
                    400,
                    "BAD_REQUEST",
                    f"JSON nested {depth} deep, over this server's maximum of "
                    f'{limits.max_json_depth}; send cubes as {{"inputs": [...]}}',
                )
        return None


_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"')
_OPENERS = np.zeros(256, np.int8)
_OPENERS[[ord("["), ord("{")]] = 1
_OPENERS[[ord("]"), ord("}")]] = -1


def json_depth(body: bytes, chunk: int = 1 << 20) -> int:
    """The deepest nesting of brackets in a JSON text (strings left out), without parsing
    it: linear time, memory of one chunk."""
    text = _JSON_STRING.sub(b'""', body)
    depth = deepest = 0
    for start in range(0, len(text), chunk):
        steps = _OPENERS[np.frombuffer(text[start : start + chunk], np.uint8)].astype(np.int64)
        running = depth + np.cumsum(steps)
        if running.size:
            deepest = max(deepest, int(running.max()))
            depth = int(running[-1])
    return deepest


def _parquet_shape(body: bytes) -> tuple[int, int, list[str]] | None:
    """From a Parquet body's footer: its rows, the bytes its values take once decoded
    (values per column chunk times their width: run-length encoding makes even the
    uncompressed sizes in the footer tiny for a column of zeros) and the columns of
    strings or bytes. None: unreadable, left to the scoring server's parser to refuse."""
    import pyarrow.parquet as pq

    try:
        meta = pq.ParquetFile(io.BytesIO(body)).metadata
    except Exception:  # not Parquet at all: MLflow answers 400 "Failed to parse input"
        return None
    total = 0
    text_columns: list[str] = []
    for i in range(meta.num_row_groups):
        group = meta.row_group(i)
        for j in range(group.num_columns):
            column = group.column(j)
            width = _PARQUET_WIDTHS.get(column.physical_type)
            if width is None and column.path_in_schema not in text_columns:
                text_columns.append(column.path_in_schema)
            size = column.num_values * width if width else column.total_uncompressed_size
            total += max(size, column.total_uncompressed_size)
    return meta.num_rows, total, text_columns


_PARQUET_WIDTHS = {"BOOLEAN": 1, "INT32": 4, "FLOAT": 4, "INT64": 8, "DOUBLE": 8, "INT96": 12}


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive channel that yields the already read body once, then the real channel."""
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _without_stack_trace(send: Send) -> Send:
    """Strip ``stack_trace`` from JSON error answers (4xx/5xx); pass everything else on."""
    state: dict[str, Any] = {}

    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start":
            if message["status"] < 400:
                await send(message)
                return
            state["start"] = message
            state["body"] = b""
            return
        if "start" not in state or message["type"] != "http.response.body":
            await send(message)
            return
        state["body"] += message.get("body", b"")
        if message.get("more_body", False):
            return
        body = state["body"]
        try:
            doc = json.loads(body)
            if isinstance(doc, dict) and "stack_trace" in doc:
                doc.pop("stack_trace")
                body = json.dumps(doc).encode()
        except ValueError:
            pass
        start = state.pop("start")
        headers = [(k, v) for k, v in start["headers"] if k.lower() != b"content-length"]
        headers.append((b"content-length", str(len(body)).encode()))
        await send({**start, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    return guarded


def create_app(model_uri: str, limits: ServeLimits | None = None) -> ASGIApp:
    """Load ``model_uri`` (weights-only, see the pyfunc) and serve it behind the guard."""
    import mlflow.pyfunc
    from mlflow.pyfunc import scoring_server

    model = mlflow.pyfunc.load_model(model_uri)
    return RequestGuard(scoring_server.init(model), limits)


def app_from_env() -> ASGIApp:
    """The uvicorn factory: model and limits from the environment ``lungcad serve`` sets."""
    limits = ServeLimits.model_validate_json(os.environ.get(LIMITS_ENV, "{}"))
    return create_app(os.environ[MODEL_URI_ENV], limits)
