"""Reading params files into the schema: the only place lungcad reads params.yaml.

A file is read whole and validated whole, so a mistake anywhere in it is found before any
work starts, and the error names ``section.key``, the value and what was expected. A file
that does not exist is an error: a command never falls back to defaults because a path was
mistyped. An overlay (``configs/*.yaml``) names its base with ``extends:`` and changes it key
by key.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from lungcad.config.schema import Params
from lungcad.errors import LungcadError

S = TypeVar("S", bound=BaseModel)


class ConfigError(LungcadError, ValueError):
    """A params file is missing, unreadable or holds a value the schema refuses."""


def describe(exc: ValidationError, source: str, prefix: str = "") -> ConfigError:
    """One line per problem: ``source: section.key = value: what is expected``."""
    lines = []
    for err in exc.errors(include_url=False):
        loc = [str(p) for p in err["loc"]]
        # drop pydantic's union/validator branch names from the location
        loc = [p for p in loc if not p.startswith(("function-", "tuple[", "literal["))]
        key = ".".join(filter(None, [prefix, *loc])) or prefix or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            lines.append(
                f"{source}: unknown parameter {key}; check its spelling (see docs/configuration.md)"
            )
        elif err["type"] == "missing":
            lines.append(f"{source}: {key} is missing")
        elif "input" in err and not isinstance(err["input"], dict):
            lines.append(f"{source}: {key} = {err['input']!r}: {msg}")
        else:
            lines.append(f"{source}: {key}: {msg}")
    return ConfigError("; ".join(dict.fromkeys(lines)))


def _read_yaml(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise ConfigError(
            f"params file {path} does not exist; pass --params with an existing file "
            "(the repository's params.yaml holds every default)"
        )
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}: not valid YAML{at}; fix the file and run again") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(doc).__name__}")
    return doc


def _merge(base: dict[str, Any], overlay: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in overlay.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _read_with_base(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A params file; an overlay names the file it changes with ``extends:`` (relative to
    the overlay's folder) and holds only the keys it changes."""
    doc = _read_yaml(path)
    base = doc.pop("extends", None)
    if base is None:
        return doc
    base_path = (path.parent / str(base)).resolve()
    if base_path in seen:
        raise ConfigError(f"{path}: extends {base} makes a loop; fix the extends: line")
    return _merge(_read_with_base(base_path, (*seen, base_path)), doc)


def load_params(path: str | Path, *overlays: str | Path) -> Params:
    """The whole params file, validated, with ``overlays`` applied on top in order.

    Raises:
        ConfigError: a file is missing or not YAML, or a value is refused (named).
    """
    path = Path(path)
    doc = _read_with_base(path)
    for overlay in overlays:
        doc = _merge(doc, _read_yaml(Path(overlay)))
    source = " + ".join(str(p) for p in (path, *overlays))
    try:
        return Params.model_validate(doc)
    except ValidationError as exc:
        raise describe(exc, source) from None


def validate_section(kind: type[S], values: dict[str, Any], source: str, prefix: str) -> S:
    """``values`` (a section's mapping, e.g. a checkpoint's stored settings) as ``kind``.

    Raises:
        ConfigError: naming ``prefix.key``.
    """
    try:
        return kind.model_validate(values)
    except ValidationError as exc:
        raise describe(exc, source, prefix) from None


def with_changes(section: S, prefix: str, **changes: Any) -> S:
    """``section`` with the command-line ``changes`` that are not None, validated again.

    Raises:
        ConfigError: naming ``prefix.key``.
    """
    values = {k: v for k, v in changes.items() if v is not None}
    if not values:
        return section
    return validate_section(
        type(section), {**section.model_dump(), **values}, "command line", prefix
    )
