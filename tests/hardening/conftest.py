"""Fixtures of the hardening tests: a small LIDC-grounded phantom root, written once."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PHANTOM_SCANS = 3
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config, items) -> None:
    """Every hardening test kills, starves or attacks real processes: all are ``slow``."""
    for item in items:
        if Path(str(item.path)).resolve().is_relative_to(HERE):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory) -> Path:
    """``lungcad data phantom --scans 3``: three real LIDC scans' geometry, synthetic CT."""
    root = tmp_path_factory.mktemp("phantom") / "LIDC-IDRI"
    cmd = [sys.executable, "-m", "lungcad.cli.main", "data", "phantom", "--out", str(root)]
    done = subprocess.run(
        [*cmd, "--scans", str(PHANTOM_SCANS), "--quiet"], cwd=REPO, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return root
