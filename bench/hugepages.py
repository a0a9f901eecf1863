"""Benchmark: lungcad commands with numpy's transparent-huge-page advice on and off.

Runs ``lungcad data phantom --scans N`` and ``lungcad data build`` on what it wrote,
alternating NUMPY_MADVISE_HUGEPAGE=1 (numpy's own default) and 0 (lungcad's default), and
prints each run's wall and system seconds and the machine's THP settings. Alternating
keeps a drifting machine's speed out of the comparison.

Usage:
    python bench/hugepages.py --scans 3 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from children import run_child, thp_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scans", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    lungcad = [sys.executable, "-m", "lungcad.cli.main"]
    machine = platform.processor() or platform.machine()
    print(f"{machine}, {os.cpu_count()} CPUs; THP: {thp_settings()}")
    with tempfile.TemporaryDirectory() as tmp:
        raw, built = Path(tmp) / "raw", Path(tmp) / "built"
        steps = {
            "phantom": [*lungcad, "data", "phantom", "--out", str(raw), "--scans", str(args.scans)],
            "build": [*lungcad, "data", "build", "--raw", str(raw), "--out", str(built)],
        }
        for repeat in range(args.repeats):
            for advise in ("1", "0"):
                for name, cmd in steps.items():
                    shutil.rmtree(raw if name == "phantom" else built, ignore_errors=True)
                    wall, system = run_child(
                        [*cmd, "--workers", "1", "--quiet"], {"NUMPY_MADVISE_HUGEPAGE": advise}
                    )[:2]
                    print(
                        f"repeat {repeat} NUMPY_MADVISE_HUGEPAGE={advise} {name:8s} "
                        f"{wall:6.1f} s wall, {system:6.1f} s system",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
