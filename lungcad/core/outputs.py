"""Writing outputs safely: whole or not at all, with one clear error when the place is full
or read-only.

Every lungcad output that a later step reads (the cube dataset, checkpoints) is written to
a temporary name beside its final one and renamed into place only once complete. When the
write fails (disk full, quota, read-only mount, file-size limit), the temporary file is
removed, the previous complete output stays as it was, and an :class:`OutputError` says
which file, why, and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from lungcad.errors import LungcadError

WRITE_FAILURES = {
    errno.ENOSPC: "the disk is full",
    errno.EDQUOT: "the disk quota is used up",
    errno.EROFS: "the file system is read-only",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EFBIG: "the file would exceed the size allowed (file-size limit)",
}


class OutputError(LungcadError, RuntimeError):
    """An output could not be written; the previous complete output is untouched."""


def write_failure(what: str, path: str | Path, exc: OSError, keep: str) -> OutputError:
    """The clear error for ``exc`` raised while writing ``what`` at ``path``.

    Args:
        what: the output, in words ("the dataset", "checkpoint").
        path: where it was being written.
        exc: the error of the write.
        keep: what is left intact, in words ("the previous dataset in data/processed").
    """
    reason = WRITE_FAILURES.get(exc.errno, exc.strerror or str(exc))
    return OutputError(
        f"cannot write {what} to {path}: {reason} ({exc.filename or path}). Nothing was "
        f"replaced: {keep} is intact. Free space or choose a writable place, then run again."
    )


@contextlib.contextmanager
def removing_on_failure(*temporaries: Path) -> Iterator[None]:
    """Remove ``temporaries`` (half-written files) when the block raises."""
    try:
        yield
    except BaseException:
        for tmp in temporaries:
            Path(tmp).unlink(missing_ok=True)
        raise


@contextlib.contextmanager
def atomic_path(path: str | Path, what: str, tmp: str | Path | None = None) -> Iterator[Path]:
    """A temporary path beside ``path`` for the block to write (a file or a folder); renamed
    into place when the block ends, removed when it fails.

    Args:
        path: the final file or folder.
        what: the output, in words, for the error.
        tmp: the temporary name (default ``<name>.tmp`` beside ``path``); a writer that may
            race another (an orphaned worker) gives its own.

    Raises:
        OutputError: the place is full or read-only; the previous output is intact.
    """
    path = Path(path)
    tmp = Path(tmp) if tmp is not None else path.with_name(path.name + ".tmp")
    _remove(tmp)
    try:
        yield tmp
    except OSError as exc:
        _remove(tmp)
        keep = f"the previous {path.name}" if path.exists() else "nothing"
        raise write_failure(what, path, exc, keep) from exc
    except BaseException:
        _remove(tmp)
        raise
    if path.is_dir() and tmp.is_dir():
        shutil.rmtree(path)
    os.replace(tmp, path)


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def write_text_atomic(path: str | Path, text: str, what: str) -> None:
    """Write ``text`` to ``path`` whole or not at all (see the module docstring).

    Raises:
        OutputError: the place is full or read-only; the previous file is intact.
    """
    with atomic_path(path, what) as tmp:
        tmp.write_text(text)


def write_csv_atomic(frame: pd.DataFrame, path: Path, what: str = "the table") -> None:
    """Write a CSV next to ``path`` and rename it into place: whole or absent.

    Raises:
        OutputError: the place is full or read-only; the previous file is intact.
    """
    with atomic_path(path, what, path.with_suffix(".tmp.csv")) as tmp:
        frame.to_csv(tmp, index=False)


def stage_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in full next to ``path``; the caller renames it into place."""
    tmp = path.with_suffix(".tmp.csv")
    frame.to_csv(tmp, index=False)
    return tmp
