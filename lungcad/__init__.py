"""lungcad: lung nodule detection and malignancy CAD on LIDC-IDRI thoracic CT."""

from __future__ import annotations

import os
from importlib.metadata import PackageNotFoundError, version

# numpy advises the kernel to back every large array with transparent huge pages. Where
# the kernel serves that advice slowly (THP "madvise" mode on some virtual machines), each
# fresh array costs system time: the phantom writer ran 1.8x slower and the dataset build
# 1.2x (BENCHMARKS.md, "Huge pages"). lungcad turns the advice off for its
# processes unless the environment already says otherwise (NUMPY_MADVISE_HUGEPAGE=1 keeps
# it); it takes effect where lungcad is imported before numpy, as in every lungcad command.
os.environ.setdefault("NUMPY_MADVISE_HUGEPAGE", "0")

try:
    __version__ = version("lungcad")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
