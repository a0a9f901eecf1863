"""Multi-task loss: L = lambda_det * L_det + lambda_mal * L_mal."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import FocalLoss

from lungcad.training.config import TrainConfig


class MultiTaskLoss(torch.nn.Module):
    """Detection (BCE with logits, or focal) plus malignancy (SmoothL1) loss.

    Args:
        config: lambda_det, lambda_mal, det_loss, focal_gamma and mal_on.

    Returns (from ``forward``):
        (total, detection part, malignancy part); the malignancy part averages over the
        nodule cubes of the batch (all cubes with ``mal_on="all"``, negatives targeting 1)
        and is 0 for a batch without any.
    """

    def __init__(self, config: TrainConfig) -> None:
        super().__init__()
        self.lambda_det, self.lambda_mal = config.lambda_det, config.lambda_mal
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
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logit, malignancy = logit.float(), malignancy.float()
        if self.focal is not None:
            det = self.focal(logit[:, None], label[:, None])
        else:
            det = F.binary_cross_entropy_with_logits(logit, label)
        mask = torch.ones_like(has_mal) if self.mal_on_all else has_mal
        if mask.any():
            mal = F.smooth_l1_loss(malignancy[mask], mal_target[mask])
        else:
            mal = malignancy.sum() * 0.0  # keeps the graph; no nodule in this batch
        return self.lambda_det * det + self.lambda_mal * mal, det, mal
