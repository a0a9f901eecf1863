"""The lungcad code each DVC stage runs: the transitive import closure of its command.

A stage's ``cmd`` names a ``lungcad`` command; the code it runs is the CLI package (imported
whole when the command line starts), the command's function and every ``lungcad`` module
that imports, transitively, counting imports inside functions too (lungcad imports heavy
modules lazily). ``python -m tests.tools.stage_code`` prints the deps each stage needs;
``--write`` puts them into dvc.yaml and crossval/dvc.yaml.
"""

from __future__ import annotations

import ast
import inspect
import shlex
from functools import cache
from pathlib import Path

import typer

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "lungcad"
#: The pipeline files: the default pipeline and the cross-validation.
PIPELINES = (REPO / "dvc.yaml", REPO / "crossval" / "dvc.yaml", REPO / "benchmark" / "dvc.yaml")


def module_file(module: str) -> Path | None:
    """The file of a ``lungcad`` module or package, None if there is none."""
    base = REPO.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(tree: ast.AST, here: str) -> set[str]:
    """The lungcad modules named by the import statements anywhere in ``tree``."""
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("lungcad")}
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                parts = here.split(".")[: -node.level]
                base = ".".join([*parts, node.module] if node.module else parts)
            else:
                base = node.module or ""
            if not base.startswith("lungcad"):
                continue
            found.add(base)
            # `from lungcad.cli import data` imports the submodule lungcad.cli.data
            found |= {f"{base}.{a.name}" for a in node.names if module_file(f"{base}.{a.name}")}
    return {m for m in found if module_file(m)}


def _with_parents(module: str) -> set[str]:
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts) + 1)}


@cache
def _module_imports(module: str) -> frozenset[str]:
    tree = ast.parse(module_file(module).read_text())
    if module.startswith("lungcad.cli"):
        # A command module's functions import their work lazily: only what runs when the
        # command line starts counts here; the command's own function is added separately.
        tree = ast.Module(
            body=[n for n in tree.body if not isinstance(n, (ast.FunctionDef, ast.ClassDef))],
            type_ignores=[],
        )
    return frozenset(_imports(tree, module))


def closure(modules: set[str]) -> set[str]:
    """``modules`` and everything they import, with the packages that hold them."""
    todo, seen = list(modules), set()
    while todo:
        module = todo.pop()
        for m in _with_parents(module):
            if m not in seen:
                seen.add(m)
                todo.extend(_module_imports(m) - seen)
    return seen


def cli_commands(app: typer.Typer, prefix: tuple[str, ...] = ()) -> dict[tuple[str, ...], object]:
    """Every command of ``app`` by its words (``("data", "build")``) with its function."""
    out: dict[tuple[str, ...], object] = {}
    for info in app.registered_commands:
        name = info.name or info.callback.__name__.replace("_", "-")
        out[(*prefix, name)] = info.callback
    for group in app.registered_groups:
        out.update(cli_commands(group.typer_instance, (*prefix, group.name)))
    return out


def command_modules(argv: list[str]) -> set[str]:
    """The modules ``lungcad <argv>`` runs: the CLI package and its command's imports."""
    from lungcad.cli.main import app

    commands = cli_commands(app)
    words = tuple(w for w in argv if not w.startswith("-"))
    key = next((words[:n] for n in (2, 1) if words[:n] in commands), None)
    if key is None:
        raise KeyError(f"no lungcad command in {argv}")
    callback = commands[key]
    source = Path(inspect.getsourcefile(callback))
    module = ".".join(source.relative_to(REPO).with_suffix("").parts)
    tree = ast.parse(source.read_text())
    function = next(
        n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef) and n.name == callback.__name__
    )
    cli = {m for m in closure({"lungcad.cli.main"}) if m.startswith("lungcad.cli")}
    return closure(cli | {module} | _imports(function, module))


def stage_files(cmd: str) -> set[Path]:
    """The ``lungcad`` source files (relative to the repository) a stage's ``cmd`` runs."""
    argv = shlex.split(cmd)
    if argv[0] == "python":  # a script: the lungcad modules it imports
        script = REPO / argv[1]
        modules = closure(_imports(ast.parse(script.read_text()), "scripts"))
    else:
        modules = command_modules(argv[argv.index("lungcad") + 1 :])
    return {module_file(m).relative_to(REPO) for m in modules}


def minimal_deps(files: set[Path]) -> list[str]:
    """Folders whose every source file is in ``files``, and the other files one by one."""
    deps: list[str] = []

    def visit(folder: Path) -> None:
        sources = {p.relative_to(REPO) for p in (REPO / folder).rglob("*.py")}
        if sources and sources <= files:
            deps.append(str(folder))
            return
        for path in sorted((REPO / folder).iterdir()):
            rel = path.relative_to(REPO)
            if path.is_dir() and path.name != "__pycache__":
                visit(rel)
            elif rel in files:
                deps.append(str(rel))

    visit(Path("lungcad"))
    return deps


def write_deps(path: Path) -> None:
    """Replace each stage's lungcad deps in dvc.yaml by its closure (comments kept)."""
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.preserve_quotes = True
    yaml.width = 4096
    yaml.indent(mapping=2, sequence=4, offset=2)
    doc = yaml.load(path.read_text())
    for stage in doc["stages"].values():
        data = [d for d in stage["deps"] if not str(d).startswith("lungcad")]
        stage["deps"] = data + minimal_deps(stage_files(str(stage["cmd"])))
    with open(path, "w") as fh:
        yaml.dump(doc, fh)


def main() -> None:
    import sys

    import yaml

    for path in PIPELINES:
        if "--write" in sys.argv:
            write_deps(path)
            continue
        stages = yaml.safe_load(path.read_text())["stages"]
        for name, stage in stages.items():
            print(f"{path.relative_to(REPO)}:{name}:")
            for dep in minimal_deps(stage_files(stage["cmd"])):
                print(f"  - {dep}")


if __name__ == "__main__":
    main()
