"""Cluster the reader annotations of a scan into physical nodules with a consensus mask.

LIDC has up to four readers per scan and no shared nodule identity between them, so the
annotations that outline the same lesion are grouped here: two annotations belong to the
same nodule when their filled outlines share voxels. The database does not record which
reader made which annotation, so "one annotation per reader per nodule" is enforced as a
group size of at most ``max_readers``: an oversized group is split by raising the required
overlap (IoU) until every group fits, the same constraint pylidc applies.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from matplotlib.path import Path
from scipy.sparse.csgraph import connected_components

from lungcad.core.annotations.lidc_db import CHARACTERISTICS, ReaderAnnotation, ScanRecord
from lungcad.core.io.series import CtVolume

#: Fraction of a nodule's readers that must include a voxel for it to be in the consensus.
CONSENSUS_LEVEL = 0.5


@dataclass(frozen=True)
class AnnotationMask:
    """A filled reader annotation on the scan's slice grid: mask[k, r, c] at offset."""

    annotation: ReaderAnnotation
    offset: tuple[int, int, int]  # (slice index, row, col) of mask[0, 0, 0]
    mask: np.ndarray

    @property
    def n_voxels(self) -> int:
        return int(self.mask.sum())


@dataclass(frozen=True)
class Nodule:
    """One physical nodule: the consensus of the reader annotations that outline it.

    Attributes:
        nodule_id: stable id ``<patient_id>:<scan_id>:<k>``, k ordered by z, row, col.
        centroid_crz: consensus centroid as (column, row, z_mm); columns/rows are pixel
            indices of the scan, z_mm the patient z of the slice grid (continuous).
        consensus_offset, consensus_mask: voxels included by >= 50% of its readers, as a
            boolean array over (slice index, row, col) of the database slice grid.
    """

    nodule_id: str
    annotation_ids: tuple[int, ...]
    n_readers: int
    centroid_crz: tuple[float, float, float]
    diameter_mm: float
    volume_mm3: float
    malignancy_mean: float
    malignancy_median: float
    malignancy_std: float
    characteristics_mean: dict[str, float]
    consensus_offset: tuple[int, int, int]
    consensus_mask: np.ndarray
    z_extent_mm: tuple[float, float]


def slice_index(z_positions_mm: np.ndarray, z_mm: float) -> int:
    """Index of the slice whose z is nearest to ``z_mm``."""
    return int(np.argmin(np.abs(z_positions_mm - z_mm)))


def _inside(contour_rc: np.ndarray, grid_rc: np.ndarray) -> np.ndarray:
    """Which (row, column) pixel centres of ``grid_rc`` lie inside a closed outline
    (matplotlib's point-in-path test, as pylidc)."""
    if (contour_rc[0] != contour_rc[-1]).any():
        contour_rc = np.vstack([contour_rc, contour_rc[:1]])
    return Path(contour_rc, closed=True).contains_points(grid_rc)


def annotation_mask(ann: ReaderAnnotation, scan: ScanRecord) -> AnnotationMask:
    """A reader's nodule as pylidc's ``Annotation.boolean_mask()`` defines it: the pixels
    whose centres lie inside an inclusion outline, less the outline's own points (LIDC's
    readers drew the outline just outside the nodule), less what exclusion outlines (holes)
    enclose and their points."""
    ks = [slice_index(scan.z_positions_mm, c.z_mm) for c in ann.contours]
    pts = np.concatenate([c.cols_rows for c in ann.contours])
    c0, r0 = pts.min(axis=0)
    c1, r1 = pts.max(axis=0)
    k0, k1 = min(ks), max(ks)
    mask = np.zeros((k1 - k0 + 1, r1 - r0 + 1, c1 - c0 + 1), dtype=bool)
    rows, cols = np.indices(mask.shape[1:])
    grid = np.c_[rows.ravel(), cols.ravel()]
    # Inclusion outlines first, then exclusion (hole) outlines, as pylidc does.
    for contour, k in sorted(zip(ann.contours, ks), key=lambda ck: not ck[0].inclusion):
        outline = np.c_[contour.cols_rows[:, 1] - r0, contour.cols_rows[:, 0] - c0]
        inside = _inside(outline, grid).reshape(mask.shape[1:])
        plane = mask[k - k0]
        if contour.inclusion:
            plane |= inside
        else:
            plane &= ~inside
        plane[outline[:, 0], outline[:, 1]] = False
    return AnnotationMask(ann, (k0, int(r0), int(c0)), mask)


def _overlap(a: AnnotationMask, b: AnnotationMask) -> tuple[int, int]:
    """(intersection, union) voxel counts of two annotation masks."""
    lo = np.maximum(a.offset, b.offset)
    hi = np.minimum(np.add(a.offset, a.mask.shape), np.add(b.offset, b.mask.shape))
    union = a.n_voxels + b.n_voxels
    if np.any(hi <= lo):
        return 0, union
    sa = tuple(slice(lo[i] - a.offset[i], hi[i] - a.offset[i]) for i in range(3))
    sb = tuple(slice(lo[i] - b.offset[i], hi[i] - b.offset[i]) for i in range(3))
    inter = int(np.logical_and(a.mask[sa], b.mask[sb]).sum())
    return inter, union - inter


def cluster_masks(masks: list[AnnotationMask], max_readers: int = 4) -> list[list[int]]:
    """Group annotation masks that outline the same lesion; no group exceeds max_readers."""
    n = len(masks)
    if n == 0:
        return []
    iou = np.zeros((n, n))
    for i in range(n):
        for j in range(i + 1, n):
            inter, union = _overlap(masks[i], masks[j])
            iou[i, j] = iou[j, i] = inter / union if union else 0.0
    groups: list[list[int]] = []
    pending = [list(range(n))]
    while pending:
        members = pending.pop()
        sub = iou[np.ix_(members, members)]
        # Outlines that share no voxel are different lesions, however few they are.
        n_comp, labels = connected_components(sub > 0.0, directed=False)
        if n_comp == 1 and len(members) <= max_readers:
            groups.append(members)
            continue
        if n_comp == 1:
            # Raise the overlap needed to stay linked until the oversized group splits.
            for threshold in np.linspace(0.05, 0.95, 19):
                n_comp, labels = connected_components(sub > threshold, directed=False)
                if n_comp > 1:
                    break
            else:  # identical outlines cannot be told apart: split in database order
                labels = np.arange(len(members)) // max_readers
        pending.extend(
            [members[i] for i in np.flatnonzero(labels == lab)] for lab in np.unique(labels)
        )
    return groups


def max_inplane_diameter_mm(ann: ReaderAnnotation, pixel_spacing_mm: float) -> float:
    """A reader's diameter as pylidc's ``Annotation.diameter`` defines it: the greatest
    distance between two points of one outline, in mm (0 for outlines of single points)."""
    best = 0.0
    for c in ann.contours:
        if len(c.cols_rows) < 2:
            continue
        p = c.cols_rows.astype(np.float64)
        best = max(best, float(np.sqrt(((p[:, None, :] - p[None, :, :]) ** 2).sum(-1)).max()))
    return best * pixel_spacing_mm


def reader_count(group: list[AnnotationMask]) -> tuple[tuple[int, int, int], np.ndarray]:
    """Reader-count map of a group over its joint bounding box."""
    lo = np.min([m.offset for m in group], axis=0)
    hi = np.max([np.add(m.offset, m.mask.shape) for m in group], axis=0)
    count = np.zeros(tuple(hi - lo), dtype=np.int16)
    for m in group:
        s = tuple(
            slice(m.offset[i] - lo[i], m.offset[i] - lo[i] + m.mask.shape[i]) for i in range(3)
        )
        count[s] += m.mask
    return tuple(int(v) for v in lo), count


def cluster_nodules(
    scan: ScanRecord, annotations: list[ReaderAnnotation], max_readers: int = 4
) -> list[Nodule]:
    """Cluster a scan's reader annotations into consensus nodules (all sizes, all readers).

    Args:
        scan: the scan's database record (its slice z grid defines the voxel grid).
        annotations: ``LidcDatabase.annotations(scan.scan_id)``.
        max_readers: most annotations one nodule may have (LIDC had four readers).

    Returns:
        Nodules ordered by centroid (z, row, column); filtering by reader count is the
        caller's choice (see ``PreprocessConfig.min_readers``).
    """
    masks = [annotation_mask(a, scan) for a in annotations if a.contours]
    z = scan.z_positions_mm
    slice_gap_mm = float(np.median(np.diff(z))) if z.size > 1 else scan.slice_thickness_mm
    built = []
    for group_idx in cluster_masks(masks, max_readers):
        group = [masks[i] for i in group_idx]
        offset, count = reader_count(group)
        consensus = count >= np.ceil(CONSENSUS_LEVEL * len(group))
        if not consensus.any():  # readers disagree everywhere: fall back to the union
            consensus = count > 0
        k, r, c = np.nonzero(consensus)
        k_mean = k.mean() + offset[0]
        z_mm = float(np.interp(k_mean, np.arange(z.size), z))
        ratings = np.array([[m.annotation.ratings[c_] for c_ in CHARACTERISTICS] for m in group])
        mal = ratings[:, CHARACTERISTICS.index("malignancy")].astype(float)
        ann_z = [ct.z_mm for m in group for ct in m.annotation.contours]
        built.append(
            dict(
                annotation_ids=tuple(m.annotation.annotation_id for m in group),
                n_readers=len(group),
                centroid_crz=(float(c.mean() + offset[2]), float(r.mean() + offset[1]), z_mm),
                diameter_mm=float(
                    np.mean(
                        [
                            max_inplane_diameter_mm(m.annotation, scan.pixel_spacing_mm)
                            for m in group
                        ]
                    )
                ),
                volume_mm3=float(consensus.sum() * scan.pixel_spacing_mm**2 * slice_gap_mm),
                malignancy_mean=float(mal.mean()),
                malignancy_median=float(np.median(mal)),
                malignancy_std=float(mal.std()),  # the readers' spread (ddof 0)
                characteristics_mean={
                    name: float(ratings[:, i].mean()) for i, name in enumerate(CHARACTERISTICS)
                },
                consensus_offset=offset,
                consensus_mask=consensus,
                z_extent_mm=(float(min(ann_z)), float(max(ann_z))),
            )
        )
    built.sort(key=lambda d: (d["centroid_crz"][2], d["centroid_crz"][1], d["centroid_crz"][0]))
    return [
        Nodule(nodule_id=f"{scan.patient_id}:{scan.scan_id}:{i}", **d) for i, d in enumerate(built)
    ]


def nodule_center_mm(nodule: Nodule, volume: CtVolume) -> np.ndarray | None:
    """Patient-mm centroid of a DB nodule in this volume, or None if outside its slices.

    The DB centroid is (column, row, z): the slice coordinate becomes a continuous slice
    index of *this* series by interpolating its slice positions, so partial series and
    series whose slices differ from the DB grid are handled.
    """
    col, row, z_mm = nodule.centroid_crz
    z = volume.z_positions_mm
    order = np.argsort(z)
    half_step = volume.geometry.spacing_mm[2] / 2
    if not z[order[0]] - half_step <= z_mm <= z[order[-1]] + half_step:
        return None
    k = float(np.interp(z_mm, z[order], order.astype(float)))
    return volume.geometry.index_to_mm(np.array([col, row, k]))
