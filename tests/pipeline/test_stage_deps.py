"""Every DVC stage depends on exactly the lungcad code its command runs, so a code change
reruns the stages it affects and no others; and the package keeps its layers."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.tools.stage_code import PIPELINES, REPO, minimal_deps, stage_files

STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
ALL_STAGES = {
    f"{path.relative_to(REPO)}:{name}": stage
    for path in PIPELINES
    for name, stage in yaml.safe_load(path.read_text())["stages"].items()
}


@pytest.mark.parametrize("stage", sorted(ALL_STAGES))
def test_each_stage_depends_on_exactly_the_code_its_command_imports(stage) -> None:
    deps = [str(d) for d in ALL_STAGES[stage]["deps"] if str(d).startswith("lungcad")]
    expected = minimal_deps(stage_files(ALL_STAGES[stage]["cmd"]))
    assert sorted(deps) == sorted(expected), (
        f"stage {stage}: its lungcad deps should be exactly\n  - "
        + "\n  - ".join(expected)
        + "\n(python -m tests.tools.stage_code --write puts them there)"
    )


def test_the_closure_follows_lazy_imports_inside_functions() -> None:
    files = {str(p) for p in stage_files(STAGES["train"]["cmd"])}
    # trainer.py picks the best epoch with core.metrics; the CLI imports the trainer lazily
    assert {"lungcad/training/trainer.py", "lungcad/core/metrics.py"} <= files
    assert "lungcad/detection/batch.py" not in files and "lungcad/phantom/writer.py" not in files


@pytest.mark.slow
def test_editing_code_the_trainer_imports_makes_dvc_status_list_train(tmp_path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copytree(
        REPO / "lungcad", root / "lungcad", ignore=shutil.ignore_patterns("__pycache__")
    )
    for name in ("dvc.yaml", "params.yaml"):
        shutil.copy(REPO / name, root / name)
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    dvc = [sys.executable, "-m", "dvc"]

    def run(*args: str) -> str:
        done = subprocess.run(
            [*args], cwd=root, env=env, capture_output=True, text=True, check=True, timeout=300
        )
        return done.stdout

    run("git", "init", "-q", ".")
    run(*dvc, "init", "-q")
    # stand-ins for the stage's data and outputs, so its lock records today's code
    (root / "data" / "processed").mkdir(parents=True)
    (root / "data" / "processed" / "index.csv").write_text("cube_index\n")
    (root / "data" / "splits.json").write_text("{}")
    (root / "models" / "checkpoints").mkdir(parents=True)
    for out in (
        "best.pt",
        "best_epoch.pt",
        "history.json",
        "train_run.json",
        "checkpoints/last.pt",
    ):
        (root / "models" / out).write_text("x")
    run(*dvc, "commit", "--force", "-q", "train")
    run(*dvc, "commit", "--force", "-q", "split")
    assert "up to date" in run(*dvc, "status", "train", "split")

    with open(root / "lungcad" / "training" / "augment.py", "a") as fh:
        fh.write("\n# changed\n")  # imported by trainer.py alone
    status = run(*dvc, "status", "train", "split")
    assert "train:" in status and "modified:" in status and "lungcad/training" in status
    assert "split:" not in status  # the split stage does not run that code


def test_the_package_layers_have_no_cycle() -> None:
    """import-linter's layers contract (pyproject.toml): CLI, then registry/tuning/doctor,
    then the stages (which never import each other), then tracking, then the core."""
    done = subprocess.run(
        [str(Path(sys.executable).with_name("lint-imports")), "--no-cache"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 kept, 0 broken" in done.stdout


def test_nothing_that_chooses_reads_the_benchmark() -> None:
    """The benchmark reports only: no stage of another pipeline (training, tuning,
    promotion, the cross-validation, detection thresholds) depends on or names it."""
    sealed = ("data/benchmark", "reports/benchmark")
    readers = [
        name
        for name, stage in ALL_STAGES.items()
        if not name.startswith("benchmark/")
        and any(s in " ".join(map(str, [stage["cmd"], *stage.get("deps", [])])) for s in sealed)
    ]
    assert not readers, readers
    benchmark = [n for n in ALL_STAGES if n.startswith("benchmark/")]
    assert benchmark == ["benchmark/dvc.yaml:build", "benchmark/dvc.yaml:score"]
