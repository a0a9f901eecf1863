"""The documentation: the site builds strictly, generated pages are up to date, and the
product text speaks of the software, not of its development."""

from __future__ import annotations

import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def test_the_results_page_is_generated_from_the_metrics_files() -> None:
    spec = importlib.util.spec_from_file_location("results_page", REPO / "scripts/results_page.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert (REPO / "docs/results.md").read_text() == module.results_markdown(REPO), (
        "docs/results.md is out of date: dvc repro results (or python scripts/results_page.py)"
    )


def test_dvc_repro_writes_the_results_page_from_the_metrics_it_reads() -> None:
    import yaml

    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["results"]
    assert stage["outs"] == [{"docs/results.md": {"cache": False}}]
    script = (REPO / "scripts/results_page.py").read_text()
    read = set(re.findall(r'"(reports/[\w/]+metrics\.json)"', script))
    # The cross-validation and benchmark pipelines' figures are shown where present but are
    # no deps: as ones, they would make the main pipeline's `dvc repro` run those pipelines.
    read -= {"reports/cv/summary/metrics.json", "reports/benchmark/metrics.json"}
    assert read and read <= set(stage["deps"]), read - set(stage["deps"])


def test_the_cli_page_lists_every_command() -> None:
    from lungcad.cli.main import app
    from tests.tools.stage_code import cli_commands

    page = (REPO / "docs/cli.md").read_text()
    missing = [" ".join(c) for c in cli_commands(app) if f"lungcad {' '.join(c)} " not in page]
    assert not missing, f"docs/cli.md does not list: {missing}"


def test_the_readme_is_a_short_guide() -> None:
    assert len((REPO / "README.md").read_text().splitlines()) <= 200


def test_no_development_history_in_the_product_text() -> None:
    pattern = re.compile(r"issues? [0-9]|workspace run", re.IGNORECASE)
    places = [REPO / "README.md", REPO / "BENCHMARKS.md", REPO / "params.yaml"]
    places += sorted((REPO / "docs").glob("*.md")) + sorted((REPO / "lungcad").rglob("*.py"))
    hits = [
        f"{p.relative_to(REPO)}:{i}: {line.strip()}"
        for p in places
        for i, line in enumerate(p.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert not hits, "\n".join(hits)


@pytest.mark.slow
def test_the_docs_site_builds_strictly(tmp_path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path / "site")],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        env={"NO_MKDOCS_2_WARNING": "1", "PATH": str(Path(sys.executable).parent)},
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "site" / "configuration" / "index.html").exists()
