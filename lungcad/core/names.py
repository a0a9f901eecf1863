"""File and folder names made from outside data (a DICOM header, a server's answer), and
the check that every output stays inside its output folder.

A series UID or patient id arrives from someone else's file or server. It becomes part of
an output path only through :func:`safe_name`, which keeps a valid DICOM UID or a plain
identifier as it is and turns anything else (``../../x``, ``/etc``, control characters, an
empty value) into an escaped name with a hash of the original, so that two different
values never share a name. :func:`inside` is the last line: a path that would resolve
outside the output root is refused, never written.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from lungcad.errors import LungcadError

#: A DICOM UID (PS3.5 9.1): digits in dot-separated components, at most 64 characters.
_UID = re.compile(r"^(0|[1-9][0-9]*)(\.(0|[1-9][0-9]*))*$")
#: A plain identifier kept as it is (LIDC-IDRI-0001, a LUNA16 file stem).
_PLAIN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
_UNSAFE_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
#: How an escaped name ends; a plain identifier that ends so is escaped too, so that an
#: escaped name and a kept one never coincide.
_ESCAPED_TAIL = re.compile(r"-[0-9a-f]{12}$")


class UnsafePathError(LungcadError, ValueError):
    """An output path built from outside data would leave the output folder."""


def is_uid(value: object) -> bool:
    """Whether ``value`` is a syntactically valid DICOM UID."""
    return isinstance(value, str) and len(value) <= 64 and bool(_UID.match(value))


def safe_name(value: object) -> str:
    """A file or folder name for ``value`` that cannot name another place.

    A DICOM UID or a plain identifier (letters, digits, ``.``, ``_``, ``-``; starting with a
    letter or digit; at most 64 characters) is returned unchanged. Anything else keeps its
    safe characters (at most 40) and gains ``-`` and 12 hex digits of its SHA-256, so that
    distinct values keep distinct names (a plain identifier that already ends that way is
    escaped too).

    Example:
        >>> safe_name("1.3.6.1.4.1.14519.5.2.1.6279.6001.1")
        '1.3.6.1.4.1.14519.5.2.1.6279.6001.1'
        >>> safe_name("../../../x")
        'x-0274b71897ca'
    """
    text = "" if value is None else str(value)
    if is_uid(text) or (_PLAIN.match(text) and not _ESCAPED_TAIL.search(text)):
        return text
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
    kept = _UNSAFE_CHARS.sub("_", text).strip("._-")[:40]
    return f"{kept}-{digest}" if kept else f"unnamed-{digest}"


def inside(root: str | Path, path: str | Path) -> Path:
    """``path``, after checking that it resolves inside ``root`` (symbolic links followed).

    Raises:
        UnsafePathError: it would not.
    """
    root_resolved = Path(root).resolve()
    resolved = Path(path).resolve()
    if resolved != root_resolved and root_resolved not in resolved.parents:
        raise UnsafePathError(f"refused to write {path}: it lies outside the output folder {root}")
    return Path(path)


def scan_stem(patient_id: str, series_uid: str) -> str:
    """The stem of a scan's file names (its figure, its findings' maps): the patient and
    the last 12 characters of the series, both made safe."""
    return f"{safe_name(patient_id)}_{safe_name(series_uid)[-12:]}"
