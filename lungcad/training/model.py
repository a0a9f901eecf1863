"""Multi-task 3D CNN: MONAI ResNet backbone -> 256-d feature -> detection and malignancy heads,
and optionally a head for the radiologists' semantic attributes (``lungcad.training.attributes``);
in the hierarchical variant the malignancy head reads the predicted attributes too."""

from __future__ import annotations

import torch
from monai.networks.nets import ResNet
from torch import nn

from lungcad.training.attributes import ATTRIBUTES
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
        >>> logit, malignancy, attributes = net(torch.zeros(2, 1, 64, 64, 64))
        >>> logit.shape, malignancy.shape, attributes.shape
        (torch.Size([2]), torch.Size([2]), torch.Size([2, 0]))
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
        self.n_attributes = len(ATTRIBUTES) if config.attributes else 0
        self.attribute_head = (
            nn.Linear(config.feature_dim, self.n_attributes) if config.attributes else None
        )
        mal_inputs = config.feature_dim + (self.n_attributes if config.hierarchical else 0)
        self.malignancy_head = nn.Linear(mal_inputs, 1)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) shared feature of a batch of windowed cubes."""
        return self.feature(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(detection logit (N,), malignancy on the 1-5 scale (N,), normalised attributes
        (N, 9), or (N, 0) without the attribute head)."""
        f = self.features(x)
        if self.attribute_head is None:
            attributes = f.new_zeros(len(f), 0)
        else:
            attributes = self.attribute_head(f)
        mal_in = torch.cat([f, attributes], dim=1) if self.config.hierarchical else f
        malignancy = self.malignancy_head(mal_in).squeeze(1) + MALIGNANCY_CENTRE
        return self.detection_head(f).squeeze(1), malignancy, attributes
