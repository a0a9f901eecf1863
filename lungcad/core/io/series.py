"""Read one CT series into a Hounsfield-unit volume with its physical geometry.

Slices are ordered by ImagePositionPatient projected on the slice normal (InstanceNumber is
not trusted), the slice spacing comes from those positions (SliceThickness is not the
spacing), duplicate positions are dropped, gaps are refused, rescale tags are applied and
padding outside the reconstruction field of view becomes air. Compressed transfer syntaxes
decode through pydicom's pylibjpeg plugins.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom

from lungcad.core.io.geometry import VolumeGeometry
from lungcad.errors import LungcadError

AIR_HU = -1000
#: HU below this cannot be tissue or air: it is padding outside the field of view.
PADDING_HU_BELOW = -1500
#: A slice step larger than this multiple of the median step is a gap (missing slices).
GAP_FACTOR = 1.5
#: Positions closer than this along the normal are the same slice.
DUPLICATE_TOL_MM = 0.01


class SeriesError(LungcadError, ValueError):
    """A series cannot be turned into a trustworthy HU volume; the message says why."""


@dataclass
class CtVolume:
    """A HU volume (int16, (slice, row, column)) and where it lies in the patient."""

    hu: np.ndarray
    geometry: VolumeGeometry
    series_uid: str
    study_uid: str
    patient_id: str
    z_positions_mm: np.ndarray
    notes: list[str] = field(default_factory=list)
    #: The DICOM file of each slice, in the volume's slice order (empty for a .mhd volume):
    #: what derived DICOM objects reference.
    source_files: tuple[Path, ...] = ()


def _float_list(ds: pydicom.Dataset, keyword: str, path: Path) -> np.ndarray:
    value = ds.get(keyword)
    if value is None:
        raise SeriesError(f"{path}: missing {keyword}; cannot place the slice in patient space")
    return np.asarray([float(v) for v in value], dtype=np.float64)


def _slice_hu(ds: pydicom.Dataset, pixels: np.ndarray, padding_hu_below: float) -> np.ndarray:
    """HU of one slice: rescale applied, padding (tag value or impossible HU) set to air."""
    slope, intercept = float(ds.RescaleSlope), float(ds.RescaleIntercept)
    pad_value = ds.get("PixelPaddingValue")
    if pad_value is not None and int(ds.get("PixelRepresentation", 0)) == 1 and pad_value > 32767:
        pad_value -= 65536  # stored as US although the pixels are signed
    lo, hi = int(pixels.min()), int(pixels.max())
    if (
        slope == 1.0
        and intercept.is_integer()
        and lo + intercept >= -32768
        and hi + intercept <= 32767
    ):
        hu = pixels.astype(np.int16)  # the usual CT case: exact integer arithmetic
        hu += np.int16(intercept)
    else:
        values = np.rint(pixels.astype(np.float32) * slope + intercept)
        hu = np.clip(values, -32768, 32767).astype(np.int16)
    padding = hu < padding_hu_below
    if pad_value is not None and lo <= pad_value <= hi:
        padding |= pixels == pad_value
    np.putmask(hu, padding, AIR_HU)
    return hu


def read_series(files: list[Path], padding_hu_below: float = PADDING_HU_BELOW) -> CtVolume:
    """Read the files of one series into a HU volume.

    Args:
        files: every file of the series (any order).
        padding_hu_below: HU below which a voxel is treated as padding and set to air.

    Raises:
        SeriesError: unreadable/truncated file, several series, not CT, missing rescale or
            position tags, inconsistent slice geometry, a single slice, or a gap in z.
    """
    if not files:
        raise SeriesError("series has no files")
    slices = []
    for path in files:
        try:
            ds = pydicom.dcmread(path)
            pixels = ds.pixel_array
        except Exception as exc:  # pydicom raises many types for broken files
            raise SeriesError(
                f"{path}: unreadable or truncated DICOM ({type(exc).__name__}: {exc})"
            ) from exc
        slices.append((path, ds, pixels))

    first_path, first, _ = slices[0]
    uids = {str(ds.get("SeriesInstanceUID", "")) for _, ds, _ in slices}
    if len(uids) > 1:
        raise SeriesError(f"{first_path.parent}: files of {len(uids)} series mixed together")
    modality = str(first.get("Modality", ""))
    if modality != "CT":
        raise SeriesError(f"{first_path}: modality is {modality or 'missing'}, not CT")
    if len(slices) < 2:
        raise SeriesError(
            f"{first_path}: a single slice cannot form a volume (need at least 2 slices)"
        )

    orientation = _float_list(first, "ImageOrientationPatient", first_path)
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    spacing_rc = _float_list(first, "PixelSpacing", first_path)
    shape_rc = (int(first.Rows), int(first.Columns))

    records = []
    for path, ds, pixels in slices:
        if np.abs(_float_list(ds, "ImageOrientationPatient", path) - orientation).max() > 1e-4:
            raise SeriesError(f"{path}: ImageOrientationPatient differs from {first_path}")
        if np.abs(_float_list(ds, "PixelSpacing", path) - spacing_rc).max() > 1e-4:
            raise SeriesError(f"{path}: PixelSpacing differs from {first_path}")
        if pixels.shape != shape_rc:
            raise SeriesError(f"{path}: image size {pixels.shape} differs from {shape_rc}")
        if "RescaleSlope" not in ds or "RescaleIntercept" not in ds:
            raise SeriesError(
                f"{path}: missing RescaleSlope/RescaleIntercept, so stored values cannot be "
                "converted to HU"
            )
        position = _float_list(ds, "ImagePositionPatient", path)
        records.append((float(position @ normal), position, path, ds, pixels))

    records.sort(key=lambda r: (r[0], int(r[3].get("InstanceNumber", 0) or 0)))
    notes: list[str] = []
    unique = [records[0]]
    for rec in records[1:]:
        if abs(rec[0] - unique[-1][0]) < DUPLICATE_TOL_MM:
            continue
        unique.append(rec)
    if len(unique) < len(records):
        notes.append(f"dropped {len(records) - len(unique)} duplicate slice position(s)")
    if len(unique) < 2:
        raise SeriesError(f"{first_path.parent}: all slices share one position; no volume")

    positions = np.array([r[0] for r in unique])
    steps = np.diff(positions)
    step = float(np.median(steps))
    if steps.max() > GAP_FACTOR * step:
        i = int(np.argmax(steps))
        raise SeriesError(
            f"{first_path.parent}: gap in z between {positions[i]:.2f} and "
            f"{positions[i + 1]:.2f} mm (slice step {step:.2f} mm); slices are missing"
        )

    hu = np.empty((len(unique), *shape_rc), dtype=np.int16)
    for k, (_, _, _, ds, pixels) in enumerate(unique):
        hu[k] = _slice_hu(ds, pixels, padding_hu_below)

    geometry = VolumeGeometry(
        origin_mm=unique[0][1],
        spacing_mm=np.array([spacing_rc[1], spacing_rc[0], step]),
        direction=np.column_stack([row_dir, col_dir, normal]),
        shape=hu.shape,
    )
    return CtVolume(
        hu=hu,
        geometry=geometry,
        series_uid=uids.pop(),
        study_uid=str(first.get("StudyInstanceUID", "")),
        patient_id=str(first.get("PatientID", "")),
        z_positions_mm=np.array([r[1][2] for r in unique]),
        notes=notes,
        source_files=tuple(r[2] for r in unique),
    )
