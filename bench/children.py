"""What the benchmarks that time lungcad commands as child processes share: one child's
wall and system seconds and peak memory, and the machine's transparent-huge-page settings.
Imported by the scripts beside it (``python bench/<script>.py`` puts this folder first on
the path)."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path


def run_child(
    cmd: list[str], settings: dict[str, str], clear: tuple[str, ...] = ()
) -> tuple[float, float, float]:
    """(wall s, system s, peak RSS MB) of ``cmd`` run with ``settings`` added to the
    environment and the variables starting with a ``clear`` prefix removed from it; a
    failed command stops the benchmark with the end of its error output."""
    env = {k: v for k, v in os.environ.items() if not (clear and k.startswith(clear))}
    t = time.perf_counter()
    child = subprocess.Popen(
        cmd, env={**env, **settings}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t
    if status != 0:
        raise SystemExit(f"{' '.join(cmd)} failed: {child.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_stime, usage.ru_maxrss / 1024


def thp_settings() -> str:
    """The kernel's transparent-huge-page ``enabled`` and ``defrag`` modes ("n/a" where it
    has none)."""
    base = Path("/sys/kernel/mm/transparent_hugepage")
    try:
        return ", ".join(f"{n} {(base / n).read_text().strip()}" for n in ("enabled", "defrag"))
    except OSError:
        return "n/a"
