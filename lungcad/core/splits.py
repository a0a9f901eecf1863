"""Reading the patient-level split file (``splits.json``) that the split stage writes."""

from __future__ import annotations

import json
from pathlib import Path

from lungcad.errors import LungcadError

SPLITS = ("train", "val", "test")


def load_splits(path: str | Path) -> dict[str, list[str]]:
    """Read splits.json and re-check it for leaks."""
    doc = json.loads(Path(path).read_text())
    splits = {name: list(doc[name]) for name in SPLITS}
    check_no_leak(splits)
    return splits


class SplitLeakError(LungcadError, RuntimeError):
    """A patient appears in more than one split."""


def check_no_leak(splits: dict[str, list[str]]) -> None:
    """Raise SplitLeakError naming every patient found in more than one split."""
    seen: dict[str, str] = {}
    leaks = []
    for name in SPLITS:
        for pid in splits.get(name, []):
            if pid in seen:
                leaks.append(f"{pid} in {seen[pid]} and {name}")
            seen[pid] = name
    if leaks:
        raise SplitLeakError("patient(s) in more than one split: " + "; ".join(leaks))
