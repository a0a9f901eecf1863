"""The configuration reference page (docs/configuration.md), generated from the schema:
``python -m lungcad.config.reference > docs/configuration.md``."""

from __future__ import annotations

import inspect
import re
from typing import Any

from pydantic import BaseModel

from lungcad.config.schema import Params


def _attribute_docs(model: type[BaseModel]) -> dict[str, str]:
    """``name: text`` entries of the class docstring's Attributes block."""
    doc = inspect.getdoc(model) or ""
    if "Attributes:" not in doc:
        return {}
    entries: dict[str, str] = {}
    current: list[str] = []
    for line in doc.split("Attributes:", 1)[1].splitlines():
        match = re.match(r"^    ([a-z_][a-z0-9_, ]*): (.*)$", line)
        if match:
            current = [n.strip() for n in match.group(1).split(",")]
            for name in current:
                entries[name] = match.group(2).strip()
        elif line.strip() and current:
            for name in current:
                entries[name] += " " + line.strip()
    return entries


def _value(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(section below)"
    if isinstance(value, tuple):
        value = list(value)
    return f"`{value!r}`".replace("|", "\\|")


def _section(title: str, model: type[BaseModel], default: BaseModel) -> list[str]:
    summary = (inspect.getdoc(model) or "").split("\n\n")[0].replace("\n", " ")
    docs = _attribute_docs(model)
    lines = [f"## `{title}`", "", summary, "", "| key | default | meaning |", "| --- | --- | --- |"]
    nested = []
    for name in model.model_fields:
        value = getattr(default, name)
        if isinstance(value, BaseModel):
            nested.append((f"{title}.{name}", type(value), value))
        text = docs.get(name, "").replace("|", "\\|")
        lines.append(f"| `{name}` | {_value(value)} | {text} |")
    lines.append("")
    for sub in nested:
        lines += _section(*sub)
    return lines


def configuration_markdown() -> str:
    """The whole reference page."""
    defaults = Params()
    lines = [
        "# Configuration",
        "",
        "Every lungcad command and DVC stage reads `params.yaml` through one typed schema",
        "(`lungcad/config/schema.py`): one section per pipeline stage, unknown keys refused,",
        "types and ranges checked when the file is loaded, and the error names `section.key`.",
        "`params.yaml` holds exactly these defaults (a test checks it). An overlay such as",
        "`configs/real-lidc-gpu.yaml` names its base with `extends:` and holds only what it",
        "changes. `lungcad params check [FILE]` validates a file and lists what differs from",
        "the defaults.",
        "",
        "This page is generated from the schema (`python -m lungcad.config.reference`).",
        "",
    ]
    for name in Params.model_fields:
        section = getattr(defaults, name)
        lines += _section(name, type(section), section)
    return "\n".join(lines).rstrip("\n") + "\n"


if __name__ == "__main__":
    print(configuration_markdown(), end="")
