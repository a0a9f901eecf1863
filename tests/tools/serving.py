"""Starting and waiting for a local server in tests and benchmarks."""

from __future__ import annotations

import socket
import subprocess
import time
import urllib.request


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


class ServerNotReadyError(RuntimeError):
    """The server exited or did not answer /ping in time."""
