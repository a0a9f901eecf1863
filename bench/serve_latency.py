"""Benchmark: latency and throughput of the served champion (`mlflow models serve`).

Starts `lungcad serve` on a free local port, then measures on this machine:
  - p50/p95 latency of sequential requests of 1 cube and of a batch of 16 cubes,
  - throughput (cubes/s) and errors with 8 concurrent clients sending 1-cube requests.
Requests carry real cubes from the dataset as JSON {"inputs": [...]} (float32 HU).

Usage:
    python bench/serve_latency.py [--dataset data/processed] [--requests 40] [--workers 2]
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(port: int, body: bytes) -> tuple[int, float]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    start = time.perf_counter()
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            response.read()
            status = response.status
    except urllib.error.HTTPError as err:
        status = err.code
    except OSError:
        status = 0
    return status, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", type=Path, default=Path("data/processed"))
    parser.add_argument("--requests", type=int, default=40, help="sequential requests per size")
    parser.add_argument("--concurrent-requests", type=int, default=80)
    parser.add_argument("--workers", type=int, default=2, help="server worker processes")
    args = parser.parse_args()

    cubes = np.load(args.dataset / "cubes.npy", mmap_mode="r")
    one = json.dumps({"inputs": np.asarray(cubes[:1], np.float32)[:, None].tolist()}).encode()
    sixteen = json.dumps({"inputs": np.asarray(cubes[:16], np.float32)[:, None].tolist()}).encode()
    port = _free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "lungcad.cli.main",
            "serve",
            "-p",
            str(port),
            "-w",
            str(args.workers),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ.copy(),
    )
    try:
        deadline = time.time() + 180
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2):
                    break
            except OSError as exc:
                if time.time() > deadline or server.poll() is not None:
                    raise SystemExit("the server did not start: is a champion registered?") from exc
                time.sleep(1)
        for body in (one, sixteen):  # warm-up
            _post(port, body)
        print(f"server: lungcad serve, {args.workers} worker(s); client: this machine, loopback")
        print(f"{'request':18s} {'n':>4s} {'p50 ms':>8s} {'p95 ms':>8s} {'errors':>7s}")
        for name, body in (("1 cube", one), ("batch of 16", sixteen)):
            results = [_post(port, body) for _ in range(args.requests)]
            ms = np.array([t for _, t in results]) * 1000
            errors = sum(s != 200 for s, _ in results)
            print(
                f"{name:18s} {len(ms):4d} {np.percentile(ms, 50):8.1f} "
                f"{np.percentile(ms, 95):8.1f} {errors:7d}"
            )
        start = time.perf_counter()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda _: _post(port, one), range(args.concurrent_requests)))
        elapsed = time.perf_counter() - start
        errors = sum(s != 200 for s, _ in results)
        ms = np.array([t for _, t in results]) * 1000
        print(
            f"concurrency 8: {len(results)} requests of 1 cube in {elapsed:.1f} s = "
            f"{len(results) / elapsed:.1f} cubes/s, p50 {np.percentile(ms, 50):.0f} ms, "
            f"p95 {np.percentile(ms, 95):.0f} ms, {errors} errors"
        )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
