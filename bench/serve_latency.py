"""Benchmark: latency and throughput of the served champion (`mlflow models serve`).

Starts `lungcad serve` on a free local port, then measures on this machine:
  - p50/p95 latency of sequential requests of 1 cube and of a batch of 16 cubes,
  - throughput (cubes/s) and errors with 8 concurrent clients sending 1-cube requests,
  - the client's time to encode a request (not part of the latencies, which time the HTTP
    round trip of an already encoded body).
Requests carry real cubes from the dataset, in each encoding the server understands:
JSON {"inputs": [...]} (float32 HU as text) and Parquet (lungcad.registry.client).

Usage:
    PYTHONPATH=. python bench/serve_latency.py [--dataset data/processed] [--requests 40]
        [--workers 2] [--encodings json parquet]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from lungcad.registry.client import encode_cubes
from tests.tools.serving import ServerNotReadyError, free_port, wait_until_serving


def _post(port: int, request_body: tuple[bytes, str]) -> tuple[int, float]:
    body, content_type = request_body
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/invocations",
        data=body,
        headers={"Content-Type": content_type},
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
    parser.add_argument(
        "--encodings", nargs="+", default=["json", "parquet"], choices=["json", "parquet"]
    )
    args = parser.parse_args()

    cubes = np.load(args.dataset / "cubes.npy", mmap_mode="r")
    port = free_port()
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
        try:
            wait_until_serving(port, server, timeout_s=180)
        except ServerNotReadyError as exc:
            raise SystemExit(f"{exc}: is a champion registered?") from exc
        print(f"server: lungcad serve, {args.workers} worker(s); client: this machine, loopback")
        print(
            f"{'encoding':9s} {'request':12s} {'MB':>6s} {'n':>4s} {'p50 ms':>8s} "
            f"{'p95 ms':>8s} {'errors':>7s} {'encode ms':>10s}"
        )
        for encoding in args.encodings:
            encode_ms = {}
            for n in (1, 16):
                start = time.perf_counter()
                for _ in range(5):
                    request = encode_cubes(cubes[:n], encoding)
                encode_ms[n] = (time.perf_counter() - start) / 5 * 1000
            one, sixteen = encode_cubes(cubes[:1], encoding), encode_cubes(cubes[:16], encoding)
            for request in (one, sixteen):  # warm-up
                _post(port, request)
            for name, request, n in (("1 cube", one, 1), ("batch of 16", sixteen, 16)):
                results = [_post(port, request) for _ in range(args.requests)]
                ms = np.array([t for _, t in results]) * 1000
                errors = sum(s != 200 for s, _ in results)
                print(
                    f"{encoding:9s} {name:12s} {len(request[0]) / 1e6:6.2f} {len(ms):4d} "
                    f"{np.percentile(ms, 50):8.1f} {np.percentile(ms, 95):8.1f} {errors:7d} "
                    f"{encode_ms[n]:10.1f}"
                )
            start = time.perf_counter()
            with ThreadPoolExecutor(8) as pool:
                results = list(
                    pool.map(
                        _post, [port] * args.concurrent_requests, [one] * args.concurrent_requests
                    )
                )
            elapsed = time.perf_counter() - start
            errors = sum(s != 200 for s, _ in results)
            ms = np.array([t for _, t in results]) * 1000
            print(
                f"{encoding:9s} concurrency 8: {len(results)} requests of 1 cube in "
                f"{elapsed:.1f} s = {len(results) / elapsed:.1f} cubes/s, "
                f"p50 {np.percentile(ms, 50):.0f} ms, p95 {np.percentile(ms, 95):.0f} ms, "
                f"{errors} errors"
            )
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
