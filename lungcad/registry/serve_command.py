"""How the champion is served: uvicorn running lungcad's guarded MLflow scoring app."""

from __future__ import annotations

import os
import sys

from lungcad.config import ServeLimits
from lungcad.registry.guarded_app import LIMITS_ENV, MODEL_URI_ENV
from lungcad.tracking.mlflow_run import tracking_uri
from lungcad.tracking.model_ref import CHAMPION_URI
from lungcad.tracking.pyfunc import MAX_CUBES_ENV


def serve_command(
    model_uri: str = CHAMPION_URI,
    host: str = "127.0.0.1",
    port: int = 5001,
    workers: int = 1,
    limits: ServeLimits | None = None,
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve ``model_uri`` offline.

    The server is MLflow's scoring app (the protocol of ``mlflow models serve``) behind
    :class:`lungcad.registry.guarded_app.RequestGuard`, run by uvicorn in this environment (no
    environment is built, nothing downloaded); the tracking URI is lungcad's
    (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI); ``limits`` (``limits.serve``,
    the defaults when None) bound every request.
    """
    limits = limits or ServeLimits()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "--factory",
        "lungcad.registry.guarded_app:app_from_env",
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
        LIMITS_ENV: limits.model_dump_json(),
        MAX_CUBES_ENV: str(limits.max_cubes),
    }
    return cmd, env
