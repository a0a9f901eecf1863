"""Reference nodules in LUNA16's table format (FROC, the LUNA16 layout), from the LIDC database or
LUNA16's own ``annotations.csv`` / ``annotations_excluded.csv``.

From the LIDC database (a phantom or a real download), a scan's nodules are clustered from
the reader outlines (``cluster_nodules``) and placed in patient mm with the series' own
geometry. As in LUNA16, the reference nodules are those outlined by at least 3 of the 4
readers and at least 3 mm across; every other outlined lesion is an *excluded* annotation
(a finding on it is neither a hit nor a false positive).
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.annotations.nodules import cluster_nodules, nodule_center_mm
from lungcad.core.io.series import CtVolume

REFERENCE_COLUMNS = ["seriesuid", "coordX", "coordY", "coordZ", "diameter_mm"]
#: LUNA16's reference nodules: outlined by >= 3 readers, >= 3 mm.
MIN_READERS = 3
MIN_DIAMETER_MM = 3.0


def lidc_reference(
    volume: CtVolume,
    db: LidcDatabase,
    min_readers: int = MIN_READERS,
    min_diameter_mm: float = MIN_DIAMETER_MM,
) -> tuple[pd.DataFrame, pd.DataFrame] | None:
    """(reference nodules, excluded annotations) of a volume whose series is in the LIDC
    database, with ``nodule_id, n_readers, malignancy`` beside LUNA16's columns; None for a
    series the database does not know. Nodules outside the volume's slices are left out."""
    scan = db.scan_by_series(volume.series_uid)
    if scan is None:
        return None
    rows = []
    for n in cluster_nodules(scan, db.annotations(scan.scan_id)):
        centre = nodule_center_mm(n, volume)
        if centre is None:
            continue
        rows.append(
            {
                "seriesuid": volume.series_uid,
                "coordX": centre[0],
                "coordY": centre[1],
                "coordZ": centre[2],
                "diameter_mm": n.diameter_mm,
                "nodule_id": n.nodule_id,
                "n_readers": n.n_readers,
                "malignancy": n.malignancy_mean,
                "texture": n.characteristics_mean.get("texture", float("nan")),
            }
        )
    table = pd.DataFrame(
        rows, columns=[*REFERENCE_COLUMNS, "nodule_id", "n_readers", "malignancy", "texture"]
    )
    counted = (table["n_readers"] >= min_readers) & (table["diameter_mm"] >= min_diameter_mm)
    return table[counted].reset_index(drop=True), table[~counted].reset_index(drop=True)


def reference_count(
    series_uid: str,
    db: LidcDatabase,
    min_readers: int = MIN_READERS,
    min_diameter_mm: float = MIN_DIAMETER_MM,
) -> int | None:
    """How many reference nodules the LIDC database holds for a series, from the database
    alone (for a scan that could not be read: they count as missed); None for a series the
    database does not know."""
    scan = db.scan_by_series(series_uid)
    if scan is None:
        return None
    return sum(
        n.n_readers >= min_readers and n.diameter_mm >= min_diameter_mm
        for n in cluster_nodules(scan, db.annotations(scan.scan_id))
    )


def read_luna_csv(path: str | Path, what: str) -> pd.DataFrame:
    """A LUNA16 annotation table (``seriesuid, coordX, coordY, coordZ, diameter_mm``).

    Raises:
        ValueError: missing file or columns, naming the file and what it lacks.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{what} {path}: no such file")
    table = pd.read_csv(path)
    missing = [c for c in REFERENCE_COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(
            f"{what} {path}: missing column(s) {', '.join(missing)}; LUNA16's columns are "
            + ", ".join(REFERENCE_COLUMNS)
        )
    table["seriesuid"] = table["seriesuid"].astype(str)
    return table
