"""lungcad: lung nodule detection and malignancy CAD on LIDC-IDRI thoracic CT."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lungcad")
except PackageNotFoundError:  # running from a source tree that was not installed
    __version__ = "0.0.0+unknown"
