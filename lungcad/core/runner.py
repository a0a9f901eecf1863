"""One resumable per-scan runner for batch jobs over many scans (``lungcad data build``,
``lungcad detect``).

Each finished scan is kept under ``<out>/.parts/<key>/`` (the job writes it under a
temporary name and renames it, so a part is whole or absent): a run that is interrupted
resumes where it stopped, and a run with other settings (another ``key``) does not reuse
it. A job that fails for a passing reason (a full disk, a server's timeout) writes no part,
so the next run tries that scan again. Parts of other keys are removed when a run starts,
and the whole ``.parts`` folder once the outputs are assembled. A part is named after its
series UID made safe (``lungcad.core.names.safe_name``): a UID from a header never names a
place outside the run's folder.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from lungcad.core.names import inside, safe_name
from lungcad.core.parallel import progress_map

log = logging.getLogger(__name__)


class ScanParts:
    """The per-scan parts of one batch run.

    Args:
        out_dir: the run's output folder.
        key: identifies the settings (and model) the parts were made with.
        suffix: the part's name after the series UID (``.npz`` for a file; ``""`` for a
            folder).

    Example:
        >>> parts = ScanParts(out, digest, ".npz")
        >>> parts.run(job, {uid: (files, uid, parts.path(uid)) for uid in uids}, workers=2)
        >>> results = [load(parts.path(uid)) for uid in uids]
        >>> parts.remove()
    """

    def __init__(self, out_dir: str | Path, key: str, suffix: str = "") -> None:
        self.root = Path(out_dir) / ".parts"
        self.folder = self.root / key
        self.suffix = suffix

    def path(self, series_uid: str) -> Path:
        """Where the part of ``series_uid`` is (or will be) kept."""
        return inside(self.root, self.folder / f"{safe_name(series_uid)}{self.suffix}")

    def run(
        self,
        job: Callable[[Any], Any],
        jobs: dict[str, Any],
        workers: int = 1,
        desc: str = "scans",
        progress: bool = True,
    ) -> dict[str, Any]:
        """Run ``job(args)`` for each ``series_uid: args`` of ``jobs`` whose part does not
        exist yet; ``job`` writes the part at ``self.path(series_uid)``.

        Returns:
            ``series_uid: job's return value`` for the jobs run now.
        """
        if self.root.exists():
            for old in self.root.iterdir():
                if old != self.folder:
                    shutil.rmtree(old)  # parts of other settings cannot be reused
        self.folder.mkdir(parents=True, exist_ok=True)
        todo = [uid for uid in jobs if not self.path(uid).exists()]
        if len(todo) < len(jobs):
            log.info("resuming: %d of %d scans already done", len(jobs) - len(todo), len(jobs))
        results = progress_map(
            job,
            [jobs[uid] for uid in todo],
            workers,
            desc,
            "scan",
            progress,
            total=len(jobs),
            initial=len(jobs) - len(todo),
        )
        return dict(zip(todo, results))

    def remove(self) -> None:
        """Drop every part (the run's outputs are assembled)."""
        shutil.rmtree(self.root, ignore_errors=True)
