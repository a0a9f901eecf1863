"""lungcad's processes run without numpy's transparent-huge-page advice unless told."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

PROBE = "import lungcad, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"


@pytest.mark.parametrize(("setting", "advised"), [(None, "False"), ("1", "True"), ("0", "False")])
def test_importing_lungcad_first_turns_the_advice_off_unless_the_environment_says(
    setting, advised
) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NUMPY_MADVISE_HUGEPAGE"}
    if setting is not None:
        env["NUMPY_MADVISE_HUGEPAGE"] = setting
    done = subprocess.run(
        [sys.executable, "-c", PROBE], env=env, capture_output=True, text=True, check=True
    )
    assert done.stdout.strip() == advised
