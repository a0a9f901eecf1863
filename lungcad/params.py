"""Read one stage's section of params.yaml (DVC's parameter file)."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml


def read_section(params_file: str | Path, section: str, required: bool = True) -> dict[str, Any]:
    """The mapping under ``section``; ``{}`` if absent and not ``required``.

    Raises:
        ValueError: ``required`` and the file or the section is missing.
    """
    path = Path(params_file)
    data = (yaml.safe_load(path.read_text()) or {}) if path.exists() else None
    if data is None or section not in data:
        if required:
            where = "does not exist" if data is None else f"has no '{section}' section"
            raise ValueError(f"{path} {where}")
        return {}
    return dict(data[section] or {})


def reject_unknown(values: dict[str, Any], settings_class: type, section: str) -> None:
    """Raise ValueError naming the keys of ``values`` that are not fields of the dataclass
    ``settings_class`` (a misspelt parameter must not be silently ignored)."""
    known = {f.name for f in fields(settings_class)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise ValueError(f"unknown {section} parameter(s) {unknown}; known: {sorted(known)}")
