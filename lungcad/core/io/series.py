"""Read one CT series into a Hounsfield-unit volume with its physical geometry.

Every file's header is read and checked before any pixel is decoded: a file that is not an
image of the series' stack (a scout, another plane, an unreadable header, missing or broken
geometry or rescale tags) is left out with a note, and the stack's size is checked against
the read limits (``limits.read``), so a header that declares gigabytes is refused before they
are allocated. A slice whose pixels cannot be decoded is left out too, with a note.

Slices are ordered by ImagePositionPatient projected on the slice normal (InstanceNumber is
not trusted), the slice spacing comes from those positions (SliceThickness is not the
spacing), duplicate positions are dropped, rescale tags are applied and padding outside the
reconstruction field of view becomes air. Missing slices (left out, or absent from the
files) are filled by interpolation between their neighbours when at most
``max_gap_slices`` are missing in a row, with a note; a wider gap refuses the series.

The volume is always axial, in the patient frame's axis order (LPS): a sagittal or coronal
stack is reordered exactly; a gantry-tilted or oblique stack is resampled (SimpleITK,
linear) onto an axial grid with its true geometry, and a note says so. The source stack's
own grid is kept (``source_grid``) for objects that reference its images (DICOM SEG).
Compressed transfer syntaxes decode through pydicom's pylibjpeg plugins.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pydicom
import SimpleITK as sitk
from pydicom.multival import MultiValue
from pydicom.pixels import pixel_array

from lungcad.config import ReadLimits
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.errors import LungcadError

AIR_HU = -1000
#: HU below this cannot be tissue or air: it is padding outside the field of view.
PADDING_HU_BELOW = -1500
#: A slice step larger than this multiple of the median step is a gap (missing slices).
GAP_FACTOR = 1.5
#: Positions closer than this along the normal are the same slice.
DUPLICATE_TOL_MM = 0.01
#: Orientation cosines within this of each other are the same plane.
ORIENTATION_TOL = 1e-4
#: Modalities whose objects hold no image of the patient.
NON_IMAGE_MODALITIES = frozenset(
    {"SR", "SEG", "RTSTRUCT", "RTPLAN", "RTRECORD", "PR", "KO", "REG", "DOC", "PLAN", "FID"}
)
#: Notes name at most this many left-out files each.
_NAMED = 3


class SeriesError(LungcadError, ValueError):
    """A series cannot be turned into a trustworthy HU volume; the message says why."""


@dataclass
class CtVolume:
    """A HU volume (int16, (slice, row, column), axial) and where it lies in the patient."""

    hu: np.ndarray
    geometry: VolumeGeometry
    series_uid: str
    study_uid: str
    patient_id: str
    z_positions_mm: np.ndarray
    notes: list[str] = field(default_factory=list)
    #: The DICOM file of each source slice, in stack order (empty for a .mhd volume): what
    #: derived DICOM objects reference.
    source_files: tuple[Path, ...] = ()
    #: The header of each of ``source_files`` (read without its pixel data, in the same
    #: order): what derived DICOM objects copy the patient and study from, without
    #: reading the files again. Left out of the volume's repr, which must not carry the
    #: patient's identity into a log.
    source_headers: tuple[pydicom.Dataset, ...] = field(default=(), repr=False, compare=False)
    #: The source stack's own regular grid, where it differs from ``geometry`` (a stack that
    #: was reordered or resampled); None: the same grid.
    source_geometry: VolumeGeometry | None = None
    #: The slice of ``source_geometry`` each source file lies on, where not one per slice
    #: (filled gaps); empty: file k is slice k.
    source_slices: tuple[int, ...] = ()

    @property
    def source_grid(self) -> tuple[VolumeGeometry, tuple[int, ...]]:
        """The source stack's grid and the slice of it each of ``source_files`` lies on."""
        grid = self.source_geometry or self.geometry
        return grid, self.source_slices or tuple(range(len(self.source_files)))


@dataclass
class _Slice:
    """One file's header, checked: where its plane lies and how to rescale it."""

    path: Path
    header: pydicom.Dataset
    orientation: np.ndarray
    position: np.ndarray
    spacing_rc: np.ndarray
    shape_rc: tuple[int, int]
    slope: float
    intercept: float


def _numbers(ds: pydicom.Dataset, keyword: str, count: int) -> np.ndarray:
    """``count`` finite numbers of a multi-valued tag; ValueError naming it otherwise."""
    try:
        value = ds.get(keyword)
    except Exception as exc:  # pydicom parses a value on access; a hostile one can break it
        raise ValueError(f"{keyword} is unreadable ({type(exc).__name__})") from None
    if value is None or value == "":
        raise ValueError(f"no {keyword}")
    items = list(value) if isinstance(value, (list, tuple, MultiValue)) else [value]
    shown = "\\".join(str(v) for v in items)[:40]
    try:
        numbers = np.asarray([float(v) for v in items], dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        raise ValueError(f"{keyword} '{shown}' is not numbers") from None
    if numbers.size != count or not np.isfinite(numbers).all():
        raise ValueError(f"{keyword} '{shown}' is not {count} finite numbers")
    return numbers


def _check_header(path: Path, ds: pydicom.Dataset) -> _Slice:
    """The slice of a header; ValueError with why it cannot be one of the stack."""
    modality = str(ds.get("Modality", ""))
    if modality in NON_IMAGE_MODALITIES:
        raise ValueError(f"not an image ({modality})")
    image_type = [str(v).upper() for v in (ds.get("ImageType") or [])]
    if "LOCALIZER" in image_type:
        raise ValueError("a localizer (scout) image")
    if "Rows" not in ds or "Columns" not in ds:
        raise ValueError("not an image (no Rows/Columns)")
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise ValueError(f"a multi-frame image ({frames} frames) is not a slice of a stack")
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise ValueError("a colour image")
    orientation = _numbers(ds, "ImageOrientationPatient", 6)
    row, col = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > 1e-3
        or abs(np.linalg.norm(col) - 1) > 1e-3
        or abs(row @ col) > 1e-3
    ):
        raise ValueError("ImageOrientationPatient is not two orthogonal unit vectors")
    spacing_rc = _numbers(ds, "PixelSpacing", 2)
    if (spacing_rc <= 0).any():
        raise ValueError(f"PixelSpacing {list(spacing_rc)} is not positive")
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows < 1 or columns < 1:
        raise ValueError(f"image size {rows} x {columns} is empty")
    try:
        slope = float(ds.RescaleSlope)
        intercept = float(ds.RescaleIntercept)
    except (AttributeError, TypeError, ValueError):
        raise ValueError(
            "missing or unreadable RescaleSlope/RescaleIntercept, so stored values cannot be "
            "converted to HU"
        ) from None
    if not (math.isfinite(slope) and math.isfinite(intercept)) or slope == 0:
        raise ValueError(f"RescaleSlope {slope} / RescaleIntercept {intercept} are unusable")
    return _Slice(
        path,
        ds,
        orientation,
        _numbers(ds, "ImagePositionPatient", 3),
        spacing_rc,
        (rows, columns),
        slope,
        intercept,
    )


def _slice_hu(s: _Slice, pixels: np.ndarray, padding_hu_below: float) -> np.ndarray:
    """HU of one slice: rescale applied, padding (tag value or impossible HU) set to air."""
    slope, intercept = s.slope, s.intercept
    pad_value = s.header.get("PixelPaddingValue")
    if isinstance(pad_value, (list, tuple, MultiValue)):
        pad_value = pad_value[0] if len(pad_value) else None
    if (
        pad_value is not None
        and int(s.header.get("PixelRepresentation", 0) or 0) == 1
        and pad_value > 32767
    ):
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


class _Dropped:
    """Files left out of the stack, by reason, for the volume's notes."""

    def __init__(self) -> None:
        self.by_reason: dict[str, list[Path]] = {}

    def add(self, path: Path, reason: str) -> None:
        self.by_reason.setdefault(reason, []).append(path)

    def __len__(self) -> int:
        return sum(len(v) for v in self.by_reason.values())

    def notes(self) -> list[str]:
        out = []
        for reason, paths in self.by_reason.items():
            names = ", ".join(p.name for p in paths[:_NAMED])
            more = f" and {len(paths) - _NAMED} more" if len(paths) > _NAMED else ""
            out.append(f"left out {len(paths)} file(s) ({names}{more}): {reason}")
        return out

    def first(self) -> str:
        reason, paths = next(iter(self.by_reason.items()))
        return f"{paths[0]}: {reason}"


def _plane_key(s: _Slice) -> tuple:
    return (
        tuple(np.round(s.orientation / ORIENTATION_TOL).astype(int)),
        tuple(np.round(s.spacing_rc, 4)),
        s.shape_rc,
    )


def read_series(
    files: list[Path],
    limits: ReadLimits | None = None,
    padding_hu_below: float = PADDING_HU_BELOW,
) -> CtVolume:
    """Read the files of one series into an axial HU volume (module docstring).

    Args:
        files: every file of the series (any order).
        limits: what the series may cost (``limits.read``; the defaults when None).
        padding_hu_below: HU below which a voxel is treated as padding and set to air.

    Raises:
        SeriesError: no usable slices, several series, not CT, over a read limit, fewer
            than 2 slices, or a gap wider than ``limits.max_gap_slices``.
    """
    limits = limits or ReadLimits()
    if not files:
        raise SeriesError("series has no files")
    where = Path(files[0]).parent
    if len(files) > limits.max_series_files:
        raise SeriesError(
            f"{where}: {len(files)} files in one series, over limits.read.max_series_files = "
            f"{limits.max_series_files}; raise it in params.yaml if the series is genuine"
        )
    dropped = _Dropped()
    slices = _headers(files, dropped)
    if not slices:
        raise SeriesError(f"{where}: no usable image slice (first problem: {dropped.first()})")
    uids = {str(s.header.get("SeriesInstanceUID", "")) for s in slices}
    if len(uids) > 1:
        raise SeriesError(f"{where}: files of {len(uids)} series mixed together")
    first = slices[0]
    modality = str(first.header.get("Modality", ""))
    if modality != "CT":
        raise SeriesError(f"{first.path}: modality is {modality or 'missing'}, not CT")

    # The stack is the largest group of slices in one plane, size and pixel spacing; a
    # scout, a reformat or a stray image in another plane is left out.
    groups: dict[tuple, list[_Slice]] = {}
    for s in slices:
        groups.setdefault(_plane_key(s), []).append(s)
    stack = max(groups.values(), key=len)
    for group in groups.values():
        if group is not stack:
            for s in group:
                dropped.add(s.path, "another plane, image size or pixel spacing than the stack")
    rows, columns = stack[0].shape_rc
    if rows * columns > limits.max_slice_pixels:
        raise SeriesError(
            f"{stack[0].path}: {rows} x {columns} pixels per slice, over "
            f"limits.read.max_slice_pixels = {limits.max_slice_pixels} (not decoded)"
        )
    if len(stack) * rows * columns > limits.max_series_voxels:
        raise SeriesError(
            f"{where}: {len(stack)} slices of {rows} x {columns} voxels, over "
            f"limits.read.max_series_voxels = {limits.max_series_voxels} (not decoded)"
        )

    orientation = stack[0].orientation
    row_dir, col_dir = orientation[:3], orientation[3:]
    normal = np.cross(row_dir, col_dir)
    normal /= np.linalg.norm(normal)
    stack.sort(key=lambda s: (float(s.position @ normal), _instance_number(s.header)))
    notes: list[str] = []
    unique = [stack[0]]
    for s in stack[1:]:
        if abs(float((s.position - unique[-1].position) @ normal)) < DUPLICATE_TOL_MM:
            continue
        unique.append(s)
    if len(unique) < len(stack):
        notes.append(f"dropped {len(stack) - len(unique)} duplicate slice position(s)")

    decoded: list[tuple[_Slice, np.ndarray]] = []
    for s in unique:
        hu = _decode(s, padding_hu_below, dropped)
        if hu is not None:
            decoded.append((s, hu))
    notes = dropped.notes() + notes
    if len(decoded) < 2:
        if not decoded and len(dropped):
            raise SeriesError(f"{where}: no usable image slice (first problem: {dropped.first()})")
        raise SeriesError(
            f"{decoded[0][0].path if decoded else where}: a single slice cannot form a volume "
            "(need at least 2 slices)"
        )
    return _volume(decoded, normal, limits, notes, padding_hu_below)


def _brief(exc: BaseException, width: int = 160) -> str:
    """An exception in a few words: its type and its first clause, on one line."""
    text = " ".join(str(exc).split()).split(" - ")[0]
    text = text if len(text) <= width else text[: width - 1] + "…"
    return f"{type(exc).__name__}: {text}"


def _instance_number(ds: pydicom.Dataset) -> int:
    try:
        return int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError, OverflowError):
        return 0


def _headers(files: list[Path], dropped: _Dropped) -> list[_Slice]:
    slices = []
    for path in files:
        path = Path(path)
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception as exc:  # pydicom raises many types for broken files
            dropped.add(path, f"unreadable DICOM header ({_brief(exc)})")
            continue
        try:
            slices.append(_check_header(path, ds))
        except ValueError as exc:
            dropped.add(path, str(exc))
        except Exception as exc:  # a hostile header can break any tag's parsing
            dropped.add(path, f"unusable header ({_brief(exc)})")
    return slices


def _decode(s: _Slice, padding_hu_below: float, dropped: _Dropped) -> np.ndarray | None:
    """The HU of one slice, or None (noted in ``dropped``) when its pixels cannot be had."""
    try:
        # the pixel module alone: the header was parsed and checked by ``_headers``
        pixels = pixel_array(s.path)
    except Exception as exc:  # pydicom and its decoders raise many types for broken data
        dropped.add(s.path, f"truncated or undecodable pixel data ({_brief(exc)})")
        return None
    if pixels.shape != s.shape_rc:
        dropped.add(s.path, f"decoded image size {pixels.shape} differs from its header")
        return None
    try:
        return _slice_hu(s, pixels, padding_hu_below)
    except (TypeError, ValueError, OverflowError) as exc:
        dropped.add(s.path, f"unusable rescale or padding tags ({_brief(exc)})")
        return None


def _volume(
    decoded: list[tuple[_Slice, np.ndarray]],
    normal: np.ndarray,
    limits: ReadLimits,
    notes: list[str],
    padding_hu_below: float,
) -> CtVolume:
    """The stack with its gaps filled, then on an axial grid."""
    first = decoded[0][0]
    positions = np.array([s.position for s, _ in decoded])
    along = positions @ normal
    steps = np.diff(along)
    step = float(np.median(steps))
    # Slots of the regular stack: each slice's index, counting the missing ones.
    slots = [0]
    for k, gap in enumerate(steps):
        missing = int(round(gap / step)) - 1 if gap > GAP_FACTOR * step else 0
        if missing > limits.max_gap_slices:
            raise SeriesError(
                f"{first.path.parent}: gap in the slices between {along[k]:.2f} and "
                f"{along[k + 1]:.2f} mm ({missing} slices of {step:.2f} mm missing), over "
                f"limits.read.max_gap_slices = {limits.max_gap_slices}"
            )
        if missing:
            notes.append(
                f"{missing} missing slice(s) between {along[k]:.2f} and {along[k + 1]:.2f} mm "
                "along the stack: filled by interpolation between their neighbours"
            )
        slots.append(slots[-1] + missing + 1)
    n = slots[-1] + 1
    rows, columns = first.shape_rc
    hu = np.empty((n, rows, columns), dtype=np.int16)
    for (_, pixels), slot in zip(decoded, slots):
        hu[slot] = pixels
    for a, b in zip(slots[:-1], slots[1:]):
        for k in range(a + 1, b):  # a filled slice: linear between its real neighbours
            t = (k - a) / (b - a)
            hu[k] = np.rint((1 - t) * hu[a] + t * hu[b]).astype(np.int16)

    # The stack's true grid: slice k at origin + k * step_vector (off the normal when the
    # gantry was tilted).
    step_vector = (positions[-1] - positions[0]) / slots[-1]
    spacing_rc = first.spacing_rc
    direction = np.column_stack([first.orientation[:3], first.orientation[3:], normal])
    source = VolumeGeometry(
        origin_mm=positions[0],
        spacing_mm=np.array([spacing_rc[1], spacing_rc[0], step]),
        direction=direction,
        shape=hu.shape,
    )
    z_slots = np.interp(np.arange(n), slots, positions[:, 2])
    header = first.header
    volume = CtVolume(
        hu=hu,
        geometry=source,
        series_uid=str(header.get("SeriesInstanceUID", "")),
        study_uid=str(header.get("StudyInstanceUID", "")),
        patient_id=str(header.get("PatientID", "")),
        z_positions_mm=z_slots,
        notes=notes,
        source_files=tuple(s.path for s, _ in decoded),
        source_headers=tuple(s.header for s, _ in decoded),
        source_slices=tuple(slots) if n != len(decoded) else (),
    )
    shear = step_vector - (step_vector @ normal) * normal
    tilt_mm = float(np.linalg.norm(shear)) * (n - 1)
    if tilt_mm > 0.5 * float(spacing_rc.min()):
        tilt_deg = math.degrees(math.atan2(np.linalg.norm(shear), step_vector @ normal))
        sheared = VolumeGeometry(
            origin_mm=positions[0],
            spacing_mm=np.array([spacing_rc[1], spacing_rc[0], np.linalg.norm(step_vector)]),
            direction=np.column_stack(
                [direction[:, 0], direction[:, 1], step_vector / np.linalg.norm(step_vector)]
            ),
            shape=hu.shape,
        )
        return _resampled(volume, sheared, f"gantry tilt of {tilt_deg:.1f} degrees")
    return _axial(volume)


def _signed_permutation(geometry: VolumeGeometry) -> np.ndarray | None:
    """The signed permutation matrix the grid's direction is, or None (oblique): close
    enough when no voxel moves by half the smallest spacing across the grid."""
    direction = geometry.direction
    rounded = np.rint(direction)
    if np.abs(direction - rounded).max() * geometry.extent_mm.max() > 0.5 * min(
        geometry.spacing_mm
    ):
        return None
    if sorted(np.abs(rounded).sum(axis=0)) != [1, 1, 1] or np.abs(np.linalg.det(rounded)) != 1:
        return None
    return rounded


def _axial(volume: CtVolume) -> CtVolume:
    """``volume`` with its axes in the patient's (x, y, z) order and direction: the slices
    of a sagittal or coronal stack reordered exactly, an oblique stack resampled."""
    geometry = volume.geometry
    permutation = _signed_permutation(geometry)
    if permutation is None:
        return _resampled(volume, geometry, "oblique slices")
    if np.array_equal(permutation, np.eye(3)):
        return volume  # already axial, in patient axis order
    # Column j of the direction is index axis j (column, row, slice) in patient axis i.
    image = geometry.to_sitk(volume.hu)
    image.SetDirection(tuple(float(v) for v in permutation.ravel()))
    oriented = sitk.DICOMOrient(image, "LPS")
    hu = sitk.GetArrayFromImage(oriented)
    new = VolumeGeometry(
        origin_mm=np.array(oriented.GetOrigin()),
        spacing_mm=np.array(oriented.GetSpacing()),
        direction=np.array(oriented.GetDirection()).reshape(3, 3),
        shape=hu.shape,
    )
    plane = {0: "sagittal", 1: "coronal", 2: "axial"}[int(np.argmax(np.abs(permutation[:, 2])))]
    note = f"{plane} slices: reordered into an axial volume"
    return _replaced(volume, hu, new, geometry, note)


def _resampled(volume: CtVolume, true_grid: VolumeGeometry, why: str) -> CtVolume:
    """``volume`` resampled (linear) onto an axial grid covering it, from its true grid
    ``true_grid`` (whose slice axis may lean: a tilted gantry)."""
    grid = volume.geometry
    # The image as SimpleITK can hold it (orthonormal axes), and the affine map that takes
    # each true position to where that voxel sits in it.
    image = grid.to_sitk(volume.hu.astype(np.float32))
    true_matrix = true_grid.direction * true_grid.spacing_mm
    held_matrix = grid.direction * grid.spacing_mm
    to_held = held_matrix @ np.linalg.inv(true_matrix)
    transform = sitk.AffineTransform(3)
    transform.SetCenter(tuple(float(v) for v in grid.origin_mm))
    transform.SetMatrix(tuple(float(v) for v in to_held.ravel()))
    shape_crs = np.array(volume.hu.shape[::-1]) - 1
    corners = np.array([[i, j, k] for i in (0, 1) for j in (0, 1) for k in (0, 1)]) * shape_crs
    corners_mm = true_grid.index_to_mm(corners)
    # Each patient axis gets the spacing of the source axis that runs most along it.
    axis_of = np.argmax(np.abs(true_grid.direction), axis=1)
    spacing = grid.spacing_mm[axis_of]
    lo, hi = corners_mm.min(axis=0), corners_mm.max(axis=0)
    size = np.floor((hi - lo) / spacing + 1e-6).astype(int) + 1
    out = sitk.Resample(
        image,
        [int(v) for v in size],
        transform,
        sitk.sitkLinear,
        tuple(float(v) for v in lo),
        tuple(float(v) for v in spacing),
        tuple(float(v) for v in np.eye(3).ravel()),
        float(AIR_HU),
        sitk.sitkFloat32,
    )
    hu = np.clip(np.rint(sitk.GetArrayFromImage(out)), -32768, 32767).astype(np.int16)
    new = VolumeGeometry(origin_mm=lo, spacing_mm=spacing, direction=np.eye(3), shape=hu.shape)
    note = f"{why}: resampled onto an axial grid of {', '.join(f'{v:.2f}' for v in spacing)} mm"
    return _replaced(volume, hu, new, true_grid, note)


def _replaced(
    volume: CtVolume, hu: np.ndarray, geometry: VolumeGeometry, source: VolumeGeometry, note: str
) -> CtVolume:
    z = geometry.index_to_mm(
        np.c_[np.zeros(hu.shape[0]), np.zeros(hu.shape[0]), np.arange(hu.shape[0])]
    )
    return CtVolume(
        hu=hu,
        geometry=geometry,
        series_uid=volume.series_uid,
        study_uid=volume.study_uid,
        patient_id=volume.patient_id,
        z_positions_mm=z[:, 2],
        notes=[*volume.notes, note],
        source_files=volume.source_files,
        source_headers=volume.source_headers,
        source_geometry=source,
        source_slices=volume.source_slices,
    )
