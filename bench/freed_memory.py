"""Benchmark: lungcad commands with glibc's default allocation and with lungcad's, which
takes large allocations from the heap and keeps freed memory for reuse.

Runs ``lungcad data phantom --scans N``, ``lungcad data build`` on what it wrote and
``bench/detect_speed.py`` (full-size scans, read to findings; give it a model and params),
alternating glibc's defaults (``MALLOC_MMAP_MAX_=65536``, which lungcad leaves alone) and
lungcad's, and prints each run's wall and system seconds and peak memory, with the machine's
transparent-huge-page settings. Alternating keeps a drifting machine's speed out of the
comparison.

Usage:
    python bench/freed_memory.py --scans 3 --repeats 2 --full-root /tmp/fullbench \\
        --model models/best.pt --params params.yaml
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from children import run_child, thp_settings

#: glibc's own default for MALLOC_MMAP_MAX_: setting it keeps lungcad's hands off malloc.
GLIBC_DEFAULT = {"MALLOC_MMAP_MAX_": "65536"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--full-root", default="", help="full-size scans (detect_speed.py)")
    parser.add_argument("--model", default="models/best.pt")
    parser.add_argument("--params", default="params.yaml")
    args = parser.parse_args()
    lungcad = [sys.executable, "-m", "lungcad.cli.main"]
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} CPUs; THP: {thp_settings()}")
    with tempfile.TemporaryDirectory() as tmp:
        raw, built, figures = Path(tmp) / "raw", Path(tmp) / "built", Path(tmp) / "detect.json"
        steps = {
            "phantom": [*lungcad, "data", "phantom", "--out", str(raw), "--scans", str(args.scans)]
            + ["--workers", "1", "--quiet"],
            "build": [*lungcad, "data", "build", "--raw", str(raw), "--out", str(built)]
            + ["--workers", "1", "--quiet"],
        }
        if args.full_root:
            steps["detect"] = [
                sys.executable,
                str(Path(__file__).with_name("detect_speed.py")),
                *("--root", args.full_root, "--scans", str(args.scans)),
                *("--model", args.model, "--params", args.params, "--json", str(figures)),
            ]
        for repeat in range(args.repeats):
            for label, settings in (("glibc", GLIBC_DEFAULT), ("lungcad", {})):
                for name, cmd in steps.items():
                    shutil.rmtree(raw if name == "phantom" else built, ignore_errors=True)
                    wall, system, peak = run_child(cmd, settings, clear=("MALLOC_",))
                    line = (
                        f"repeat {repeat} {label:7s} {name:8s} {wall:6.1f} s wall, "
                        f"{system:6.1f} s system, peak {peak:6.0f} MB"
                    )
                    if name == "detect":
                        median = json.loads(figures.read_text())["median_seconds"]["total"]
                        line += f"; median {median:.1f} s per scan"
                    print(line, flush=True)


if __name__ == "__main__":
    main()
