"""Batched windowing and augmentation of training cubes as torch ops, on whatever device
holds the batch.

The random draws of a whole epoch are made up front on the CPU from one generator seeded
with (seed, epoch), so the same cube gets the same augmentation on the CPU and on a GPU,
at any batch size, and a resumed run draws exactly what an uninterrupted one drew.
Crop (or shift), flips and the axial 90-degree rotation are folded into one gather per
batch, applied alike to a cube and to its nodule mask.

With ``crop_size`` the network sees a random ``crop_size``³ part of each cube (without it,
the whole cube, shifted by up to ``shift_mm`` with air padding). A share ``offcentre_share``
of the nodule cubes are moved so that the network's centre lands anywhere within the
nodule's radius plus ``offcentre_margin_mm`` of the nodule, as far as the cube (or the
padding) allows: a candidate beside a nodule is still a nodule to the network. The other
nodule cubes move by up to ``centred_shift_mm`` along each axis, and every other cube by up
to ``negative_shift_mm`` (or ``shift_mm``).

The distributions are those of a per-sample MONAI chain
(``BorderPad`` + ``RandSpatialCrop``, ``RandFlip`` per axis with p 0.5, ``RandRotate90``
with p 0.75 and k in 1..3 on the axial axes, ``RandShiftIntensity`` with p 0.8).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from lungcad.config import AugmentConfig


@dataclass(frozen=True)
class AugmentDraws:
    """What the augmentation does to each of N cubes.

    Attributes:
        start: (N, 3) int64 crop start per axis (z, y, x) in the air-padded cube; the
            content moves by ``shift_mm - start`` voxels (and the crop's centre sits
            ``start + crop / 2 - shift_mm`` voxels into the cube).
        flip: (N, 3) bool, flip along z, y, x (applied after the shift).
        rot90: (N,) int64 in 0..3, quarter turns in the axial (y, x) plane, as
            ``torch.rot90(cube, k, dims=(y, x))`` (applied after the flips).
        offset: (N,) float32 added to the windowed cube (HU jitter / window width).
        shift_mm: the padding on each side (voxels are 1 mm).
        crop: voxels per side of the output (0: the input's size).
    """

    start: torch.Tensor
    flip: torch.Tensor
    rot90: torch.Tensor
    offset: torch.Tensor
    shift_mm: int
    crop: int = 0

    def __len__(self) -> int:
        return len(self.rot90)

    def take(self, positions: slice | torch.Tensor) -> AugmentDraws:
        return AugmentDraws(
            self.start[positions],
            self.flip[positions],
            self.rot90[positions],
            self.offset[positions],
            self.shift_mm,
            self.crop,
        )

    def to(self, device: torch.device | str) -> AugmentDraws:
        return AugmentDraws(
            self.start.to(device),
            self.flip.to(device),
            self.rot90.to(device),
            self.offset.to(device),
            self.shift_mm,
            self.crop,
        )


def crop_size(config: AugmentConfig, cube_size: int) -> int:
    """Voxels per side the network trains on: ``config.crop_size``, or the whole cube when
    that is 0 or not smaller than the cube."""
    return config.crop_size if 0 < config.crop_size < cube_size else cube_size


def draw_augmentation(
    n: int,
    config: AugmentConfig,
    window: tuple[float, float],
    generator: torch.Generator,
    cube_size: int | None = None,
    radius_mm: torch.Tensor | None = None,
) -> AugmentDraws:
    """Draw the augmentation of ``n`` cubes (always the same number of draws, so the
    generator's stream does not depend on which augmentations are switched on).

    Args:
        cube_size: voxels per side of the cubes (needed for a crop; without it the cubes
            are not cropped).
        radius_mm: (n,) each nodule cube's nodule radius, NaN for the other cubes: a
            share ``offcentre_share`` of the nodules' crop centres land in a ball of
            radius + ``offcentre_margin_mm``.
    """
    shift = max(int(config.shift_mm), 0)
    crop = crop_size(config, cube_size) if cube_size else 0
    room = 2 * shift + (cube_size - crop if cube_size else 0)  # start in [0, room]
    reach = min(room // 2, int(config.negative_shift_mm)) if crop else room // 2
    other = _starts_within(reach, room, n, generator)
    direction = torch.randn((n, 3), generator=generator)
    radial = torch.rand(n, generator=generator) ** (1 / 3)  # uniform in the ball
    moved = torch.rand(n, generator=generator) < config.offcentre_share
    flip = torch.rand((n, 3), generator=generator) < 0.5
    rot90 = torch.randint(0, 4, (n,), generator=generator)  # p 0.75 of k in 1..3 = uniform 0..3
    applied = torch.rand(n, generator=generator) < 0.8
    scale = config.hu_jitter / (window[1] - window[0])
    offset = (torch.rand(n, generator=generator) * 2 - 1) * scale
    centred_reach = min(room // 2, int(config.centred_shift_mm)) if crop else room // 2
    centred = _starts_within(centred_reach, room, n, generator)
    if centred_reach == reach:  # the same reach: the nodule cubes share the others' draw
        centred = other
    start = other
    if radius_mm is not None:
        radius = torch.as_tensor(radius_mm, dtype=torch.float32) + config.offcentre_margin_mm
        ball = direction / direction.norm(dim=1, keepdim=True).clamp(min=1e-6)
        ball = ball * (radial * radius)[:, None]
        near = (room // 2 + torch.round(ball)).long().clamp(0, room)
        start = torch.where(~moved[:, None], centred, near)
        start = torch.where(torch.isnan(radius)[:, None], other, start)
    if room <= 0:
        start = torch.zeros_like(start)
    if not config.flip:
        flip = torch.zeros_like(flip)
    if not config.rot90:
        rot90 = torch.zeros_like(rot90)
    offset = torch.where(applied, offset, 0.0) if config.hu_jitter > 0 else torch.zeros(n)
    return AugmentDraws(start, flip, rot90, offset.float(), shift, crop)


def _starts_within(reach: int, room: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(n, 3) crop starts in [0, room] whose centres lie within ``reach`` voxels of the
    cube's centre along each axis, uniformly."""
    return room // 2 - reach + torch.randint(0, 2 * reach + 1, (n, 3), generator=generator)


def augment_batch(x: torch.Tensor, draws: AugmentDraws, intensity: bool = True) -> torch.Tensor:
    """Crop or shift (air padding), flip, rotate and offset a windowed (B, 1, S, S, S) batch.

    Air is 0 after windowing, so the padding is 0 before the HU offset is added (as the
    MONAI chain did). ``intensity`` False leaves the values alone (a batch of masks, moved
    exactly as their cubes). ``draws`` must be on ``x``'s device.
    """
    b, _, depth, height, width = x.shape
    if height != width:
        raise ValueError(f"axial rotation needs square axial slices, got {height}x{width}")
    s = draws.shift_mm
    if s > 0:
        x = torch.nn.functional.pad(x, (s,) * 6)
    size = draws.crop or height
    if draws.crop:
        depth = draws.crop
    ar = torch.arange(size, device=x.device)
    z = torch.arange(depth, device=x.device)
    # Source of output (y, x) in the flipped cube, for k quarter turns (torch.rot90 rule):
    # k=1: (x, S-1-y); k=2: (S-1-y, S-1-x); k=3: (S-1-x, y).
    yy, xx = ar[:, None].expand(size, size), ar[None, :].expand(size, size)
    ryy, rxx = size - 1 - yy, size - 1 - xx
    src_y = torch.stack([yy, xx, ryy, rxx])[draws.rot90]  # (B, S, S)
    src_x = torch.stack([xx, ryy, rxx, yy])[draws.rot90]
    flip = draws.flip
    src_z = torch.where(flip[:, 0:1], depth - 1 - z, z) + draws.start[:, 0:1]  # (B, D)
    src_y = (
        torch.where(flip[:, 1, None, None], size - 1 - src_y, src_y) + draws.start[:, 1, None, None]
    )
    src_x = (
        torch.where(flip[:, 2, None, None], size - 1 - src_x, src_x) + draws.start[:, 2, None, None]
    )
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    out = x[batch, 0, src_z[:, :, None, None], src_y[:, None], src_x[:, None]]
    if intensity:
        out = out + draws.offset[:, None, None, None]
    return out.unsqueeze(1)
