"""Multi-task 3D CNN: MONAI ResNet backbone -> 256-d feature -> detection and malignancy heads,
and optionally a head for the radiologists' semantic attributes (``lungcad.core.model.attributes``)
and a segmentation decoder with skip connections from the backbone's stages (the nodule's mask
in the cube); in the hierarchical variant the malignancy head reads the predicted attributes
too."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.networks.blocks import UnetBasicBlock
from monai.networks.nets import ResNet
from torch import nn

from lungcad.config import ModelConfig
from lungcad.core.model.attributes import ATTRIBUTE_NAMES, ATTRIBUTES

#: Centre of the 1-5 malignancy scale: the regression head predicts the offset from it.
MALIGNANCY_CENTRE = 3.0
#: Least predicted reader spread (sd, malignancy points) of the spread head: keeps the
#: Gaussian likelihood finite where every reader gave the same rating.
SPREAD_FLOOR = 0.1
#: Name of the predicted readers' spread among a network's named outputs.
SPREAD_NAME = "malignancy_sd"
#: Initial logit of the centre heatmap (CenterNet's prior, p = 0.01): the focal loss starts
#: small over the ~10^5 background voxels of a cube.
CENTRE_PRIOR_LOGIT = -4.6


def output_names(config: ModelConfig) -> tuple[str, ...]:
    """Names of a network's optional outputs, in the columns of the third result of
    ``lungcad.core.model.predict.predict_batches``: the attributes, then the readers' spread."""
    names = ATTRIBUTE_NAMES if config.attributes else ()
    return names + ((SPREAD_NAME,) if config.spread else ())


class MaskDecoder(nn.Module):
    """U-Net decoder over a backbone's stages: from the deepest, each level upsamples to the
    next finer stage (trilinear, to its exact size: any input size works), concatenates it
    and applies a MONAI ``UnetBasicBlock``; a 1x1x1 convolution of the last level gives the
    mask logit, upsampled to the input's size (the last level reads the stem, at half the
    input resolution, or the input itself when it is given as the finest stage).

    Args:
        skip_channels: channels of the stages, finest first, deepest last.
        widths: channels of the decoder's levels, coarsest first (len(skip_channels) - 1).
        centre: a second last level of its own and a second logit channel: the
            nodule-centre heatmap, beside the mask (the two tasks share the levels before).
    """

    def __init__(
        self, skip_channels: tuple[int, ...], widths: tuple[int, ...], centre: bool = False
    ) -> None:
        super().__init__()
        if len(widths) != len(skip_channels) - 1:
            raise ValueError(f"{len(skip_channels) - 1} decoder widths needed, got {widths}")
        levels = []
        current = skip_channels[-1]
        for skip, width in zip(reversed(skip_channels[:-1]), widths):
            levels.append(UnetBasicBlock(3, current + skip, width, 3, 1, norm_name="batch"))
            last_inputs, current = current + skip, width
        self.levels = nn.ModuleList(levels)
        self.head = nn.Conv3d(current, 1, kernel_size=1)
        self.centre_level = self.centre_head = None
        if centre:
            self.centre_level = UnetBasicBlock(3, last_inputs, current, 3, 1, norm_name="batch")
            self.centre_head = nn.Conv3d(current, 1, kernel_size=1)
            with torch.no_grad():  # the heatmap starts near its prior: a centre in ~10^5 voxels
                self.centre_head.bias.fill_(CENTRE_PRIOR_LOGIT)

    def forward(self, stages: list[torch.Tensor], size: tuple[int, ...]) -> torch.Tensor:
        """(N, 1 or 2, *size) logits from the stages (finest first): the mask, then the
        centre heatmap."""
        x = stages[-1]
        for i, (level, skip) in enumerate(zip(self.levels, reversed(stages[:-1]))):
            x = F.interpolate(x, size=skip.shape[2:], mode="trilinear", align_corners=False)
            x = torch.cat([x, skip], dim=1)
            if i == len(self.levels) - 1 and self.centre_level is not None:
                centre = self.centre_head(self.centre_level(x))
                logits = torch.cat([self.head(level(x)), centre], dim=1)
                break
            x = level(x)
        else:
            logits = self.head(x)
        # in fp32 and the default layout: the same values as channels_last in fp32, 2-3x
        # faster on a CPU than either bf16 or channels_last (BENCHMARKS.md)
        logits = logits.float().contiguous()
        return F.interpolate(logits, size=size, mode="trilinear", align_corners=False)


class NoduleNet(nn.Module):
    """Nodule detector and malignancy regressor on 64^3 cubes.

    Args:
        config: widths, blocks, feature size and dropout.
        in_channels: input channels (1: windowed HU).

    Example:
        >>> net = NoduleNet(ModelConfig())
        >>> logit, malignancy, attributes, spread = net(torch.zeros(2, 1, 64, 64, 64))
        >>> logit.shape, malignancy.shape, attributes.shape, spread.shape
        (torch.Size([2]), torch.Size([2]), torch.Size([2, 9]), torch.Size([2, 0]))
        >>> net(torch.zeros(2, 1, 48, 48, 48), with_mask=True)[4].shape  # mask logits
        torch.Size([2, 1, 48, 48, 48])
    """

    def __init__(self, config: ModelConfig, in_channels: int = 1) -> None:
        super().__init__()
        self.config, self.in_channels = config, in_channels
        self.channels_last = False  # see to_channels_last
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
        self.n_spread = 1 if config.spread else 0
        self.malignancy_head = nn.Linear(mal_inputs, 1 + self.n_spread)
        self.full_resolution = len(config.decoder_widths) == len(config.widths) + 1
        skips = (config.widths[0], *config.widths)  # the stem, then the residual stages
        if self.full_resolution:
            skips = (in_channels, *skips)
        self.decoder = (
            MaskDecoder(skips, tuple(config.decoder_widths), config.centre_head)
            if config.segmentation
            else None
        )

    @property
    def segments(self) -> bool:
        """Whether the network outlines the nodule (has the decoder)."""
        return self.decoder is not None

    @property
    def centres(self) -> bool:
        """Whether the decoder also predicts the nodule-centre heatmap."""
        return self.decoder is not None and self.config.centre_head

    @property
    def output_names(self) -> tuple[str, ...]:
        """Names of the optional outputs (``output_names``)."""
        return output_names(self.config)

    def to_channels_last(self) -> NoduleNet:
        """Weights in channels_last_3d, and every input converted to it in ``forward``: 1.4-1.6x
        faster 3D convolutions on the CPU (BENCHMARKS.md), the same outputs (to ~1e-6)."""
        self.to(memory_format=torch.channels_last_3d)
        self.channels_last = True
        return self

    def stages(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The backbone's stem (before max pooling) and residual stages, finest first."""
        b = self.backbone
        stem = b.act(b.bn1(b.conv1(x)))
        out = [stem]
        y = stem if b.no_max_pool else b.maxpool(stem)
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4)[: len(self.config.widths)]:
            y = layer(y)
            out.append(y)
        return out

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """(N, feature_dim) shared feature of a batch of windowed cubes."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        return self.feature(self.backbone(x))

    def forward(
        self, x: torch.Tensor, with_mask: bool = False, mask_rows: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(detection logit (N,), malignancy on the 1-5 scale (N,), normalised attributes
        (N, 9) or (N, 0) without the attribute head, the readers' predicted spread: a
        standard deviation >= ``SPREAD_FLOOR`` (N, 1), or (N, 0) without the spread head),
        and with ``with_mask`` the nodule mask's logits (N, 1, *x's size; (N, 0) without
        the decoder), then, with the centre head, the centre heatmap's logits (the same
        shape); ``mask_rows``: outline only these rows of the batch (training spends the
        decoder's cost on the cubes that teach it most)."""
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        if self.decoder is None or not with_mask:
            f = self.features(x)
            return (*self._heads(f), f.new_zeros(len(f), 0)) if with_mask else self._heads(f)
        stages = self.stages(x)
        out = self._heads(self.feature(torch.flatten(self.backbone.avgpool(stages[-1]), 1)))
        skips = [x, *stages] if self.full_resolution else stages
        if mask_rows is not None:
            skips = [t.index_select(0, mask_rows) for t in skips]
        maps = self.decoder(skips, tuple(x.shape[2:]))
        return (*out, *maps.split(1, dim=1))

    def dense_logits(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 1 or 2, *x's size) decoder logits of windowed patches of any size, without
        the heads: the nodule mask, then the centre heatmap with the centre head; the dense
        path over a whole scan (``lungcad.detection.dense``)."""
        if self.decoder is None:
            raise ValueError("this network has no segmentation decoder (model.segmentation)")
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last_3d)
        stages = self.stages(x)
        skips = [x, *stages] if self.full_resolution else stages
        return self.decoder(skips, tuple(x.shape[2:]))

    def _heads(self, f: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self.attribute_head is None:
            attributes = f.new_zeros(len(f), 0)
        else:
            attributes = self.attribute_head(f)
        mal_in = torch.cat([f, attributes], dim=1) if self.config.hierarchical else f
        mal_out = self.malignancy_head(mal_in)
        malignancy = mal_out[:, 0] + MALIGNANCY_CENTRE
        spread = F.softplus(mal_out[:, 1:]) + SPREAD_FLOOR
        return self.detection_head(f).squeeze(1), malignancy, attributes, spread


def window_hu(x: torch.Tensor, window: tuple[float, float]) -> torch.Tensor:
    """HU (any dtype, e.g. int16 straight from the cube array) -> float32 in [0, 1]."""
    low, high = window
    return ((x.float() - low) / (high - low)).clamp_(0.0, 1.0)
