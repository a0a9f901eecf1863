"""How the champion is served: uvicorn running lungcad's guarded MLflow scoring app."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request

from lungcad.registry.server import MAX_BODY_BYTES, MAX_BODY_ENV, MODEL_URI_ENV
from lungcad.tracking.mlflow_run import tracking_uri

CHAMPION_URI = "models:/lungcad@champion"


def serve_command(
    model_uri: str = CHAMPION_URI,
    host: str = "127.0.0.1",
    port: int = 5001,
    workers: int = 1,
    max_body_bytes: int = MAX_BODY_BYTES,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve ``model_uri`` offline.

    The server is MLflow's scoring app (the protocol of ``mlflow models serve``) behind
    :class:`lungcad.registry.server.RequestGuard`, run by uvicorn in this environment (no
    environment is built, nothing downloaded); the tracking URI is lungcad's
    (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI).
    """
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "lungcad.registry.server:app_from_env",
        "--host",
        host,
        "--port",
        str(port),
        "--workers",
        str(workers),
        "--no-access-log",
    ]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(),
        MODEL_URI_ENV: model_uri,
        MAX_BODY_ENV: str(max_body_bytes),
    }
    return cmd, env


class ServerNotReadyError(RuntimeError):
    """The server exited or did not answer /ping in time."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on now (for test and benchmark servers)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def wait_until_serving(
    port: int,
    server: subprocess.Popen,
    timeout_s: float = 120.0,
    host: str = "127.0.0.1",
    path: str = "/ping",
) -> None:
    """Return once ``http://host:port/ping`` (or ``path``: ``/health`` of an MLflow
    tracking server) answers 200.

    Raises:
        ServerNotReadyError: ``server`` exited, or ``timeout_s`` passed first.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        if server.poll() is not None:
            raise ServerNotReadyError(f"the server exited (code {server.returncode}) before {path}")
        if time.monotonic() > deadline:
            raise ServerNotReadyError(f"no answer on port {port} {path} within {timeout_s:.0f} s")
        time.sleep(0.5)
