"""Dense whole-scan detection: one pass of the network's decoder over the lung region.

The scan's lung region (``lung_mask``) is resampled once onto an axis-aligned 1 mm grid (the
training cubes' spacing), ``GRID_MARGIN_MM`` wider than the region and mirrored in z beyond
the scan, windowed, and the network's mask decoder (``NoduleNet.dense_logits``) runs over it
with MONAI's ``sliding_window_inference`` (overlapping patches blended with Gaussian
weights). The probability map that comes back is the detector: each connected part of it at
``PROPOSAL_THRESHOLD`` or above whose peak lies in the lung region is one finding, by
construction one row per lesion (no candidate stage, no merge rules), its voxels at the
mask threshold the finding's mask, from which it is sized and typed. A part holding
several peaks of the centre map (below) is shared out among them (``CENTRE_DYNAMIC``).

A network with the centre head (``model.centre_head``) also maps each voxel's chance of
being a nodule's centre: a part is then where either map reaches the threshold, the
finding lies at the part's peak on the centre map rather than at its mask's centroid
(which a mask leaking along a vessel or into the chest wall pulls off the lesion), and
that peak, trained to be 1 at every nodule's centre whatever its size, can be its
probability (``detect.score: centre``).

The network's heads then read the one cube centred on each finding (a block of the grid,
which is resampled half a cube wider for them), of the size they learnt on
(``LoadedModel.head_cube``: 64 mm, or a profile's training crops): its malignancy and the
readers' attributes (in a cube of ``detect.malignancy_cube`` voxels instead, when set); its
probability is its map peak, its centre peak, the detection
head's on that cube, or a blend of them (``detect.score``). With ``detect.peaks: cube`` the
decoder runs over that cube too, and the finding's map and centre peaks are read from the
cube's maps, where the finding always sits at the centre, rather than from the blended
patches, whose peaks depend on where the patches fall. Why a segmentation map (and a centre
heatmap) rather than anchors: the map gives each finding its mask directly, needs no box
priors for lesions from 3 mm to 9 cm, and is trained with the readers' outlines
(docs/detection.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk
import torch
from scipy import ndimage

from lungcad.config import DetectConfig
from lungcad.core.acquisition import acquisition_notes
from lungcad.core.cubes import mirror_need, mirror_slices, mirrored_geometry, resample_box
from lungcad.core.findings.measure import measure_mask
from lungcad.core.findings.record import FINDING_COLUMNS, attribute_columns, measured
from lungcad.core.io.geometry import VolumeGeometry
from lungcad.core.io.series import AIR_HU, CtVolume
from lungcad.core.lung_mask import LungMasks, lung_mask
from lungcad.core.model.loading import LoadedModel, resolve_amp
from lungcad.core.model.network import window_hu
from lungcad.core.model.predict import MASK_THRESHOLD, combined_probability, predict_hu_cubes
from lungcad.detection.detector import DetectorConfig, ScanDetections
from lungcad.errors import LungcadError

#: The dense scores beside the findings' columns in the candidates table.
DENSE_SCORES = ("map_peak", "centre_peak", "cube_probability")
#: Patches per forward pass of the dense pass: two are 5 % faster than one on 2 CPU cores
#: (the same maps to the last bit; four gain no more) for ~0.15 GB more at the peak.
PATCHES_PER_PASS = 2
#: A finding is a connected part of the map at this probability or above (chosen on the
#: validation split; docs/detection.md).
PROPOSAL_THRESHOLD = 0.3
#: Smaller parts of the map are noise (a 3 mm nodule holds about 14 voxels of 1 mm).
MIN_PART_VOXELS = 8
#: A part of the map holding several lesions (two touching masses) is shared out among the
#: centre map's peaks inside it that stand at least this far above the saddle to any
#: higher peak (h-maxima): the lowest that leaves the validation split's findings as they
#: were without the split (0.05 cut vessels and the mediastinum into findings there).
CENTRE_DYNAMIC = 0.1
#: The dense grid extends this far (mm) around the lung region: every voxel of the region
#: is seen with the body around it, never at the grid's edge (the network's zero padding).
GRID_MARGIN_MM = 16.0


def dense_amp(amp: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype of the dense pass: ``auto`` is bf16 on a CPU with native bf16
    (AVX512-BF16 or AMX: 4-6x faster 3D convolutions, BENCHMARKS.md) and AMP on CUDA, fp32
    elsewhere; ``off`` is fp32."""
    if amp == "auto" and device.type == "cpu":
        native = (
            torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported()
        )
        return torch.bfloat16 if native else None
    return resolve_amp(amp, device)


@dataclass(frozen=True)
class DenseGrid:
    """The 1 mm axis-aligned grid a scan's probability map lives on.

    Attributes:
        origin_mm: (x, y, z) patient mm of voxel (0, 0, 0)'s centre.
        spacing_mm: edge of its cubic voxels.
        hu: int16 (z, y, x) HU resampled onto it (air outside the scan).
        region: bool (z, y, x): the lung region on it.
    """

    origin_mm: np.ndarray
    spacing_mm: float
    hu: np.ndarray
    region: np.ndarray


@dataclass(frozen=True)
class DensePart:
    """One connected part of the probability map: a finding's mask on the grid.

    Attributes:
        mask: bool (z, y, x) within ``box`` of the grid.
        box: (z, y, x) slices of the grid the part covers.
        voxels: bool (z, y, x) within ``box``: the part's voxels (the mask is those of them
            at the mask threshold).
        peak: the mask map's largest probability inside the part.
        centre: the centre map's largest value inside the part (NaN without one).
        centre_at: (z, y, x) within ``box`` of the centre map's peak (None without one).
    """

    mask: np.ndarray
    box: tuple[slice, slice, slice]
    voxels: np.ndarray
    peak: float
    centre: float = float("nan")
    centre_at: tuple[int, int, int] | None = None


def region_grid(
    volume: CtVolume,
    lungs: LungMasks,
    spacing_mm: float,
    margin_mm: float,
    mirror_mm: float | None = None,
) -> DenseGrid:
    """The lung region's bounding box in patient mm, ``margin_mm`` wider, resampled onto a
    ``spacing_mm`` grid (HU linear, region nearest); an empty grid when no lung was found.
    The HU come from the volume mirrored in z by ``mirror_mm`` (default ``margin_mm``)
    beyond each end, as ``mirror_pad_z`` extends it for a cube of twice that, air beyond."""
    blocks = np.argwhere(lungs.region)
    if len(blocks) == 0:
        empty = np.zeros((0, 0, 0))
        return DenseGrid(np.zeros(3), spacing_mm, empty.astype(np.int16), empty.astype(bool))
    step = np.array(lungs.step)
    lo_zyx, hi_zyx = blocks.min(axis=0) * step, (blocks.max(axis=0) + 1) * step - 1
    hi_zyx = np.minimum(hi_zyx, np.array(volume.hu.shape) - 1)
    corners = np.array(
        [
            [x, y, z]
            for z in (lo_zyx[0], hi_zyx[0])
            for y in (lo_zyx[1], hi_zyx[1])
            for x in (lo_zyx[2], hi_zyx[2])
        ],
        float,
    )
    mm = volume.geometry.index_to_mm(corners)
    lo_mm, hi_mm = mm.min(axis=0) - margin_mm, mm.max(axis=0) + margin_mm
    shape_xyz = np.floor((hi_mm - lo_mm) / spacing_mm + 1e-6).astype(int) + 1
    # HU from the volume mirrored in z: a patch at the first or last slice sees anatomy
    # continue, as the training cubes there do (``mirror_pad_z``), not a wall of air.
    hi_mm = lo_mm + (shape_xyz - 1) * spacing_mm
    source = _mirrored_box(volume, lo_mm, hi_mm, margin_mm if mirror_mm is None else mirror_mm)
    hu = resample_box(source, lo_mm, tuple(shape_xyz[::-1]), spacing_mm, AIR_HU)
    # the region's blocks as an image of their own: block (0, 0, 0)'s centre and block size
    geometry = volume.geometry
    block_image = sitk.GetImageFromArray(lungs.region.astype(np.uint8))
    block_image.SetOrigin(tuple(float(v) for v in geometry.index_to_mm((step[::-1] - 1) / 2)))
    block_image.SetSpacing(tuple(float(v) for v in geometry.spacing_mm * step[::-1]))
    block_image.SetDirection(tuple(float(v) for v in geometry.direction.ravel()))
    region = resample_box(block_image, lo_mm, tuple(shape_xyz[::-1]), spacing_mm, 0, nearest=True)
    return DenseGrid(lo_mm, spacing_mm, hu, region.astype(bool))


@torch.inference_mode()
def probability_maps(
    model,
    hu: np.ndarray,
    window: tuple[float, float],
    patch: int,
    overlap: float,
    device: torch.device | str = "cpu",
    amp_dtype: torch.dtype | None = None,
) -> np.ndarray:
    """float32 (channels, z, y, x) maps of every voxel of a HU grid: the nodule mask's
    probability, then (with the centre head) the centre heatmap; the network's decoder over
    overlapping ``patch``³ patches (Gaussian blending)."""
    from monai.inferers import sliding_window_inference

    device = torch.device(device)
    x = window_hu(torch.from_numpy(np.ascontiguousarray(hu))[None, None], window)
    model.eval()
    with torch.autocast(
        device.type, dtype=amp_dtype or torch.float32, enabled=amp_dtype is not None
    ):
        logits = sliding_window_inference(
            x,
            roi_size=(patch,) * 3,
            sw_batch_size=PATCHES_PER_PASS,
            predictor=lambda patch: model.dense_logits(patch).float(),
            overlap=overlap,
            mode="gaussian",
            sw_device=device,
            device=torch.device("cpu"),
        )
    # in place: a second map of the grid's size would be faulted in and zeroed afresh
    return logits[0].sigmoid_().numpy()


def map_parts(
    prob: np.ndarray,
    region: np.ndarray,
    threshold: float = PROPOSAL_THRESHOLD,
    centre: np.ndarray | None = None,
) -> list[DensePart]:
    """The connected parts (26-connected) of the map at ``threshold`` (with a ``centre``
    map: where either map reaches it) whose peak lies in the lung region and that hold at
    least ``MIN_PART_VOXELS`` voxels, best peak first (the centre map's, when given). Each
    part's mask is its voxels at ``MASK_THRESHOLD`` or above, as a cube's mask is (a part
    whose peak is lower: its voxels at half its peak or above)."""
    seeds = prob >= threshold if centre is None else (prob >= threshold) | (centre >= threshold)
    labels, n = ndimage.label(seeds, structure=np.ones((3, 3, 3), bool))
    pieces = []
    for i, box in enumerate(ndimage.find_objects(labels), start=1):
        if box is None:
            continue
        part = labels[box] == i
        if centre is None:
            pieces.append((part, box))
        else:
            pieces.extend((piece, box) for piece in _by_centres(part, prob[box], centre[box]))
    parts = []
    for part, box in pieces:
        if part.sum() < MIN_PART_VOXELS:
            continue
        local = np.where(part, prob[box], -1.0)
        ranked = local if centre is None else np.where(part, centre[box], -1.0)
        peak_at = np.unravel_index(int(np.argmax(ranked)), part.shape)
        if not region[box][peak_at]:
            continue
        peak = float(local.max())
        mask = local >= MASK_THRESHOLD
        if mask.sum() < MIN_PART_VOXELS:
            mask = local >= peak / 2
        centre_peak = float("nan") if centre is None else float(ranked[peak_at])
        at = None if centre is None else tuple(int(v) for v in peak_at)
        parts.append(DensePart(mask, box, part, peak, centre_peak, at))
    return sorted(parts, key=lambda p: -(p.peak if centre is None else p.centre))


def _by_centres(part: np.ndarray, prob: np.ndarray, centre: np.ndarray) -> list[np.ndarray]:
    """A part of the map shared out among the centre map's peaks inside it that stand
    ``CENTRE_DYNAMIC`` above their saddles (each voxel to the peak it floods from, down
    the mask map: a watershed); the part itself when it holds one such peak or none."""
    from skimage.segmentation import watershed

    # in thousandths: a float map's float32 ripples would count as peaks
    dynamic = round(CENTRE_DYNAMIC * 1000)
    if np.round(centre[part].max() * 1000) < dynamic:  # no peak high enough (most parts)
        return [part]
    inside = np.where(part, np.round(centre * 1000), 0).astype(np.uint16)
    peaks, n = centre_peaks(inside, dynamic)
    if n < 2:
        return [part]
    shares = watershed(-prob, peaks, mask=part)
    return [shares == k for k in range(1, n + 1)]


def centre_peaks(image: np.ndarray, dynamic: int) -> tuple[np.ndarray, int]:
    """The h-maxima of an integer ``image`` (``skimage.morphology.h_maxima(image,
    dynamic)``, 26-connected), labelled: the plateaus of its local maxima from which every
    path to a higher voxel dips at least ``dynamic`` below them. Tested plateau by plateau
    (a plateau of height p is one when no voxel above p lies in its component of the
    voxels above p - dynamic), which is ~10x faster than skimage's grey reconstruction
    on the large, sparse parts of a whole scan's map."""
    structure = np.ones((3, 3, 3), bool)
    tops = (image >= dynamic) & (ndimage.maximum_filter(image, size=3) == image)
    plateaus, n = ndimage.label(tops, structure=structure)
    if n < 2:  # none, or the one that is the image's highest
        return plateaus, n
    voxels = np.flatnonzero(tops)
    labels = plateaus.ravel()[voxels]
    order = np.argsort(labels, kind="stable")
    first = voxels[order[np.searchsorted(labels[order], np.arange(1, n + 1))]]
    heights = image.ravel()[first].astype(np.int64)
    keep = np.zeros(n + 1, bool)
    for level in np.unique(heights):
        at = np.flatnonzero(heights == level)
        above = image > level - dynamic
        box = ndimage.find_objects(above.astype(np.uint8))[0]
        parts, _ = ndimage.label(above[box], structure=structure)
        where = np.unravel_index(first[at], image.shape)
        ids = parts[tuple(w - b.start for w, b in zip(where, box))]
        keep[at + 1] = np.asarray(ndimage.maximum(image[box], parts, ids)) == level
    return ndimage.label(keep[plateaus], structure=structure)


def detect_volume_dense(
    volume: CtVolume,
    loaded: LoadedModel,
    detector: DetectorConfig,
    config: DetectConfig,
    device: torch.device | str = "cpu",
):
    """Find the nodules of one HU volume in one dense pass (module docstring); the same
    ``ScanDetections`` as the cube detector, ``candidates`` holding the findings themselves
    (there is no candidate stage)."""
    import pandas as pd

    model, window = loaded.network, loaded.window

    device = torch.device(device)
    seconds: dict[str, float] = {}
    t = time.perf_counter()
    lungs = lung_mask(
        volume.hu, volume.geometry, detector.lung_dilation_mm, detector.lung_closing_mm
    )
    seconds["lung_mask"] = time.perf_counter() - t
    notes = list(acquisition_notes(volume.geometry, lungs))
    attr_columns = attribute_columns(model.output_names)
    columns = [*FINDING_COLUMNS, *attr_columns]
    t = time.perf_counter()
    # One resample serves the dense pass and the heads' cubes: the grid widened by half a
    # cube, so every finding's cube is a slice of it; the dense pass reads the grid inside.
    spacing = detector.spacing_mm
    size = loaded.head_cube
    rating = config.malignancy_cube or size
    pad = int(np.ceil(max(size, rating) / 2))
    mirror = max(GRID_MARGIN_MM, max(size, rating) * spacing / 2)
    wide = region_grid(volume, lungs, spacing, GRID_MARGIN_MM + pad * spacing, mirror)
    inner = tuple(slice(pad, max(pad, n - pad)) for n in wide.hu.shape)
    grid = DenseGrid(wide.origin_mm + pad * spacing, spacing, wide.hu[inner], wide.region[inner])
    seconds["resample"] = time.perf_counter() - t
    if grid.hu.size == 0:
        notes.append("no lung found (no air region inside the body): nothing searched")
        empty = pd.DataFrame(columns=columns)
        return ScanDetections(volume.series_uid, volume.patient_id, empty, empty, seconds, notes)
    t = time.perf_counter()
    amp = dense_amp(config.amp, device)
    maps = probability_maps(model, grid.hu, window, config.patch, config.overlap, device, amp)
    parts = map_parts(maps[0], grid.region, centre=maps[1] if len(maps) > 1 else None)
    if 0 < config.max_findings < len(parts):
        notes.append(
            f"{len(parts) - config.max_findings} of {len(parts)} parts of the map not scored "
            f"(detect.max_findings: the likeliest {config.max_findings} kept)"
        )
        parts = most_likely(parts, config.max_findings, config.score)
    seconds["scoring"] = time.perf_counter() - t
    t = time.perf_counter()
    rows, masks = [], {}
    for part in parts:
        lo = np.array([s.start for s in part.box])  # (z, y, x) on the grid
        origin = grid.origin_mm + lo[::-1] * grid.spacing_mm
        hu = grid.hu[part.box]
        measures = measure_mask(part.mask, origin, grid.spacing_mm, hu)
        masks[len(rows)] = (part.mask, origin, grid.spacing_mm)
        at = measures.centroid_mm
        if part.centre_at is not None:
            at = origin + np.array(part.centre_at[::-1], float) * grid.spacing_mm
        rows.append(
            {
                "coordX": at[0],
                "coordY": at[1],
                "coordZ": at[2],
                "probability": part.peak,
                "map_peak": part.peak,
                "centre_peak": part.centre,
                "sizing": "mask",
                "cubes": 1,
                "candidate_score": np.nan,
                "_measures": measures,
            }
        )
    if rows:
        centres = np.array([[r["coordX"], r["coordY"], r["coordZ"]] for r in rows])
        # The heads in the dense pass's precision: bf16 on a CPU with native bf16 (1.7 ms a
        # cube against 2.7 ms in fp32; on the validation split a finding's probability
        # moves by at most 0.0014 and its malignancy by 0.017 from fp32, BENCHMARKS.md).
        if config.peaks == "cube":
            cubes = np.stack([grid_cube(wide, c, size) for c in centres])
            starts = np.stack([cube_start(wide, c, size) for c in centres]) - pad
            cube_p, mal, attrs = _cube_peaks(
                loaded, cubes, starts, rows, parts, detector.batch_size, device, amp
            )
        else:
            cube_p, mal, attrs = _heads(
                loaded, wide, centres, size, detector.batch_size, device, amp
            )
        if rating != size:
            _, mal, attrs = _heads(loaded, wide, centres, rating, detector.batch_size, device, amp)
        for i, row in enumerate(rows):
            row["malignancy"] = float(np.clip(mal[i], 1.0, 5.0))
            row["cube_probability"] = float(cube_p[i])
            row["probability"] = _score(row, config.score)
            for j, column in enumerate(attr_columns):
                row[column] = float(attrs[i, j])
            row.update(measured(row.pop("_measures"), row.get("attr_texture")))
    seconds["heads"] = time.perf_counter() - t
    scored = pd.DataFrame(rows, columns=[*columns, *DENSE_SCORES])
    order = np.argsort(-scored["probability"].to_numpy(float), kind="stable")
    scored = scored.iloc[order].reset_index(drop=True)
    masks = {new: masks[int(old)] for new, old in enumerate(order)}
    return ScanDetections(
        volume.series_uid, volume.patient_id, scored, scored[columns], seconds, notes, masks
    )


def _cube_peaks(
    loaded: LoadedModel,
    cubes: np.ndarray,
    starts: np.ndarray,
    rows: list[dict],
    parts: list[DensePart],
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heads' readings of the findings' cubes (``predict_hu_cubes``), each row's
    ``map_peak`` and ``centre_peak`` read again from the decoder's maps of its cube: the
    largest values over its part's voxels inside the cube, the voxels the blended maps'
    peaks are read over (``starts``: the cubes' first voxels on the grid; a part with no
    voxel inside its cube keeps the blended maps' peaks). A batch's maps are read and
    dropped before the next (a scan's 500 findings' maps would hold 0.5 GB)."""
    readings = []
    for first in range(0, len(cubes), batch_size):
        chunk = slice(first, first + batch_size)
        *heads, maps = predict_hu_cubes(
            loaded.network,
            cubes[chunk],
            loaded.window,
            device,
            batch_size,
            amp,
            named_outputs=True,
            maps=True,
            head_only=True,
        )
        readings.append(heads)
        for i, (row, part) in enumerate(zip(rows[chunk], parts[chunk])):
            at = np.argwhere(part.voxels) + [b.start for b in part.box] - starts[first + i]
            at = tuple(at[((at >= 0) & (at < maps.shape[-1])).all(axis=1)].T)
            if len(at[0]):
                row["map_peak"] = float(maps[i, 0][at].max())
                if len(maps[i]) > 1:
                    row["centre_peak"] = float(maps[i, 1][at].max())
    return tuple(np.concatenate(r) for r in zip(*readings))


def _heads(
    loaded: LoadedModel,
    grid: DenseGrid,
    centres: np.ndarray,
    size: int,
    batch_size: int,
    device: torch.device,
    amp: torch.dtype | None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heads' detection probability, malignancy and attributes (``predict_hu_cubes``)
    of the ``size``³ cubes of the grid centred on ``centres`` (patient mm), a batch of
    cubes cut at a time."""
    readings = []
    for first in range(0, len(centres), batch_size):
        cubes = np.stack([grid_cube(grid, c, size) for c in centres[first : first + batch_size]])
        readings.append(
            predict_hu_cubes(
                loaded.network,
                cubes,
                loaded.window,
                device,
                batch_size,
                amp,
                named_outputs=True,
                head_only=True,
            )
        )
    return tuple(np.concatenate(r) for r in zip(*readings))


def grid_cube(grid: DenseGrid, centre_mm: np.ndarray, size: int) -> np.ndarray:
    """The ``size``³ block of the grid's HU whose centre lies nearest ``centre_mm`` (within
    half a voxel on each axis): a finding's cube for the heads, cut rather than resampled.
    The block is moved inside the grid where the centre lies within half a cube of its edge
    (the detector's grid is half a cube wider than any finding's centre can lie)."""
    start = cube_start(grid, centre_mm, size)
    return grid.hu[tuple(slice(a, a + size) for a in start)]


def cube_start(grid: DenseGrid, centre_mm: np.ndarray, size: int) -> np.ndarray:
    """(z, y, x) first voxel of ``grid_cube``'s block."""
    start_xyz = np.round((centre_mm - grid.origin_mm) / grid.spacing_mm - (size - 1) / 2)
    return np.clip(start_xyz[::-1].astype(int), 0, np.array(grid.hu.shape) - size)


def _mirrored_box(
    volume: CtVolume, lo_mm: np.ndarray, hi_mm: np.ndarray, mirror_mm: float
) -> sitk.Image:
    """The voxels of the volume mirrored in z by ``mirror_mm`` beyond each end
    (``mirror_pad_z``) that a grid from ``lo_mm`` to ``hi_mm`` reads, as an image in patient
    mm: the same values at the grid's points as the whole mirrored volume (two voxels to
    spare around them, where a linear interpolation reads one), for a copy of the box, not
    of the scan (a 465-slice scan is 0.24 GB a copy)."""
    geometry = volume.geometry
    index, grown = mirror_slices(volume.hu.shape[0], mirror_need(geometry, 2 * mirror_mm))
    padded = mirrored_geometry(geometry, grown, len(index))
    least, greatest = padded.index_range(lo_mm, hi_mm)  # (column, row, slice)
    first = np.maximum(np.floor(least).astype(int) - 2, 0)
    last = np.minimum(np.ceil(greatest).astype(int) + 2, np.array(padded.shape[::-1]) - 1)
    if (last < first).any():  # the grid lies outside the scan: air wherever it reads
        first = last = np.zeros(3, dtype=int)
    rows, cols = slice(first[1], last[1] + 1), slice(first[0], last[0] + 1)
    hu = volume.hu[:, rows, cols][index[first[2] : last[2] + 1]]
    box = VolumeGeometry(
        padded.index_to_mm(first.astype(float)), geometry.spacing_mm, geometry.direction, hu.shape
    )
    return box.to_sitk(hu)


def most_likely(parts: list[DensePart], n: int, score: str) -> list[DensePart]:
    """The ``n`` parts whose blended peaks could score highest by ``score`` (the cube's
    detection probability taken at its largest, 1; ties by the map peak), in their order."""

    def ceiling(part: DensePart) -> tuple[float, float]:
        row = {"map_peak": part.peak, "centre_peak": part.centre, "cube_probability": 1.0}
        best = _score(row, score)
        return (part.peak if np.isnan(best) else best), part.peak

    keep = sorted(range(len(parts)), key=lambda i: ceiling(parts[i]), reverse=True)[:n]
    return [parts[i] for i in sorted(keep)]


def _score(row: dict, how: str) -> float:
    """A finding's probability from its map peak, centre peak or cube's detection
    probability (``detect.score``); ``combined``: ``combined_probability`` of the three."""
    if how == "peak":
        return row["map_peak"]
    if how == "centre":
        return row["centre_peak"]
    if how == "cube":
        return row["cube_probability"]
    if how == "combined":
        return combined_probability(row["centre_peak"], row["map_peak"], row["cube_probability"])
    return float(np.sqrt(row["map_peak"] * row["cube_probability"]))


class DenseModelError(LungcadError, ValueError):
    """A model that cannot run the dense detector as the settings ask."""


def check_dense_model(network, config: DetectConfig, source: str = "this model") -> None:
    """Raise a one-line ``DenseModelError`` when a network cannot run the dense detector as
    ``config`` asks: no decoder, or ``score: centre`` without the centre head; ``source``
    names the model (its checkpoint) in the message."""
    if not network.segments:
        raise DenseModelError(
            f"detect.detector: dense needs a model with a segmentation decoder; {source} has "
            "none: use detect.detector: cubes, or a model trained with model.segmentation: true"
        )
    if config.score in ("centre", "combined") and not network.centres:
        raise DenseModelError(
            f"detect.score: {config.score} needs a model with the centre head; {source} has "
            "none: use detect.score: peak, or a model trained with model.centre_head: true"
        )
