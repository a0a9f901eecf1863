"""The network's inference paths that compute the same sums another way (the dense pass's
stem, its max pooling, upsampling and last decoder level) give what the plain modules
give."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lungcad.config import ModelConfig
from lungcad.core.model.network import (
    NoduleNet,
    blocked_conv,
    max_pool_pairs,
    resize_trilinear,
    stem_conv,
    stem_pool,
    window_hu,
)


@pytest.mark.parametrize(
    ("shape", "kernel", "padding"),
    [
        ((2, 1, 24, 24, 24), 7, 3),  # the backbone's stem
        ((1, 1, 17, 20, 13), 7, 3),  # odd and even sizes, not a cube
        ((1, 1, 9, 10, 11), 3, 1),
        ((1, 1, 8, 7, 6), 5, 0),
        ((1, 1, 6, 6, 9), 4, 1),  # an even kernel
    ],
)
def test_a_stride_2_convolution_over_the_inputs_blocks_is_the_convolution(
    shape, kernel, padding
) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    weight, bias = torch.randn(5, 1, kernel, kernel, kernel), torch.randn(5)
    expected = F.conv3d(x, weight, bias, stride=2, padding=padding)
    got = blocked_conv(x, weight, bias, (padding,) * 3)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)


def test_the_stem_runs_over_blocks_on_a_cpu_in_bf16_and_as_itself_otherwise() -> None:
    torch.manual_seed(0)
    conv = nn.Conv3d(1, 8, kernel_size=7, stride=2, padding=3, bias=False)
    x = torch.rand(1, 1, 20, 22, 18)
    with torch.inference_mode():
        assert torch.equal(stem_conv(conv, x), conv(x))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = stem_conv(conv, x)
            assert torch.equal(got, blocked_conv(x.bfloat16(), conv.weight, None, (3, 3, 3)))
            plain = conv(x)
        # bf16 sums in another order: within bf16's rounding of the plain convolution's
        torch.testing.assert_close(got.float(), plain.float(), rtol=2e-2, atol=2e-2)
        other = nn.Conv3d(1, 8, kernel_size=3, stride=1, padding=1, bias=False)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert torch.equal(stem_conv(other, x), other(x))  # not a stride-2 stem


@pytest.mark.parametrize(
    ("shape", "size"),
    [
        ((2, 2, 12, 12, 12), (24, 24, 24)),
        ((1, 3, 7, 9, 5), (15, 17, 11)),
        ((1, 1, 8, 8, 8), (5, 6, 7)),
    ],
)
def test_the_separable_resize_is_trilinear_interpolation(shape, size) -> None:
    torch.manual_seed(0)
    x = torch.randn(*shape)
    expected = F.interpolate(x, size=size, mode="trilinear", align_corners=False)
    torch.testing.assert_close(resize_trilinear(x, size), expected, rtol=1e-5, atol=1e-5)


def test_the_mask_and_centre_levels_run_as_one_block_with_the_same_sums() -> None:
    torch.manual_seed(0)
    net = NoduleNet(ModelConfig(centre_head=True))
    for module in net.decoder.modules():  # learnt-looking statistics, not the initial ones
        if isinstance(module, nn.BatchNorm3d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
            module.bias.data.uniform_(-0.2, 0.2)
    net.eval()
    x = torch.rand(2, 1, 24, 24, 24)
    decoder = net.decoder
    with torch.inference_mode():
        stages = net.stages(x)
        y = stages[-1]
        for level, skip in zip(decoder.levels, reversed(stages[:-1])):
            y = torch.cat([F.interpolate(y, size=skip.shape[2:], mode="trilinear"), skip], 1)
            if level is decoder.levels[-1]:
                break
            y = level(y)
        mask = decoder.head(decoder.levels[-1](y))
        centre = decoder.centre_head(decoder.centre_level(y))
        torch.testing.assert_close(
            decoder.last_level(stages), torch.cat([mask, centre], 1), rtol=1e-6, atol=1e-6
        )


def test_the_shared_feature_is_the_backbones_own_forward() -> None:
    torch.manual_seed(0)
    net = NoduleNet(ModelConfig()).eval()
    x = torch.rand(3, 1, 32, 32, 32)
    with torch.inference_mode():
        assert torch.equal(net.features(x), net.feature(net.backbone(x)))


def test_windowing_makes_a_new_tensor_and_leaves_the_input_as_it_was() -> None:
    hu = torch.tensor([-2000.0, -1000.0, -300.0, 400.0, 3000.0])
    kept = hu.clone()
    assert window_hu(hu, (-1000.0, 400.0)).tolist() == pytest.approx([0.0, 0.0, 0.5, 1.0, 1.0])
    assert torch.equal(hu, kept)
    assert window_hu(hu.to(torch.int16), (-1000.0, 400.0)).dtype == torch.float32


@pytest.mark.parametrize(
    "shape",
    [(2, 3, 12, 12, 12), (1, 4, 11, 8, 7), (1, 2, 1, 5, 2), (3, 5, 2, 3, 1), (1, 16, 24, 17, 9)],
)
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("channels_last", [False, True])
def test_max_pooling_by_pairs_is_max_pooling_to_the_bit(shape, dtype, channels_last) -> None:
    torch.manual_seed(0)
    # ties and negative values as after a ReLU or a normalisation
    x = torch.randn(*shape).clamp_(min=-0.5).mul_(4).round_().to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last_3d)
    got = max_pool_pairs(x)
    assert torch.equal(got, F.max_pool3d(x, 3, stride=2, padding=1))
    assert got.dtype == dtype
    layout = torch.channels_last_3d if channels_last else torch.contiguous_format
    assert got.is_contiguous(memory_format=layout) or min(got.shape[2:]) == 1


def test_the_stem_pools_by_pairs_without_gradients_and_as_itself_with_them() -> None:
    torch.manual_seed(0)
    pool = nn.MaxPool3d(kernel_size=3, stride=2, padding=1)
    x = torch.rand(2, 4, 10, 9, 8).round_()  # many ties
    with torch.no_grad():
        assert torch.equal(stem_pool(pool, x), pool(x))
    leaf = x.clone().requires_grad_(True)
    stem_pool(pool, leaf).sum().backward()
    plain = x.clone().requires_grad_(True)
    pool(plain).sum().backward()
    # the module's backward: each output's gradient goes to one of its tied inputs
    assert torch.equal(leaf.grad, plain.grad)
    wider = nn.MaxPool3d(kernel_size=2, stride=2)
    with torch.no_grad():
        assert torch.equal(stem_pool(wider, x), wider(x))


def test_a_networks_stages_are_the_same_with_the_pooling_by_pairs() -> None:
    torch.manual_seed(0)
    net = NoduleNet(ModelConfig()).eval()
    x = torch.rand(2, 1, 40, 40, 40)
    with torch.no_grad():
        got = net.stages(x)
        b = net.backbone
        stem = b.act(b.bn1(b.conv1(x)))
        y, expected = b.maxpool(stem), [stem]
        for layer in (b.layer1, b.layer2, b.layer3, b.layer4)[: len(net.config.widths)]:
            y = layer(y)
            expected.append(y)
    assert len(got) == len(expected)
    for a, e in zip(got, expected):
        assert torch.equal(a, e)


def test_in_bf16_the_pooling_by_pairs_gives_the_dense_pass_and_the_heads_to_the_bit() -> None:
    # autocast pools in fp32: the pairs give the same values in the same dtype
    torch.manual_seed(0)
    net = NoduleNet(ModelConfig(centre_head=True)).eval().to_channels_last()
    x = torch.rand(2, 1, 40, 36, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        with torch.no_grad():  # by pairs
            maps, features = net.dense_logits(x), net.features(x)
        with torch.enable_grad():  # the module
            plain_maps, plain_features = net.dense_logits(x), net.features(x)
        with torch.no_grad():
            pool, stem = net.backbone.maxpool, torch.rand(1, 4, 9, 8, 7).bfloat16()
            assert stem_pool(pool, stem).dtype == pool(stem).dtype == torch.float32
    assert torch.equal(maps, plain_maps.detach())
    assert torch.equal(features, plain_features.detach())
