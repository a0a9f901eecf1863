"""One finding per nodule: each scored cube's predicted mask, placed in patient mm, tells
which cubes lie on the same nodule.

A cube's mask is reduced to the connected part nearest the cube's centre (the nodule the
cube was cut for: the network is trained to outline the nodule within its radius plus a few
mm of the centre, not others in the cube) and put on a global 1 mm grid in patient mm
(voxel keys ``floor(mm / spacing)``: the grid cell a voxel's centre falls in), so masks of
differently centred cubes can be compared.
Findings are taken best first; one joins an earlier nodule when its mask and the mask of
that nodule's best finding share at least ``MERGE_SHARE`` of the smaller one, or when its
centre lies inside that mask. A nodule's mask is the majority of its best ``FUSED_MEMBERS``
members' masks where their cubes cover it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from lungcad.core.cubes import cube_grid_origin

#: Two masks are one nodule when they share this much of the smaller one.
MERGE_SHARE = 0.1
#: A cube's mask part counts only when it comes this close (mm) to the cube's centre.
NEAR_CENTRE_MM = 5.0
#: A mask part larger than a sphere of this diameter is not a nodule's outline (LIDC
#: nodules are at most 30 mm; an untrained or confused decoder outlines whole regions):
#: its finding is left unsized, and merging stays cheap.
MAX_NODULE_DIAMETER_MM = 45.0
#: A nodule's mask is fused from at most this many of its best findings' masks.
FUSED_MEMBERS = 8
_BIAS = 1 << 20  # keys are offset to be non-negative before packing into one int64


def _pack(keys_zyx: np.ndarray) -> np.ndarray:
    k = np.asarray(keys_zyx, dtype=np.int64) + _BIAS
    return (k[:, 0] << 42) | (k[:, 1] << 21) | k[:, 2]


def _unpack(packed: np.ndarray) -> np.ndarray:
    mask = (1 << 21) - 1
    return np.stack([packed >> 42, (packed >> 21) & mask, packed & mask], axis=1) - _BIAS


@dataclass(frozen=True)
class FindingMask:
    """One cube's nodule mask on the global grid.

    Attributes:
        keys: sorted packed voxel keys of the mask (see module docstring).
        hu: HU of those voxels (from the cube).
        centre_key: (z, y, x) key of the cube's centre.
        half_voxels: half the cube's side, voxels (what the cube covers).
        spacing_mm: the grid's voxel size.
    """

    keys: np.ndarray
    hu: np.ndarray
    centre_key: np.ndarray
    half_voxels: int
    spacing_mm: float

    def __len__(self) -> int:
        return len(self.keys)

    def covers(self, keys: np.ndarray) -> np.ndarray:
        """Whether each packed key lies inside this mask's cube."""
        return (np.abs(_unpack(keys) - self.centre_key) <= self.half_voxels).all(axis=1)


def key_of(point_mm: np.ndarray, spacing_mm: float) -> np.ndarray:
    """(z, y, x) grid key of an (x, y, z) patient-mm point."""
    return np.floor(np.asarray(point_mm, float)[::-1] / spacing_mm).astype(np.int64)


def nodule_part(mask_zyx: np.ndarray, spacing_mm: float) -> np.ndarray:
    """The connected part of a cube's mask nearest the cube's centre (bool, the cube's
    shape); empty when none comes within ``NEAR_CENTRE_MM`` of it."""
    labels, n = ndimage.label(mask_zyx)
    if n == 0:
        return np.zeros(mask_zyx.shape, bool)
    idx = np.argwhere(labels > 0)
    mid = (np.array(mask_zyx.shape) - 1) / 2
    dist = np.sqrt(((idx - mid) ** 2).sum(axis=1)) * spacing_mm
    nearest = int(np.argmin(dist))
    if dist[nearest] > NEAR_CENTRE_MM:
        return np.zeros(mask_zyx.shape, bool)
    part = labels == labels[tuple(idx[nearest])]
    largest = np.pi / 6 * (MAX_NODULE_DIAMETER_MM / spacing_mm) ** 3
    return part if part.sum() <= largest else np.zeros(mask_zyx.shape, bool)


def cube_finding_mask(
    mask_zyx: np.ndarray, hu_zyx: np.ndarray, center_mm: np.ndarray, spacing_mm: float
) -> FindingMask:
    """The nodule part of a cube's predicted mask on the global grid (empty when no part of
    the mask comes within ``NEAR_CENTRE_MM`` of the cube's centre)."""
    size = mask_zyx.shape[0]
    origin = cube_grid_origin(center_mm, size, spacing_mm)  # (x, y, z) of voxel (0, 0, 0)
    centre_key = key_of(center_mm, spacing_mm)
    empty = FindingMask(
        np.zeros(0, np.int64), np.zeros(0, np.int16), centre_key, size // 2, spacing_mm
    )
    labels, n = ndimage.label(mask_zyx)
    if n == 0:
        return empty
    idx = np.argwhere(labels > 0)
    mid = (size - 1) / 2
    dist = np.sqrt(((idx - mid) ** 2).sum(axis=1)) * spacing_mm
    nearest = int(np.argmin(dist))
    if dist[nearest] > NEAR_CENTRE_MM:
        return empty
    part = idx[labels[tuple(idx.T)] == labels[tuple(idx[nearest])]]
    mm_zyx = np.asarray(origin, float)[::-1] + part * spacing_mm
    keys = _pack(np.floor(mm_zyx / spacing_mm).astype(np.int64))
    order = np.argsort(keys)
    hu = np.asarray(hu_zyx)[tuple(part.T)]
    keys, first = np.unique(keys[order], return_index=True)
    return FindingMask(keys, hu[order][first], centre_key, size // 2, spacing_mm)


def group_findings(
    masks: list[FindingMask], centres_mm: np.ndarray, scores: np.ndarray
) -> list[list[int]]:
    """Indices of the findings that are one nodule, per nodule, best score first (the
    first index of each group is its best finding)."""
    order = np.argsort(-np.asarray(scores, float), kind="stable")
    groups: list[list[int]] = []
    heads: list[FindingMask] = []  # each nodule's best finding's mask
    boxes: list[np.ndarray] = []  # (2, 3) lowest and highest (z, y, x) key of each head
    for i in order:
        m = masks[i]
        own = key_of(centres_mm[i], m.spacing_mm)
        own_centre = _pack(own[None])
        zyx = _unpack(m.keys) if len(m) else own[None]
        box = np.stack([zyx.min(axis=0), zyx.max(axis=0)])
        target = -1
        for g, head in enumerate(heads):
            if not len(head) or (box[0] > boxes[g][1]).any() or (box[1] < boxes[g][0]).any():
                continue  # no mask, or apart: no voxel, nor the centre, can be shared
            if len(m):
                shared = np.isin(m.keys, head.keys, assume_unique=True).sum()
                if shared >= MERGE_SHARE * min(len(m), len(head)):
                    target = g
                    break
            if np.isin(own_centre, head.keys).any():
                target = g
                break
        if target < 0:
            groups.append([int(i)])
            heads.append(m)
            boxes.append(box)
        else:
            groups[target].append(int(i))
    return groups


def fuse_masks(members: list[FindingMask]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A nodule's mask from its members': each voxel kept where at least half of the
    members whose cubes cover it hold it (the first ``FUSED_MEMBERS`` with a mask: the
    best, as ``group_findings`` lists them). Returns (bool mask (z, y, x), origin (x, y, z)
    patient mm of its voxel (0, 0, 0), HU under it); an empty (0, 0, 0) mask without any,
    or when no voxel has the votes (members that outline disjoint parts)."""
    members = [m for m in members if len(m)][:FUSED_MEMBERS]
    if not members:
        return np.zeros((0, 0, 0), bool), np.zeros(3), np.zeros((0, 0, 0), np.int16)
    keys = np.unique(np.concatenate([m.keys for m in members]))
    votes = np.zeros(len(keys), int)
    cover = np.zeros(len(keys), int)
    hu = np.full(len(keys), -1000, np.int16)
    for m in reversed(members):  # the best member's HU last, so it wins
        held = np.isin(keys, m.keys, assume_unique=True)
        votes += held
        cover += m.covers(keys)
        hu[held] = m.hu[np.searchsorted(m.keys, keys[held])]
    keep = votes * 2 >= np.maximum(cover, 1)
    if not keep.any():
        return np.zeros((0, 0, 0), bool), np.zeros(3), np.zeros((0, 0, 0), np.int16)
    zyx = _unpack(keys[keep])
    lo = zyx.min(axis=0)
    shape = tuple(zyx.max(axis=0) - lo + 1)
    mask = np.zeros(shape, bool)
    hu_box = np.full(shape, -1000, np.int16)
    mask[tuple((zyx - lo).T)] = True
    hu_box[tuple((zyx - lo).T)] = hu[keep]
    spacing = members[0].spacing_mm
    return mask, ((lo + 0.5) * spacing)[::-1].astype(float), hu_box
