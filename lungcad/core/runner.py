"""One resumable per-scan runner for batch jobs over many scans (``lungcad data build``,
``lungcad detect``).

Each finished scan is kept under ``<out>/.parts/<key>/`` (the job writes it under a
temporary name and renames it, so a part is whole or absent): a run that is interrupted
resumes where it stopped, and a run with other settings (another ``key``) does not reuse
it. Parts of other keys are removed when a run starts, and the whole ``.parts`` folder once
the outputs are assembled.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

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
        return self.folder / f"{series_uid}{self.suffix}"

    def run(
        self,
        job: Callable[[Any], Any],
        jobs: dict[str, Any],
        workers: int = 1,
        desc: str = "scans",
        progress: bool = True,
    ) -> None:
        """Run ``job(args)`` for each ``series_uid: args`` of ``jobs`` whose part does not
        exist yet; ``job`` writes the part at ``self.path(series_uid)``."""
        if self.root.exists():
            for old in self.root.iterdir():
                if old != self.folder:
                    shutil.rmtree(old)  # parts of other settings cannot be reused
        self.folder.mkdir(parents=True, exist_ok=True)
        todo = [uid for uid in jobs if not self.path(uid).exists()]
        if len(todo) < len(jobs):
            log.info("resuming: %d of %d scans already done", len(jobs) - len(todo), len(jobs))
        progress_map(
            job,
            [jobs[uid] for uid in todo],
            workers,
            desc,
            "scan",
            progress,
            total=len(jobs),
            initial=len(jobs) - len(todo),
        )

    def remove(self) -> None:
        """Drop every part (the run's outputs are assembled)."""
        shutil.rmtree(self.root, ignore_errors=True)
