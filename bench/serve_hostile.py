"""Benchmark: the served champion under a bounded hostile load.

Starts the server `lungcad serve` runs (MLflow's scoring app behind lungcad's guard, default
64 MiB body limit) on a free loopback port, warms it up, then sends --requests requests at
--concurrency, half of them malformed (drawn by Hypothesis, tests.tools.loadtest), the
valid ones 1-4 real 64³ cubes from the dataset as JSON or Parquet. Prints and writes the
summary: 2xx/4xx/5xx counts, status codes per malformed kind, p50/p95 of the valid requests,
server RSS before / at half / after.

Usage:
    PYTHONPATH=. python bench/serve_hostile.py [--model-uri models:/lungcad@champion]
        [--requests 1000] [--concurrency 8] [--workers 1] [--out reports/serve_hostile.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
from pathlib import Path

import numpy as np

from lungcad.config import ServeLimits
from lungcad.registry.serve_command import CHAMPION_URI, serve_command
from tests.tools.loadtest import RequestBuilder, make_specs, run_load
from tests.tools.serving import ServerNotReadyError, free_port, wait_until_serving


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--model-uri", default=CHAMPION_URI)
    parser.add_argument("--dataset", type=Path, default=Path("data/processed"))
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--workers", type=int, default=1, help="server worker processes")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("reports/serve_hostile.json"))
    args = parser.parse_args()

    cubes = np.load(args.dataset / "cubes.npy", mmap_mode="r")[:64].astype(np.float32)
    port = free_port()
    cmd, env = serve_command(args.model_uri, port=port, workers=args.workers)
    server = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        try:
            wait_until_serving(port, server, timeout_s=180)
        except ServerNotReadyError as exc:
            raise SystemExit(f"{exc}: is a champion registered?") from exc
        url = f"http://127.0.0.1:{port}"
        builder = RequestBuilder(cubes, ServeLimits().max_body_bytes)
        specs = make_specs(args.requests, 0.5, args.seed, cube_size=cubes.shape[-1])
        run_load(url, make_specs(40, 0.5, args.seed + 1, cubes.shape[-1]), builder, 8)  # warm-up
        report = run_load(
            url, specs, builder, args.concurrency, server_pid=server.pid, progress=True
        )
        summary = report.summary()
        summary["server"] = f"{args.model_uri}, {args.workers} worker(s), loopback"
        summary["alive_at_end"] = server.poll() is None
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(summary, indent=2))
        print(json.dumps(summary, indent=2))
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
