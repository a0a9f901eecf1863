"""lungcad checkpoints: plain data and tensors only, written atomically, read without
ever running code from the file.

A checkpoint is a dict of state dicts, numbers, strings and the train settings as plain
data. ``load_checkpoint`` reads it with ``torch.load(weights_only=True)``, which refuses any
pickled object other than tensors and builtin containers, so a checkpoint crafted to run
code on unpickling (one downloaded from someone else, say) is refused before anything in
it runs.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lungcad.core.outputs import removing_on_failure, write_failure
from lungcad.errors import LungcadError


class CheckpointMissingError(LungcadError, FileNotFoundError):
    """No checkpoint at that path."""


class UnsafeCheckpointError(LungcadError, ValueError):
    """The file holds pickled objects other than tensors and plain data."""


def plain(value: Any) -> Any:
    """``value`` with numpy scalars and str subclasses (``torch.__version__``) made builtin,
    so ``weights_only`` loading accepts it."""
    if isinstance(value, dict):
        return type(value)((k, plain(v)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return type(value)(plain(v) for v in value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, str) and type(value) is not str:
        return str(value)
    return value


def checkpoint_sha256(path: str | Path) -> str:
    """The SHA-256 of a checkpoint file, hex: what names a model that has no registry name
    and keys the work done with it."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically: a killed process leaves the previous file
    (or none), never a half-written one.

    Raises:
        OutputError: the place is full or read-only; the previous checkpoint is intact.
    """
    path = Path(path)
    tmp = path.with_suffix(path.suffix + ".tmp")
    try:
        with removing_on_failure(tmp), open(tmp, "wb") as handle:
            torch.save(plain(state), handle)
            handle.flush()
            os.fsync(handle.fileno())
    except (OSError, RuntimeError) as exc:
        # torch.save reports a failed write as a RuntimeError wrapping the OSError.
        cause = exc if isinstance(exc, OSError) else _os_error(exc)
        if cause is None:
            raise
        keep = f"the previous {path.name}" if path.exists() else "nothing"
        raise write_failure("the checkpoint", path, cause, keep) from exc
    os.replace(tmp, path)


def _os_error(exc: BaseException) -> OSError | None:
    """The OSError behind ``exc`` (torch wraps failed writes), if any."""
    seen = exc
    while seen is not None:
        if isinstance(seen, OSError):
            return seen
        seen = seen.__cause__ or seen.__context__
    return None


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Read a lungcad checkpoint without executing anything it holds.

    Raises:
        FileNotFoundError: no such file.
        UnsafeCheckpointError: the file pickles other objects (code could run on loading)
            or is not a checkpoint at all.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointMissingError(f"checkpoint {path} does not exist")
    try:
        # Checkpoints written before the plain format stored torch.__version__ as a
        # TorchVersion (a str subclass); allowing that one class keeps them loadable.
        with torch.serialization.safe_globals([torch.torch_version.TorchVersion]):
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(exc))
        what = f"{found.group(1)}, " if found else ""
        raise UnsafeCheckpointError(
            f"{path} is not a plain lungcad checkpoint and was not loaded: it pickles "
            f"objects ({what}not tensors or plain data) that could run code on loading. Use a "
            "checkpoint written by `lungcad train`, or re-save this one from a source you trust."
        ) from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise UnsafeCheckpointError(
            f"{path} is not a readable lungcad checkpoint ({exc}); was it truncated?"
        ) from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise UnsafeCheckpointError(
            f"{path} is not a lungcad checkpoint (no model weights and train settings)"
        )
    return state
