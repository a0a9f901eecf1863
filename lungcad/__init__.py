"""lungcad: lung nodule detection and malignancy CAD on LIDC-IDRI thoracic CT."""

from __future__ import annotations

import ctypes
import os
from importlib.metadata import PackageNotFoundError, version

# numpy advises the kernel to back every large array with transparent huge pages. Where
# the kernel serves that advice slowly (THP "madvise" mode on some virtual machines), each
# fresh array costs system time: the phantom writer ran 1.8x slower and the dataset build
# 1.2x (BENCHMARKS.md, "Huge pages"). lungcad turns the advice off for its
# processes unless the environment already says otherwise (NUMPY_MADVISE_HUGEPAGE=1 keeps
# it); it takes effect where lungcad is imported before numpy, as in every lungcad command.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

#: glibc's ``mallopt`` parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def _keep_freed_memory() -> None:
    """glibc serves each allocation over 32 MB (a volume, a map, a batch) with a fresh
    mapping and hands it back to the kernel when freed, so the next one is faulted in and
    zeroed again, page by page; on virtual machines whose host reclaims freed pages that is
    most of the system time of a scan's detection. lungcad's processes take large
    allocations from the heap and keep up to 2 GB of freed memory at its top for reuse: on
    such a machine the dense detector ran 1.6-1.9x faster per full-size scan and the
    phantom writer 1.5x, at 0.2-0.7 GB more peak memory (BENCHMARKS.md, "Keeping freed
    memory"). Left alone where the environment sets glibc's malloc tunables
    (any ``MALLOC_*`` variable or ``GLIBC_TUNABLES``) and off glibc."""
    if "GLIBC_TUNABLES" in os.environ or any(k.startswith("MALLOC_") for k in os.environ):
        return
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 (glibc only: other C libraries differ)
    except (OSError, AttributeError):
        return
    libc.mallopt(_M_MMAP_MAX, 0)
    libc.mallopt(_M_TRIM_THRESHOLD, 2**31 - 1)


_keep_freed_memory()

try:
    __version__ = version("lungcad")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
