"""What `lungcad detect` reads: DICOM series (one folder or a whole LIDC root) and LUNA16
``.mhd``/``.raw`` volumes, all turned into the same HU volume with patient-mm geometry.

A ``.mhd`` volume is read by SimpleITK: its origin, spacing and direction are the patient
frame (LUNA16's world coordinates), its values are HU already, and values below
``PADDING_HU_BELOW`` (LUNA16 pads with −3024 or −2000) become air as in the DICOM path.
LUNA16 names each file after the LIDC SeriesInstanceUID, so its patient is looked up in the
LIDC database when the series is there.
"""

from __future__ import annotations

import stat
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from lungcad.config import ReadLimits
from lungcad.core.annotations.lidc_db import LidcDatabase
from lungcad.core.io.dicom_index import LidcRootError, index_lidc_root
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import (
    AIR_HU,
    NON_IMAGE_MODALITIES,
    PADDING_HU_BELOW,
    CtVolume,
    SeriesError,
    read_series,
)


@dataclass(frozen=True)
class ScanSource:
    """One scan to read: a DICOM series (its files) or a MetaImage header."""

    series_uid: str
    patient_id: str
    kind: str  # "dicom" or "mhd"
    files: tuple[Path, ...] = field(default=())

    def read(self, limits: ReadLimits | None = None) -> CtVolume:
        """The HU volume; SeriesError with the reason when it cannot be read (or is over
        ``limits``, the defaults when None)."""
        if self.kind == "mhd":
            return read_mhd(self.files[0], self.patient_id, limits)
        return read_series(list(self.files), limits)


@dataclass(frozen=True)
class Problem:
    """An item of the input that gives no scan: a stray file (``skipped``) or a series that
    cannot be used (``error``), with the reason."""

    item: str
    reason: str
    status: str = "skipped"


#: Bytes per voxel of the scalar pixel types a .mhd may hold.
_SCALAR_BYTES = {
    sitk.sitkUInt8: 1,
    sitk.sitkInt8: 1,
    sitk.sitkUInt16: 2,
    sitk.sitkInt16: 2,
    sitk.sitkUInt32: 4,
    sitk.sitkInt32: 4,
    sitk.sitkUInt64: 8,
    sitk.sitkInt64: 8,
    sitk.sitkFloat32: 4,
    sitk.sitkFloat64: 8,
}
#: A MetaImage header is a few hundred bytes of text; more than this is not one.
_MHD_HEADER_BYTES = 64 * 1024


def _mhd_data_file(path: Path) -> None:
    """Check that a MetaImage header's pixels are in one regular file beside it (or in the
    header itself): a header from outside never makes lungcad read another place."""
    with open(path, "rb") as handle:
        text = handle.read(_MHD_HEADER_BYTES).decode("latin-1")
    for line in text.splitlines():
        key, _, value = line.partition("=")
        if key.strip().lower() != "elementdatafile":
            continue
        name = value.strip()
        if name.upper() == "LOCAL":
            return
        if name.upper().startswith("LIST") or "%" in name or " " in name:
            raise SeriesError(f"{path}: ElementDataFile {name!r} names several files; give one")
        if not name or Path(name).name != name or name in (".", ".."):
            raise SeriesError(
                f"{path}: ElementDataFile {name!r} is not a file beside the header; keep the "
                ".raw/.zraw in the header's folder and name it without a path"
            )
        data = path.parent / name
        if not data.exists() or not stat.S_ISREG(data.stat().st_mode):
            raise SeriesError(f"{path}: its data file {name} is missing or not a regular file")
        return
    raise SeriesError(f"{path}: not a MetaImage header (no ElementDataFile line)")


def read_mhd(path: Path, patient_id: str = "", limits: ReadLimits | None = None) -> CtVolume:
    """A LUNA16-style MetaImage volume (``.mhd`` + its ``.raw``) as a HU CtVolume.

    Its size is checked from the header against ``limits`` (``max_series_voxels``,
    ``max_mhd_bytes``) before a byte of pixels is read or decompressed.
    """
    limits = limits or ReadLimits()
    path = Path(path)
    if not path.is_file():
        raise SeriesError(f"{path}: no such file")
    _mhd_data_file(path)
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise SeriesError(f"{path}: SimpleITK cannot read its header {detail}") from exc
    size = reader.GetSize()
    if len(size) != 3 or reader.GetNumberOfComponents() != 1:
        raise SeriesError(f"{path}: not a single-channel 3-D volume")
    if reader.GetPixelID() not in _SCALAR_BYTES:
        raise SeriesError(f"{path}: pixel type {reader.GetPixelIDTypeAsString()} is not scalar")
    voxels = int(np.prod(size, dtype=np.int64))
    if voxels > limits.max_series_voxels:
        raise SeriesError(
            f"{path}: {' x '.join(map(str, size))} voxels, over limits.read.max_series_voxels = "
            f"{limits.max_series_voxels} (not read)"
        )
    if voxels * _SCALAR_BYTES[reader.GetPixelID()] > limits.max_mhd_bytes:
        raise SeriesError(
            f"{path}: {voxels * _SCALAR_BYTES[reader.GetPixelID()]} bytes of pixels, over "
            f"limits.read.max_mhd_bytes = {limits.max_mhd_bytes} (not read)"
        )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        detail = str(exc).strip().splitlines()[-1] if str(exc).strip() else ""
        raise SeriesError(
            f"{path}: SimpleITK cannot read it (is its .raw/.zraw data file beside it?) {detail}"
        ) from exc
    values = sitk.GetArrayViewFromImage(image)
    if values.shape[0] < 2:
        raise SeriesError(f"{path}: a single slice cannot form a volume")
    hu = np.empty(values.shape, dtype=np.int16)
    for k in range(values.shape[0]):  # a slice at a time: no full-size float copy
        hu[k] = np.clip(np.rint(values[k]), -32768, 32767)
        hu[k][values[k] < PADDING_HU_BELOW] = AIR_HU
    direction = np.array(image.GetDirection(), dtype=float).reshape(3, 3)
    geometry = VolumeGeometry(
        origin_mm=np.array(image.GetOrigin(), dtype=float),
        spacing_mm=np.array(image.GetSpacing(), dtype=float),
        direction=direction,
        shape=hu.shape,
    )
    del values, image
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
) -> tuple[list[ScanSource], list[Problem]]:
    """Every scan under ``path`` (a ``.mhd`` file, a folder of them, a DICOM series folder or
    an LIDC root), in series-UID order, and what gives no scan: stray files and objects
    that are not CT images (``skipped``), series that cannot be used (``error``).

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
        return _mhd_sources(mhds, db)
    if path.is_file():
        raise LidcRootError(f"{path}: give a DICOM series folder, an LIDC root or a .mhd file")
    index = index_lidc_root(path, workers=workers, progress=progress)
    problems = [Problem(str(p), reason) for p, reason in index.unreadable]
    mixed = set()
    for folder, uids in index.mixed_folders.items():
        mixed.update(uids)
        problems.append(
            Problem(str(folder), f"folder mixes {len(uids)} series; keep one per folder", "error")
        )
    sources = []
    for uid, entry in index.series.items():
        if uid in mixed:
            continue
        if entry.modality in NON_IMAGE_MODALITIES:
            problems.append(
                Problem(
                    str(sorted(entry.folders)[0]),
                    f"series {uid}: not an image ({entry.modality}): skipped",
                )
            )
        elif entry.modality not in ("CT", ""):
            problems.append(
                Problem(
                    str(sorted(entry.folders)[0]),
                    f"series {uid}: modality {entry.modality}, not CT: skipped",
                )
            )
        else:
            sources.append(ScanSource(uid, entry.patient_id, "dicom", tuple(entry.files)))
    return sources, problems


def _mhd_sources(mhds: list[Path], db: LidcDatabase) -> tuple[list[ScanSource], list[Problem]]:
    sources: dict[str, ScanSource] = {}
    problems = []
    for m in mhds:
        if not m.is_file():
            problems.append(Problem(str(m), "not a regular file: skipped"))
        elif m.stem in sources:
            problems.append(
                Problem(
                    str(m),
                    f"series {m.stem} is also {sources[m.stem].files[0]}: this copy is not read",
                    "error",
                )
            )
        else:
            scan = db.scan_by_series(m.stem)
            sources[m.stem] = ScanSource(m.stem, scan.patient_id if scan else m.stem, "mhd", (m,))
    return sorted(sources.values(), key=lambda s: s.series_uid), problems
