"""lungcad's processes run without numpy's transparent-huge-page advice, and keep large
freed allocations for reuse, unless the environment says otherwise."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

HUGE_PAGE_PROBE = "import lungcad, numpy; print(numpy._core.multiarray._get_madvise_hugepage())"

# Where glibc put a fresh 100 MB array: in a mapping of its own (mallinfo2's hblkhd, bytes
# in such mappings) or on the heap.
MALLINFO2 = "arena ordblks smblks hblks hblkhd usmblks fsmblks uordblks fordblks keepcost"
HEAP_PROBE = f"""
import ctypes
class Info(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in "{MALLINFO2}".split()]
libc = ctypes.CDLL(None)
libc.mallinfo2.restype = Info
import lungcad, numpy
before = libc.mallinfo2().hblkhd
array = numpy.ones(100_000_000, numpy.uint8)
print("mapping" if libc.mallinfo2().hblkhd - before >= 100_000_000 else "heap")
"""


def _probe(code: str, **settings: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMPY_MADVISE", "MALLOC_"))}
    env.pop("GLIBC_TUNABLES", None)
    done = subprocess.run(
        [sys.executable, "-c", code], env={**env, **settings}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("setting", "advised"), [(None, "False"), ("1", "True"), ("0", "False")])
def test_importing_lungcad_first_turns_the_advice_off_unless_the_environment_says(
    setting, advised
) -> None:
    settings = {} if setting is None else {"NUMPY_MADVISE_HUGEPAGE": setting}
    assert _probe(HUGE_PAGE_PROBE, **settings) == advised


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc")
@pytest.mark.parametrize(
    ("settings", "placed"),
    [({}, "heap"), ({"MALLOC_ARENA_MAX": "4"}, "mapping"), ({"GLIBC_TUNABLES": ""}, "mapping")],
)
def test_large_arrays_come_from_the_heap_unless_the_environment_tunes_malloc(
    settings, placed
) -> None:
    assert _probe(HEAP_PROBE, **settings) == placed
