"""Index a LIDC-IDRI root once: which DICOM files belong to which CT series.

The index reads only the header tags it needs (no pixel data), in parallel, and groups files
by SeriesInstanceUID, so later stages open a series without walking the tree again. It works
for the TCIA layout (``LIDC-IDRI-XXXX/<study>/<series>/*.dcm``), for NBIA-downloader folder
names and for any folder of partial series.
"""

from __future__ import annotations

import os
import stat
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd
import pydicom

from lungcad.core.io.series import NON_IMAGE_MODALITIES
from lungcad.core.parallel import progress_map
from lungcad.errors import LungcadError

_HEADER_TAGS = ["SeriesInstanceUID", "StudyInstanceUID", "PatientID", "Modality"]
#: Files that are part of an LIDC download but are not images.
_NOT_DICOM_SUFFIXES = {".xml", ".json", ".txt", ".csv", ".md", ".zip", ".tcia"}


class LidcRootError(LungcadError, ValueError):
    """The LIDC root path is missing, not a folder, or holds no DICOM series."""


@dataclass
class SeriesEntry:
    """The files of one series and the folders they lie in."""

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    files: list[Path] = field(default_factory=list)

    @property
    def folders(self) -> set[Path]:
        return {f.parent for f in self.files}


@dataclass
class DicomIndex:
    """All series of a root, plus the files that could not be read as DICOM.

    Attributes:
        series: SeriesInstanceUID -> entry, in sorted UID order.
        unreadable: (file, reason) for every file whose header could not be read.
        mixed_folders: folder -> series UIDs, for folders holding files of several series.
    """

    root: Path
    series: dict[str, SeriesEntry]
    unreadable: list[tuple[Path, str]]
    mixed_folders: dict[Path, list[str]]

    def to_frame(self) -> pd.DataFrame:
        """One row per series: uid, patient, modality, file count, folder."""
        return pd.DataFrame(
            [
                {
                    "series_uid": s.series_uid,
                    "study_uid": s.study_uid,
                    "patient_id": s.patient_id,
                    "modality": s.modality,
                    "n_files": len(s.files),
                    "folder": str(sorted(s.folders)[0].relative_to(self.root)),
                }
                for s in self.series.values()
            ],
            columns=["series_uid", "study_uid", "patient_id", "modality", "n_files", "folder"],
        )


def _candidate_files(root: Path) -> tuple[list[Path], list[tuple[Path, str]]]:
    """The regular files under ``root`` that may be DICOM, and the special files (a FIFO,
    a socket, a device: reading one can block forever) left out."""
    files, special = [], []
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() in _NOT_DICOM_SUFFIXES:
                continue
            path = Path(dirpath) / name
            try:
                regular = stat.S_ISREG(path.stat().st_mode)
            except OSError as exc:
                special.append((path, f"cannot be read ({exc.strerror}): skipped"))
                continue
            if regular:
                files.append(path)
            else:
                special.append((path, "not a regular file (a FIFO, socket or device): skipped"))
    files.sort()
    return files, special


def _has_dicom_marker(path: Path) -> bool:
    try:
        with open(path, "rb") as fh:
            fh.seek(128)
            return fh.read(4) == b"DICM"
    except OSError:
        return False


def _read_header(path: Path) -> tuple[Path, dict[str, str] | None, str | None]:
    if not _has_dicom_marker(path):
        return path, None, "not a DICOM file (no 'DICM' marker at byte 128); ignored"
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=_HEADER_TAGS)
        uid = ds.get("SeriesInstanceUID")
        header = {
            "series_uid": str(uid or ""),
            "study_uid": str(ds.get("StudyInstanceUID", "")),
            "patient_id": str(ds.get("PatientID", "")),
            "modality": str(ds.get("Modality", "")),
        }
    except Exception as exc:  # pydicom raises many types for broken or hostile headers
        return path, None, f"not a readable DICOM file ({type(exc).__name__}: {exc})"[:300]
    if not uid:
        return path, None, "DICOM file has no SeriesInstanceUID"
    return path, header, None


def index_lidc_root(root: str | Path, workers: int = 1, progress: bool = True) -> DicomIndex:
    """Read the header of every file under ``root`` once and group the files by series.

    Args:
        root: an LIDC-IDRI download, the phantom, or any folder of DICOM series.
        workers: processes reading headers in parallel.
        progress: show a progress bar.

    Raises:
        LidcRootError: the root does not exist, is not a folder, or has no DICOM series.
    """
    root = Path(root)
    if not root.exists():
        raise LidcRootError(
            f"LIDC root {root} does not exist: point --raw (or data.raw_root in params.yaml) "
            "at the folder holding the LIDC-IDRI-XXXX patient folders."
        )
    if not root.is_dir():
        raise LidcRootError(f"LIDC root {root} is a file, not a folder of DICOM series.")
    files, special = _candidate_files(root)
    if not files:
        raise LidcRootError(
            f"LIDC root {root} contains no files: download LIDC-IDRI into it or run "
            "`lungcad data phantom --out {root}` to write the phantom there."
        )
    chunk = max(1, len(files) // (workers * 8) if workers > 1 else len(files))
    results = progress_map(
        _read_header, files, workers, "index DICOM headers", "file", progress, chunksize=chunk
    )

    series: dict[str, SeriesEntry] = {}
    unreadable: list[tuple[Path, str]] = list(special)
    by_folder: dict[Path, set[str]] = defaultdict(set)
    for path, header, error in results:
        if header is None:
            unreadable.append((path, error or "unreadable"))
            continue
        entry = series.setdefault(
            header["series_uid"],
            SeriesEntry(
                header["series_uid"], header["study_uid"], header["patient_id"], header["modality"]
            ),
        )
        entry.files.append(path)
        if header["modality"] not in NON_IMAGE_MODALITIES:  # a report beside its CT is fine
            by_folder[path.parent].add(header["series_uid"])
    if not series:
        raise LidcRootError(
            f"LIDC root {root} holds {len(files)} files but no readable DICOM series "
            f"(first problem: {unreadable[0][0]}: {unreadable[0][1]})."
        )
    mixed = {folder: sorted(uids) for folder, uids in by_folder.items() if len(uids) > 1}
    return DicomIndex(root, dict(sorted(series.items())), unreadable, mixed)
