"""The phantom in LUNA16's layout: ``subset<k>/<SeriesInstanceUID>.mhd`` + ``.raw`` volumes
and the ``annotations.csv`` / ``annotations_excluded.csv`` tables, so LUNA16's protocol
(one fold per subset, FROC on its tables) runs on the embedded data.

Each volume is the phantom's DICOM series read the way lungcad reads any series (HU after
rescale, spacing from the slice positions, padding as air) and written by SimpleITK as
MetaImage with that geometry: origin at the first slice, LUNA16's world coordinates in
patient mm. Scans are dealt to the subsets in SeriesInstanceUID order. The tables follow
LUNA16's rule, from the LIDC database: reference nodules are outlined by at least 3 of the
4 readers and at least 3 mm across; every other outlined lesion is excluded.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pandas as pd
import SimpleITK as sitk

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.luna16 import REFERENCE_COLUMNS, lidc_reference
from lungcad.core.io.scans import find_scans
from lungcad.core.outputs import write_csv_atomic

ANNOTATIONS = "annotations.csv"
EXCLUDED = "annotations_excluded.csv"


def subset_of(position: int, n_subsets: int) -> str:
    """The subset folder of the scan at ``position`` in SeriesInstanceUID order."""
    return f"subset{position % n_subsets}"


def dicom_to_luna16(
    dicom_root: str | Path,
    out_root: str | Path,
    n_subsets: int = 10,
    db: LidcDatabase | None = None,
) -> pd.DataFrame:
    """Write every DICOM series under ``dicom_root`` as LUNA16 (see module docstring);
    returns one row per scan (seriesuid, patient_id, subset, reference nodules).

    Raises:
        ValueError: fewer than one subset, or a series that cannot be read.
    """
    if n_subsets < 1:
        raise ValueError(f"--subsets must be >= 1 (got {n_subsets})")
    db = db or LidcDatabase()
    out_root = Path(out_root)
    sources, problems = find_scans(dicom_root, db, progress=False)
    if problems:
        raise ValueError(f"{problems[0].item}: {problems[0].reason}")
    refs, excluded, rows = [], [], []
    for i, source in enumerate(sorted(sources, key=lambda s: s.series_uid)):
        volume = source.read()
        folder = out_root / subset_of(i, n_subsets)
        folder.mkdir(parents=True, exist_ok=True)
        sitk.WriteImage(
            volume.geometry.to_sitk(volume.hu), str(folder / f"{source.series_uid}.mhd")
        )
        tables = lidc_reference(volume, db)
        if tables is not None:
            refs.append(tables[0][REFERENCE_COLUMNS])
            excluded.append(tables[1][REFERENCE_COLUMNS])
        rows.append(
            {
                "seriesuid": source.series_uid,
                "patient_id": source.patient_id,
                "subset": folder.name,
                "nodules": 0 if tables is None else len(tables[0]),
            }
        )
    for name, parts in ((ANNOTATIONS, refs), (EXCLUDED, excluded)):
        table = pd.concat(parts) if parts else pd.DataFrame(columns=REFERENCE_COLUMNS)
        write_csv_atomic(table, out_root / name, f"LUNA16 {name}")
    return pd.DataFrame(rows)


def move_to_luna16(dicom_root: Path, out_root: Path, n_subsets: int) -> pd.DataFrame:
    """Convert a freshly written DICOM phantom to LUNA16 in ``out_root`` and remove the
    DICOM (its manifest, ``phantom.json``, moves along)."""
    scans = dicom_to_luna16(dicom_root, out_root, n_subsets)
    if (dicom_root / "phantom.json").is_file():
        shutil.move(dicom_root / "phantom.json", out_root / "phantom.json")
    shutil.rmtree(dicom_root)
    return scans
