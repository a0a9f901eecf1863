"""Grad-CAM of lungcad's network: where maps are placed, what they point at, where they are
written, and the errors a bad request gets."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch

from lungcad.config import ModelConfig
from lungcad.core.cubes import cube_grid_origin
from lungcad.core.io.nifti import write_map_nifti
from lungcad.core.model.cam import (
    CamSettings,
    CubeExplainer,
    ExplainError,
    randomized_like,
    receptive_field_upsampler,
)
from lungcad.core.model.network import NoduleNet, window_hu
from lungcad.explain.cubes import check_cubes
from lungcad.explain.metrics import pointing, rank_correlation
from tests.explain.toy_spheres import TEST_CENTRES, WINDOW, toy_cube, train_toy_net


def _centroid_of_input_gradient(net: NoduleNet, layer: str, cell: int, seed: int) -> np.ndarray:
    """Where in a 64³ input the feature cell (cell, cell, cell) of ``layer`` looks: the
    centroid of |d activation / d input| at a random input."""
    acts = {}
    module = dict(net.named_modules())[layer]
    hook = module.register_forward_hook(lambda m, i, o: acts.__setitem__("a", o))
    x = torch.randn(1, 1, 64, 64, 64, generator=torch.Generator().manual_seed(seed))
    x.requires_grad_(True)
    net(x)
    hook.remove()
    acts["a"][0, :, cell, cell, cell].sum().backward()
    g = x.grad[0, 0].abs().numpy()
    axes = [tuple(j for j in range(3) if j != a) for a in range(3)]
    return np.array([(g.sum(axis=ax) * np.arange(64)).sum() / g.sum() for ax in axes])


@pytest.mark.parametrize("layer, stride", [("backbone.layer2", 8), ("backbone.layer3", 16)])
def test_each_map_cell_is_drawn_on_its_receptive_field_centre(layer, stride) -> None:
    cell, looked_at = 2, []
    for seed in range(8):  # one random network's weights tilt its field; their mean is centred
        torch.manual_seed(seed)
        net = NoduleNet(ModelConfig(widths=(4, 8, 8, 8), feature_dim=8)).eval()
        looked_at.append(_centroid_of_input_gradient(net, layer, cell, seed))
    # Within 1.5 voxels (the default interpolation would be off by (stride - 1) / 2: 3.5, 7.5).
    np.testing.assert_allclose(np.mean(looked_at, axis=0), stride * cell, atol=1.5)
    # One hot cell upsampled to 64³ peaks on that voxel (MONAI's default interpolation
    # would put it (stride - 1) / 2 voxels further along every axis).
    n = 64 // stride
    cam = torch.zeros(1, 1, n, n, n)
    cam[0, 0, cell, cell, cell] = 1.0
    up = receptive_field_upsampler((64, 64, 64))(cam)[0, 0].numpy()
    assert np.unravel_index(up.argmax(), up.shape) == (stride * cell,) * 3
    assert up.shape == (64, 64, 64)


def test_map_nifti_has_the_cube_geometry_in_patient_mm(tmp_path) -> None:
    cam = np.random.default_rng(0).random((64, 64, 64)).astype(np.float32)
    centre = np.array([-101.25, 37.5, -212.0])
    path = write_map_nifti(cam, centre, 1.0, tmp_path / "maps" / "cube7_detection.nii.gz")
    image = sitk.ReadImage(str(path))
    np.testing.assert_allclose(image.GetOrigin(), cube_grid_origin(centre, 64, 1.0), atol=1e-4)
    np.testing.assert_allclose(image.GetSpacing(), (1.0, 1.0, 1.0))
    np.testing.assert_allclose(image.GetDirection(), np.eye(3).ravel(), atol=1e-6)
    np.testing.assert_allclose(sitk.GetArrayFromImage(image), cam)
    # The cube's centre voxel pair straddles the requested point.
    mid = image.TransformContinuousIndexToPhysicalPoint((31.5, 31.5, 31.5))
    np.testing.assert_allclose(mid, centre, atol=1e-4)


def test_pointing_and_rank_correlation_on_known_maps() -> None:
    mask = np.zeros((32, 32, 32), bool)
    mask[14:18, 14:18, 14:18] = True
    cam = np.zeros((32, 32, 32), np.float32)
    cam[19, 16, 16] = 1.0  # 2 voxels beyond the mask: inside the 2 mm tolerance
    hit, chance, dist = pointing(cam, mask, 2.0)
    assert hit and dist == pytest.approx(2.0)
    # Chance: the share of the cube within 2 mm of the mask (4³ grown to at most 8³).
    assert mask.mean() < chance < 8**3 / 32**3
    cam[19, 16, 16], cam[25, 16, 16] = 0.5, 1.0  # now 8 voxels away
    assert not pointing(cam, mask, 2.0)[0]
    assert not pointing(np.zeros_like(cam), mask, 2.0)[0]  # a blank map points nowhere
    a = np.arange(1000, dtype=float)
    assert rank_correlation(a, a**3) == pytest.approx(1.0)
    assert rank_correlation(a, -a) == pytest.approx(-1.0)
    assert np.isnan(rank_correlation(a, np.zeros(1000)))


def test_bad_requests_get_one_clear_error() -> None:
    net = NoduleNet(ModelConfig(widths=(4, 8, 8, 8), feature_dim=8)).eval()
    with pytest.raises(ExplainError, match="layer 'backbone.layer9' is not a module"):
        CubeExplainer(net, WINDOW, CamSettings(layer="backbone.layer9"))
    with pytest.raises(ExplainError, match="method 'lime'"):
        CamSettings(method="lime")
    with pytest.raises(ExplainError, match="target 'size'"):
        CamSettings(target="size")
    explainer = CubeExplainer(net, WINDOW)
    with pytest.raises(ExplainError, match=r"shape \(2, 64, 64\)"):
        explainer(np.zeros((2, 64, 64), np.int16))
    with pytest.raises(ExplainError, match="cubes.npy: cubes of dtype bool"):
        check_cubes(np.zeros((2, 8, 8, 8), bool), "cubes.npy")
    with pytest.raises(ExplainError, match=r"shape \(2, 8, 8, 4\)"):
        check_cubes(np.zeros((2, 8, 8, 4), np.int16), "cubes.npy")


def test_explainer_leaves_the_callers_model_untouched() -> None:
    torch.manual_seed(0)
    net = NoduleNet(ModelConfig(widths=(4, 8, 8, 8), feature_dim=8)).eval()
    x = torch.randn(2, 1, 32, 32, 32)
    before = [t.clone() for t in net(x)]
    maps = CubeExplainer(net, WINDOW)(np.random.default_rng(0).normal(-700, 200, (2, 32, 32, 32)))
    assert maps.shape == (2, 32, 32, 32) and maps.dtype == np.float32
    assert maps.min() >= 0.0 and maps.max() <= 1.0
    assert not net._forward_hooks and not any(m._forward_hooks for m in net.modules())
    for a, b in zip(before, net(x)):
        torch.testing.assert_close(a, b)
    fresh = randomized_like(net, seed=1)
    assert type(fresh) is NoduleNet and not torch.equal(
        fresh.detection_head.weight, net.detection_head.weight
    )


@pytest.fixture
def two_threads():
    """The toy training's result hangs on the order of its float sums, which PyTorch's
    thread count sets: two threads, whatever share of the cores this test process has."""
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.slow
def test_trained_maps_find_an_off_centre_sphere_and_random_weights_do_not(two_threads) -> None:
    # A tiny network trained in the test to find spheres anywhere in the cube (not only at
    # its centre); spheres of radius 5 at five known off-centre voxels.
    net = train_toy_net(steps=150, seed=0)
    cubes = np.stack([toy_cube(np.random.default_rng(7), c) for c in TEST_CENTRES])
    empty = np.stack([toy_cube(np.random.default_rng(8 + i)) for i in range(5)])
    x = window_hu(torch.from_numpy(np.concatenate([cubes, empty]))[:, None].float(), WINDOW)
    with torch.no_grad():
        prob = torch.sigmoid(net(x)[0])
    assert prob[:5].min() > prob[5:].max()  # it has learned what a sphere is

    def peak_distances(model) -> np.ndarray:
        maps = CubeExplainer(model, WINDOW, CamSettings(layer="backbone.layer3"))(cubes)
        peaks = [np.unravel_index(m.argmax(), m.shape) for m in maps]
        return np.linalg.norm(np.subtract(peaks, TEST_CENTRES), axis=1)

    trained, random = peak_distances(net), peak_distances(randomized_like(net, seed=0))
    # A layer3 map has 4³ cells of 16 voxels: it cannot place a maximum finer than one cell,
    # and the trained maps peak up to one cell (a consistent shift towards the cube's origin,
    # scripts/gradcam_toy_spheres.py) from the sphere. So: every trained maximum lies within
    # the sphere grown by one cell, and no randomised-weight maximum does.
    cell, radius = 16.0, 5.0
    assert (trained <= radius + cell).all(), trained
    assert (random > radius + cell).all(), random
    assert trained.mean() < random.mean() / 3
    assert (trained <= radius).any()  # at least one maximum falls inside the sphere itself
