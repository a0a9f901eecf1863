"""Run one function over many items in worker processes, with a progress bar."""

from __future__ import annotations

import ctypes
import signal
import sys
from collections.abc import Callable, Iterable
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from tqdm.auto import tqdm

PR_SET_PDEATHSIG = 1


def die_with_parent() -> None:
    """Worker initializer: on Linux, the kernel kills this worker when its parent dies, so a
    killed job (SIGKILL runs no clean-up) leaves no orphaned workers behind."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def progress_map(
    fn: Callable[[Any], Any],
    items: Iterable[Any],
    workers: int = 1,
    desc: str = "",
    unit: str = "it",
    progress: bool = True,
    total: int | None = None,
    initial: int = 0,
    chunksize: int = 1,
) -> list[Any]:
    """``[fn(x) for x in items]`` in input order, over ``workers`` processes (1: in-process).

    Args:
        fn: a picklable function (module level) when ``workers > 1``.
        items: its arguments.
        workers: processes; 1 runs in this process (easier to debug and profile).
        desc, unit, progress: the progress bar.
        total, initial: bar length and starting count (e.g. items already done earlier).
        chunksize: items sent to a worker at once (many small items: larger chunks).
    """
    items = list(items)
    bar = tqdm(
        total=total if total is not None else len(items),
        initial=initial,
        desc=desc,
        unit=unit,
        disable=not progress,
    )
    results = []
    with bar:
        if workers > 1 and len(items) > 1:
            with ProcessPoolExecutor(workers, initializer=die_with_parent) as pool:
                for result in pool.map(fn, items, chunksize=chunksize):
                    results.append(result)
                    bar.update()
        else:
            for item in items:
                results.append(fn(item))
                bar.update()
    return results
