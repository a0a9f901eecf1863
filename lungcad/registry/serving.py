"""How the champion is served: `mlflow models serve` with the local environment manager."""

from __future__ import annotations

import os
import sys

from lungcad.tracking.mlflow_run import tracking_uri

CHAMPION_URI = "models:/lungcad@champion"


def serve_command(
    model_uri: str = CHAMPION_URI, host: str = "127.0.0.1", port: int = 5001, workers: int = 1
) -> tuple[list[str], dict[str, str]]:
    """The command line and environment that serve ``model_uri`` offline.

    ``--env-manager local`` reuses this environment (the default, virtualenv, would need the
    internet); this environment's scripts go first on PATH because MLflow starts uvicorn by
    name; the tracking URI is lungcad's (sqlite:///mlflow.db unless MLFLOW_TRACKING_URI).
    """
    cmd = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        model_uri,
        "--env-manager",
        "local",
        "-h",
        host,
        "-p",
        str(port),
        "-w",
        str(workers),
    ]
    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": tracking_uri(),
        "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    return cmd, env
