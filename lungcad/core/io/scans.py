"""What `lungcad detect` reads: DICOM series (one folder or a whole LIDC root) and LUNA16
``.mhd``/``.raw`` volumes, all turned into the same HU volume with patient-mm geometry.

A ``.mhd`` volume is read by SimpleITK: its origin, spacing and direction are the patient
frame (LUNA16's world coordinates), its values are HU already, and values below
``PADDING_HU_BELOW`` (LUNA16 pads with −3024 or −2000) become air as in the DICOM path.
LUNA16 names each file after the LIDC SeriesInstanceUID, so its patient is looked up in the
LIDC database when the series is there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.io.dicom_index import LidcRootError, index_lidc_root
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import AIR_HU, PADDING_HU_BELOW, CtVolume, SeriesError, read_series


@dataclass(frozen=True)
class ScanSource:
    """One scan to read: a DICOM series (its files) or a MetaImage header."""

    series_uid: str
    patient_id: str
    kind: str  # "dicom" or "mhd"
    files: tuple[Path, ...] = field(default=())

    def read(self) -> CtVolume:
        """The HU volume; SeriesError with the reason when it cannot be read."""
        if self.kind == "mhd":
            return read_mhd(self.files[0], self.patient_id)
        return read_series(list(self.files))


def read_mhd(path: Path, patient_id: str = "") -> CtVolume:
    """A LUNA16-style MetaImage volume (``.mhd`` + its ``.raw``) as a HU CtVolume."""
    path = Path(path)
    if not path.is_file():
        raise SeriesError(f"{path}: no such file")
    try:
        image = sitk.ReadImage(str(path))
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise SeriesError(
            f"{path}: SimpleITK cannot read it (is its .raw/.zraw data file beside it?) {detail}"
        ) from exc
    if image.GetDimension() != 3 or image.GetNumberOfComponentsPerPixel() != 1:
        raise SeriesError(f"{path}: not a single-channel 3-D volume")
    values = sitk.GetArrayFromImage(image)
    hu = np.clip(np.rint(values), -32768, 32767).astype(np.int16)
    hu[values < PADDING_HU_BELOW] = AIR_HU
    if hu.shape[0] < 2:
        raise SeriesError(f"{path}: a single slice cannot form a volume")
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    geometry = VolumeGeometry(
        origin_mm=np.array(image.GetOrigin(), dtype=float),
        spacing_mm=np.array(image.GetSpacing(), dtype=float),
        direction=direction,
        shape=hu.shape,
    )
    z = geometry.index_to_mm(
        np.c_[np.zeros(hu.shape[0]), np.zeros(hu.shape[0]), np.arange(hu.shape[0])]
    )
    return CtVolume(
        hu=hu,
        geometry=geometry,
        series_uid=path.stem,
        study_uid="",
        patient_id=patient_id or path.stem,
        z_positions_mm=z[:, 2],
    )


def find_scans(
    path: str | Path, db: LidcDatabase | None = None, workers: int = 1, progress: bool = True
) -> tuple[list[ScanSource], list[tuple[str, str]]]:
    """Every scan under ``path`` (a ``.mhd`` file, a folder of them, a DICOM series folder or
    an LIDC root), in series-UID order, and (item, reason) for what cannot be used.

    Raises:
        LidcRootError: the path does not exist or holds neither DICOM nor ``.mhd`` volumes.
    """
    path = Path(path)
    if not path.exists():
        raise LidcRootError(f"{path}: no such file or folder")
    db = db or LidcDatabase()
    mhds = [path] if path.is_file() and path.suffix.lower() == ".mhd" else []
    if path.is_dir():
        mhds = sorted(path.rglob("*.mhd"))
    if mhds:
        sources = []
        for m in mhds:
            scan = db.scan_by_series(m.stem)
            sources.append(ScanSource(m.stem, scan.patient_id if scan else m.stem, "mhd", (m,)))
        return sorted(sources, key=lambda s: s.series_uid), []
    if path.is_file():
        raise LidcRootError(f"{path}: give a DICOM series folder, an LIDC root or a .mhd file")
    index = index_lidc_root(path, workers=workers, progress=progress)
    problems = [(str(p), reason) for p, reason in index.unreadable]
    mixed = set()
    for folder, uids in index.mixed_folders.items():
        mixed.update(uids)
        problems.append((str(folder), f"folder mixes {len(uids)} series; keep one per folder"))
    sources = [
        ScanSource(uid, e.patient_id, "dicom", tuple(e.files))
        for uid, e in index.series.items()
        if uid not in mixed
    ]
    return sources, problems
