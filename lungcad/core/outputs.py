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
import fcntl
import os
import shutil
import socket
import tempfile
import time
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
def atomic_path(path: str | Path, what: str) -> Iterator[Path]:
    """A temporary path for the block to write (a file or a folder), renamed onto ``path``
    when the block ends and removed when it fails.

    The temporary path lies in a private folder this call creates beside ``path`` (so two
    writers never share it), and nothing else is ever removed: a previous output at
    ``path`` of the same kind (file or folder) is replaced only once the new one is whole.

    Args:
        path: the final file or folder.
        what: the output, in words, for the error.

    Raises:
        OutputError: the place is full or read-only, or ``path`` is a folder where a file
            was written (or the other way round); the previous output is intact.
    """
    path = Path(path)
    try:
        scratch = Path(
            tempfile.mkdtemp(prefix=f".{path.name[:48]}.", suffix=".tmp", dir=path.parent)
        )
    except OSError as exc:
        raise write_failure(what, path, exc, _kept(path)) from exc
    tmp = scratch / path.name
    try:
        yield tmp
        _replace(tmp, path, scratch, what)
    except OSError as exc:
        raise write_failure(what, path, exc, _kept(path)) from exc
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kept(path: Path) -> str:
    return f"the previous {path.name}" if path.exists() else "nothing"


def _replace(tmp: Path, path: Path, scratch: Path, what: str) -> None:
    """Move ``tmp`` onto ``path``; a previous folder there is first moved into ``scratch``
    (removed with it), a previous file is replaced by the rename itself."""
    if not tmp.exists():
        raise ValueError(f"nothing was written at {tmp}")
    old_is_dir = path.is_dir() and not path.is_symlink()
    if (path.exists() or path.is_symlink()) and old_is_dir != tmp.is_dir():
        kinds = ("folder", "file") if old_is_dir else ("file", "folder")
        raise OutputError(
            f"cannot write {what} to {path}: a {kinds[0]} is in the way of the {kinds[1]} "
            "being written. Move it away or choose another output folder."
        )
    if old_is_dir:
        os.replace(path, scratch / ".previous")
    os.replace(tmp, path)


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
    with atomic_path(path, what) as tmp:
        frame.to_csv(tmp, index=False)


def stage_csv(frame: pd.DataFrame, path: Path) -> Path:
    """Write ``frame`` in full next to ``path``; the caller renames it into place."""
    tmp = path.with_suffix(".tmp.csv")
    frame.to_csv(tmp, index=False)
    return tmp


class OutputBusyError(LungcadError, RuntimeError):
    """Another run holds the output folder."""


@contextlib.contextmanager
def owned_output(out_dir: str | Path, command: str) -> Iterator[Path]:
    """Create ``out_dir`` if needed and hold it for this run: a second run on the same
    folder stops at once, naming the process that holds it.

    The lock is ``out_dir/.lock`` (an advisory ``flock``, released by the kernel when the
    process ends, however it ends), which records the command and process holding it and
    is removed when the run ends, so the folder holds only the run's outputs.

    Raises:
        OutputError: ``out_dir`` is a file, or cannot be created or written.
        OutputBusyError: another process holds it.
    """
    out_dir = Path(out_dir)
    lock = out_dir / ".lock"
    try:
        if out_dir.exists() and not out_dir.is_dir():
            raise OutputError(f"output folder {out_dir} is a file: give a folder (or a new name)")
        out_dir.mkdir(parents=True, exist_ok=True)
        fd = _locked(lock, out_dir)
    except OSError as exc:
        raise write_failure("the output folder's lock", lock, exc, "nothing") from exc
    try:
        os.ftruncate(fd, 0)
        since = time.strftime("%Y-%m-%d %H:%M:%S")
        holder = f"{command} (pid {os.getpid()} on {socket.gethostname()}, since {since})"
        os.pwrite(fd, holder.encode(), 0)
        yield out_dir
    finally:
        with contextlib.suppress(OSError):
            lock.unlink()  # while still held: a waiting run then makes a fresh lock
        os.close(fd)


def _locked(lock: Path, out_dir: Path) -> int:
    """A descriptor of ``lock`` holding its ``flock``; the lock file is checked to be the
    one still at that path (an ending run removes its own)."""
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise OutputBusyError(
                f"output folder {out_dir} is in use by {holder}: wait for that run to end or "
                "choose another output folder"
            ) from None
        try:
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)  # the holder removed it as we locked it: lock the new one
