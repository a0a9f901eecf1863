"""Multi-task loss: L = lambda_det * L_det + lambda_mal * L_mal (+ lambda_attr * L_attr)
(+ lambda_seg * L_seg).

L_seg is the soft Dice loss over the batch's nodule cubes together (their voxels pooled:
one small nodule does not weigh as much as a whole cube) plus the voxel-wise BCE over every
cube, so cubes without a nodule (an empty target) are taught to outline nothing. Dice over
the negatives too would be swamped by their background.

With the centre head (``model.centre_head``) the segmentation loss adds lambda_centre times
CenterNet's penalty-reduced focal loss on the centre heatmap (``centre_focal_loss``): each
nodule cube's target is a Gaussian around its mask's centroid, 1 at the nearest voxel, with
a standard deviation of a third of the nodule's equivalent radius (at least 1 mm), and the
loss is normalised by the number of nodule cubes, so every nodule counts alike.

With the spread head (``train.model.spread``) L_mal is the Gaussian negative log-likelihood
of the readers' ratings rather than SmoothL1 on their mean: a nodule rated r_1..r_n, with
mean m and standard deviation s (ddof 0, index.csv's ``malignancy_mean`` and
``malignancy_std``), predicted as N(mu, sd²), costs the mean over its readers of
-log N(r_i; mu, sd²) = log sd + log(2 pi) / 2 + (s² + (m - mu)²) / (2 sd²), which needs only
m and s. Its minimum is at mu = m, sd = s: the head learns the readers' mean and spread.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import FocalLoss

from lungcad.config import TrainConfig
from lungcad.core.metrics import reader_nll


def nodule_dice_loss(
    mask_logit: torch.Tensor,
    target: torch.Tensor,
    is_nodule: torch.Tensor,
    eps: float = 1e-5,
    per_cube: bool = False,
) -> torch.Tensor:
    """1 - soft Dice of the nodule cubes' voxels pooled over the batch (0 without any nodule
    cube; no host sync); with ``per_cube`` the mean over the nodule cubes of each one's
    1 - Dice, so a 4 mm nodule weighs as much as a mass. ``mask_logit`` and ``target``:
    (N, 1, ...); ``is_nodule``: (N,)."""
    prob = torch.sigmoid(mask_logit).flatten(1)
    target = target.flatten(1)
    weight = is_nodule.float()
    inter = (prob * target).sum(1)
    denom = (prob + target).sum(1)
    if per_cube:
        dice = (2 * inter + eps) / (denom + eps)
        return ((1 - dice) * weight).sum() / weight.sum().clamp(min=1.0)
    return 1 - (2 * (inter * weight).sum() + eps) / ((denom * weight).sum() + eps)


#: Focal loss exponents of the centre heatmap (CenterNet: alpha on the prediction, beta on
#: the Gaussian's penalty reduction around the centre).
CENTRE_ALPHA, CENTRE_BETA = 2.0, 4.0
#: Least standard deviation (voxels) of a centre's Gaussian.
CENTRE_MIN_SIGMA = 1.0


def centre_target(mask: torch.Tensor, is_nodule: torch.Tensor) -> torch.Tensor:
    """(N, 1, ...) centre heatmap targets of (N, 1, ...) masks: for each nodule cube whose
    mask is not empty, a Gaussian around the mask's centroid with a standard deviation of a
    third of its equivalent-sphere radius (at least ``CENTRE_MIN_SIGMA`` voxels), scaled so
    that its largest voxel is exactly 1; zeros elsewhere."""
    mask = mask.float()
    n, spatial = mask.shape[0], mask.shape[2:]
    grids = torch.meshgrid(
        *(torch.arange(size, device=mask.device, dtype=torch.float32) for size in spatial),
        indexing="ij",
    )
    flat = mask.flatten(1)
    volume = flat.sum(1)
    keep = (volume > 0) & (is_nodule > 0.5)
    safe = volume.clamp(min=1.0)
    squared = torch.zeros((n, *spatial), device=mask.device)
    for g in grids:
        centroid = (flat * g.flatten()).sum(1) / safe
        squared = squared + (g[None] - centroid.view(n, *([1] * len(spatial)))) ** 2
    radius = (3.0 * volume / (4.0 * torch.pi)).pow(1.0 / 3.0)
    sigma = (radius / 3.0).clamp(min=CENTRE_MIN_SIGMA).view(n, *([1] * len(spatial)))
    heat = torch.exp(-squared / (2.0 * sigma**2))
    heat = heat / heat.flatten(1).amax(1).view(n, *([1] * len(spatial)))
    return (heat * keep.view(n, *([1] * len(spatial))).float())[:, None]


def centre_focal_loss(
    centre_logit: torch.Tensor, mask: torch.Tensor, is_nodule: torch.Tensor
) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss of the centre heatmap's logits against the
    targets of ``centre_target``, summed and divided by the number of nodule cubes (at
    least 1)."""
    target = centre_target(mask, is_nodule)
    logit = centre_logit.float()
    log_p, log_not_p = F.logsigmoid(logit), F.logsigmoid(-logit)
    p = torch.sigmoid(logit)
    peak = target >= 1.0
    positive = torch.where(peak, (1 - p) ** CENTRE_ALPHA * log_p, 0.0)
    negative = torch.where(peak, 0.0, (1 - target) ** CENTRE_BETA * p**CENTRE_ALPHA * log_not_p)
    count = peak.flatten(1).any(1).float().sum().clamp(min=1.0)
    return -(positive.sum() + negative.sum()) / count


class MultiTaskLoss(torch.nn.Module):
    """Detection (BCE with logits, or focal) plus malignancy (SmoothL1) loss, plus the
    attribute loss (SmoothL1 on the normalised attributes) when ``lambda_attr`` > 0, plus
    the segmentation loss (Dice on the nodule cubes + BCE, + the centre heatmap's focal loss
    when its logits are given) when ``lambda_seg`` > 0 and mask logits are given.

    Args:
        config: lambda_det, lambda_mal, lambda_attr, lambda_seg, lambda_centre, det_loss,
            focal_gamma and mal_on.

    ``forward`` takes the network's outputs and the batch's targets; ``spread`` is the
    predicted readers' sd, (N, 1) (the likelihood loss, which needs ``reader_sd``) or (N, 0)
    (SmoothL1).

    Returns (from ``forward``):
        (total, detection part, malignancy part, attribute part, segmentation part); the
        malignancy part
        averages over the nodule cubes of the batch (all cubes with ``mal_on="all"``,
        negatives targeting 1) and is 0 for a batch without any; the attribute part averages
        over the attribute values that exist (nodule cubes only) and is 0 without any; the
        segmentation part is 0 without mask logits.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.lambda_det, self.lambda_mal = config.lambda_det, config.lambda_mal
        self.lambda_attr = config.lambda_attr
        self.lambda_seg = config.lambda_seg
        self.lambda_centre = config.lambda_centre
        self.dice_per_cube = config.seg_dice == "per_cube"
        self.mal_on_all = config.mal_on == "all"
        self.focal = (
            FocalLoss(gamma=config.focal_gamma, use_softmax=False, reduction="mean")
            if config.det_loss == "focal"
            else None
        )

    def forward(
        self,
        logit: torch.Tensor,
        malignancy: torch.Tensor,
        label: torch.Tensor,
        mal_target: torch.Tensor,
        has_mal: torch.Tensor,
        mal_weight: torch.Tensor | None = None,
        attributes: torch.Tensor | None = None,
        attr_target: torch.Tensor | None = None,
        has_attr: torch.Tensor | None = None,
        spread: torch.Tensor | None = None,
        reader_sd: torch.Tensor | None = None,
        mask_logit: torch.Tensor | None = None,
        mask_target: torch.Tensor | None = None,
        mask_label: torch.Tensor | None = None,
        centre_logit: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        logit, malignancy = logit.float(), malignancy.float()
        if self.focal is not None:
            det = self.focal(logit[:, None], label[:, None])
        else:
            det = F.binary_cross_entropy_with_logits(logit, label)
        mask = torch.ones_like(has_mal) if self.mal_on_all else has_mal
        if mal_weight is None:
            mal_weight = torch.ones_like(malignancy)
        # Weighted mean over the masked cubes, without a host sync (0 without any).
        weight = mal_weight * mask
        if spread is not None and spread.shape[1]:
            per_cube = reader_nll(malignancy, spread[:, 0].float(), mal_target, reader_sd)
        else:
            per_cube = F.smooth_l1_loss(malignancy, mal_target, reduction="none")
        mal = (per_cube * weight).sum() / weight.sum().clamp(min=1e-8)
        total = self.lambda_det * det + self.lambda_mal * mal
        attr = logit.sum() * 0.0
        if attributes is not None and attributes.shape[1]:  # the head in the graph (DDP)
            # Masked mean without a host sync: SmoothL1 per value, zero where none exists.
            per_value = F.smooth_l1_loss(attributes.float(), attr_target, reduction="none")
            attr = (per_value * has_attr).sum() / has_attr.sum().clamp(min=1)
            total = total + self.lambda_attr * attr
        seg = logit.sum() * 0.0
        if mask_logit is not None and mask_logit.shape[1] and mask_target is not None:
            mask_logit = mask_logit.float()
            is_nodule = label if mask_label is None else mask_label
            dice = nodule_dice_loss(mask_logit, mask_target, is_nodule, per_cube=self.dice_per_cube)
            seg = dice + F.binary_cross_entropy_with_logits(mask_logit, mask_target)
            if centre_logit is not None:
                seg = seg + self.lambda_centre * centre_focal_loss(
                    centre_logit, mask_target, is_nodule
                )
            total = total + self.lambda_seg * seg
        return total, det, mal, attr, seg
