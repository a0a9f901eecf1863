"""Multi-task 3D CNN: MONAI ResNet backbone -> 256-d feature -> detection and malignancy heads."""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from torch import nn

from lungcad.training.config import ModelConfig

#: Centre of the 1-5 malignancy scale: the regression head predicts the offset from it.
MALIGNANCY_CENTRE = 3.0


class NoduleNet(nn.Module):
    """Nodule detector and malignancy regressor on 64^3 cubes.

    Args:
        config: widths, blocks, feature size and dropout.
        in_channels: input channels (1: windowed HU).

    Example:
        >>> net = NoduleNet(ModelConfig())
        >>> logit, malignancy = net(torch.zeros(2, 1, 64, 64, 64))
        >>> logit.shape, malignancy.shape
        (torch.Size([2]), torch.Size([2]))
    """

    def __init__(self, config: ModelConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.config, self.in_channels = config, in_channels
        self.backbone = ResNet(
            block="basic",
            layers=list(config.blocks),
            block_inplanes=list(config.widths),
            spatial_dims=3,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,  # global average pooled features, no classifier
        )
        self.feature = nn.Sequential(
            nn.Linear(config.widths[-1], config.feature_dim),
            nn.ReLU(inplace=True),
            nn.Dropout(config.dropout),
        )
        self.detection_head = nn.Linear(config.feature_dim, 1)
        self.malignancy_head = nn.Linear(config.feature_dim, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) shared feature of a batch of windowed cubes."""
        return self.feature(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(detection logit, malignancy on the 1-5 scale), each of shape (N,)."""
        f = self.features(x)
        return self.detection_head(f).squeeze(1), self.malignancy_head(f).squeeze(
            1
        ) + MALIGNANCY_CENTRE
