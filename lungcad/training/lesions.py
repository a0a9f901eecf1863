"""Synthetic lesions written into training cubes: the lesion spectrum LIDC's nodules lack.

LIDC's readers outlined nodules up to 30 mm; a lung cancer met in practice may be a 9 cm
mass, part-solid, ground glass or cavitated. A share ``lesion_share`` of each batch's
negative cubes (those with no nodule) receives one synthetic lesion near its centre,
drawn on the cube's own 1 mm grid with a one-voxel partial-volume edge and lobulated
outline, and becomes a positive with the lesion's own mask (so the decoder learns to
outline, and thus size, it). Only a cube whose centre is aerated lung receives one (a lesion
may reach the chest wall or mediastinum, as a juxtapleural one does, but one drawn inside
soft tissue would be invisible). The lesion replaces what it covers, keeping the cube's
fine-grained noise (its high-pass part, clipped to ±``NOISE_HU``): vessels end at a mass's
edge, and its texture is the scan's.

Kinds (shares among inserted lesions): masses 30–48 mm (a quarter of them cavitated),
solid nodules 6–30 mm, part-solid (a ground-glass halo with a solid core) and pure ground
glass nodules 6–30 mm; and look-alikes that stay negatives: calcified granulomas 2–5 mm, and
the edge of a large organ (a ball of 120–400 mm at soft-tissue to contrast-blood HU whose
surface passes within 25 mm of the centre, or the centre inside it, as the heart, the
diaphragm's dome or the chest wall do where the lung region meets them). Masses stop at
48 mm, so that a mass is always seen whole in the 64 mm cube and an organ never is: a larger
one fills the cube, where it cannot be told from the inside of the heart or the liver.
Malignancy and the readers' characteristics are not trained on inserted lesions (no
reader rated them): only detection and the outline are.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: kind -> (share, diameter range mm, HU range of the lesion, is a nodule).
KINDS: dict[str, tuple[float, tuple[float, float], tuple[float, float], bool]] = {
    "mass": (0.2, (30.0, 48.0), (0.0, 60.0), True),
    "solid": (0.15, (6.0, 30.0), (-40.0, 60.0), True),
    "part_solid": (0.1, (8.0, 30.0), (-650.0, -450.0), True),
    "ground_glass": (0.1, (6.0, 30.0), (-720.0, -480.0), True),
    "granuloma": (0.1, (2.0, 5.0), (300.0, 900.0), False),
    "wall": (0.35, (120.0, 400.0), (20.0, 250.0), False),
}
#: Share of the masses with an air cavity.
CAVITY_SHARE = 0.25
#: The cube's high-pass part kept inside a lesion, at most this many HU either way.
NOISE_HU = 40.0
#: A cube receives a lesion only where its centre (5 mm mean) is below this HU: lung.
LUNG_CENTRE_HU = -500.0


def lobulated_ball(
    d: torch.Tensor, u: torch.Tensor, radius: float, g: torch.Generator
) -> torch.Tensor:
    """Occupancy (0..1) of a lobulated ball: its radius varies with direction as
    r(u) = R · (1 + Σ a_i (u·v_i)²−⅓ + b (u·w)), one-voxel edge ramp."""
    mod = torch.ones_like(d)
    for _ in range(3):
        v = torch.randn(3, generator=g)
        v = v / v.norm()
        a = float(torch.empty(1).uniform_(-0.12, 0.12, generator=g))
        mod = mod + a * ((u * v.view(3, 1, 1, 1).to(u)).sum(0) ** 2 - 1 / 3)
    w = torch.randn(3, generator=g)
    w = w / w.norm()
    mod = mod + float(torch.empty(1).uniform_(-0.08, 0.08, generator=g)) * (
        u * w.view(3, 1, 1, 1).to(u)
    ).sum(0)
    return (0.5 + radius * mod - d).clamp(0.0, 1.0)


def _draw_one(
    size: int, kind: str, g: torch.Generator, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(occupancy, HU) fields of one lesion of ``kind`` near the centre of a size³ cube."""
    _, (d_lo, d_hi), (v_lo, v_hi), _ = KINDS[kind]
    diameter = float(torch.empty(1).uniform_(d_lo, d_hi, generator=g))
    radius = diameter / 2
    shift = torch.empty(3).uniform_(-4.0, 4.0, generator=g)
    if kind == "wall":  # an organ's edge: its surface passes -20..25 mm from the centre
        direction = torch.randn(3, generator=g)
        direction = direction / direction.norm()
        gap = float(torch.empty(1).uniform_(-20.0, 25.0, generator=g))
        shift = direction * (radius + gap)
    axis = torch.arange(size, dtype=torch.float32) - (size - 1) / 2
    zz, yy, xx = torch.meshgrid(axis - shift[0], axis - shift[1], axis - shift[2], indexing="ij")
    p = torch.stack([zz, yy, xx]).to(device)
    d = p.norm(dim=0).clamp_min(1e-3)
    u = p / d
    alpha = lobulated_ball(d, u, radius, g) if radius > 3 else (0.5 + radius - d).clamp(0.0, 1.0)
    value = torch.full_like(d, float(torch.empty(1).uniform_(v_lo, v_hi, generator=g)))
    if kind == "part_solid":  # a solid core, 30-60 % of the diameter
        core = radius * float(torch.empty(1).uniform_(0.3, 0.6, generator=g))
        value = torch.where(d <= core, float(torch.empty(1).uniform_(-20, 50, generator=g)), value)
    if kind == "mass" and float(torch.rand(1, generator=g)) < CAVITY_SHARE:
        cavity = radius * float(torch.empty(1).uniform_(0.25, 0.5, generator=g))
        offset = (torch.randn(3, generator=g) * radius * 0.15).view(3, 1, 1, 1).to(device)
        inner = (0.5 + cavity - (p - offset).norm(dim=0)).clamp(0.0, 1.0)
        value = value * (1 - inner) + (-1000.0) * inner
    return alpha, value


def insert_lesions(
    x: torch.Tensor,
    label: torch.Tensor,
    has_mal: torch.Tensor,
    has_attr: torch.Tensor,
    masks: torch.Tensor | None,
    share: float,
    window: tuple[float, float],
    g: torch.Generator,
) -> int:
    """Write synthetic lesions into ``share`` of the negative cubes of a batch, in place.

    Args:
        x: (B, 1, S, S, S) windowed cubes (0..1 over ``window`` HU).
        label, has_mal, has_attr: the batch's targets; a cube that receives a nodule-kind
            lesion becomes label 1 with no malignancy or attribute target.
        masks: (B, 1, S, S, S) nodule masks (or None): the lesion's outline is written.
        share: chance that a negative cube receives a lesion.
        window: the HU window ``x`` was made with.
        g: the batch's CPU generator (seeded: the same draws on any device).

    Returns:
        The number of cubes changed.
    """
    if share <= 0:
        return 0
    negatives = torch.nonzero(label.detach().cpu() < 0.5).flatten()
    chosen = negatives[torch.rand(len(negatives), generator=g) < share]
    if len(chosen) == 0:
        return 0
    names = list(KINDS)
    p = torch.tensor([KINDS[n][0] for n in names])
    low, high = window
    size = x.shape[-1]
    c = size // 2
    centre = x[chosen, 0, c - 2 : c + 3, c - 2 : c + 3, c - 2 : c + 3].mean(dim=(1, 2, 3))
    chosen = chosen[(centre.cpu() < (LUNG_CENTRE_HU - low) / (high - low))]
    noise = NOISE_HU / (high - low)
    for row in chosen.tolist():
        kind = names[int(torch.multinomial(p, 1, generator=g))]
        alpha, value = _draw_one(size, kind, g, x.device)
        cube = x[row : row + 1]
        detail = cube - F.avg_pool3d(cube, 3, stride=1, padding=1, count_include_pad=False)
        target = ((value - low) / (high - low)).clamp(0.0, 1.0)
        lesion = target + detail[0, 0].clamp(-noise, noise)
        x[row, 0] = (x[row, 0] * (1 - alpha) + lesion * alpha).clamp(0.0, 1.0)
        if KINDS[kind][3]:
            label[row] = 1
            has_mal[row] = 0
            has_attr[row] = 0
            if masks is not None:
                masks[row, 0] = (alpha >= 0.5).to(masks.dtype)
    return len(chosen)
