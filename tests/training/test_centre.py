"""The centre heatmap head: its targets, its focal loss, and that it learns where nodules are."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lungcad.config import ModelConfig, TrainConfig
from lungcad.core.model.loading import load_model
from lungcad.core.model.network import NoduleNet, window_hu
from lungcad.training.losses import MultiTaskLoss, centre_focal_loss, centre_target
from lungcad.training.trainer import Trainer
from tests.conftest import make_tiny_dataset, tiny_train_config


def _ball(shape: tuple[int, int, int], centre: tuple[float, ...], radius: float) -> torch.Tensor:
    grid = np.indices(shape).astype(float)
    dist = np.sqrt(sum((g - c) ** 2 for g, c in zip(grid, centre)))
    return torch.from_numpy(dist <= radius).float()


def test_the_centre_target_peaks_at_the_mask_centroid_and_spreads_with_its_size() -> None:
    masks = torch.stack(
        [
            _ball((32, 32, 32), (10, 12, 14), 4.5),  # a 9 mm nodule
            _ball((32, 32, 32), (20, 20, 20), 1.0),  # a 2 mm speck: the least spread
            _ball((32, 32, 32), (16, 16, 16), 6.0),  # a negative cube's (ignored) mask
            torch.zeros(32, 32, 32),  # a nodule cube whose crop shows none of it
            _ball((32, 32, 32), (16, 16, 16), 12.0),  # a 24 mm mass: a wider spread
        ]
    )[:, None]
    target = centre_target(masks, torch.tensor([1.0, 1.0, 0.0, 1.0, 1.0]))
    assert target.shape == masks.shape
    assert target[0, 0, 10, 12, 14] == 1.0 and target[0].max() == 1.0
    assert target[1, 0, 20, 20, 20] == 1.0
    # sigma: a third of the equivalent radius (~4.5 voxels: 1.5), at least 1 voxel
    volume = masks[0].sum()
    sigma = float((3 * volume / (4 * np.pi)) ** (1 / 3) / 3)
    assert 1.4 < sigma < 1.6
    assert float(target[0, 0, 10, 12, 17]) == pytest.approx(np.exp(-9 / (2 * sigma**2)), rel=1e-4)
    assert float(target[1, 0, 20, 20, 22]) == pytest.approx(np.exp(-2), rel=1e-4)
    assert float(target[4, 0, 16, 16, 20]) == pytest.approx(np.exp(-0.5), rel=0.02)  # sigma 4
    assert target[2].max() == 0 and target[3].max() == 0


def test_the_centre_loss_counts_each_nodule_alike_and_vanishes_when_every_centre_is_found() -> None:
    masks = torch.stack(
        [_ball((24, 24, 24), (12, 12, 12), 8.0), _ball((24, 24, 24), (8, 8, 8), 1.5)]
    )[:, None]
    is_nodule = torch.ones(2)
    target = centre_target(masks, is_nodule)
    found = torch.where(target >= 1.0, 30.0, -30.0)
    assert centre_focal_loss(found, masks, is_nodule) < 1e-6
    # Missing the small nodule's centre costs as much as missing the mass's.
    miss_small, miss_mass = found.clone(), found.clone()
    miss_small[1] = -30.0
    miss_mass[0] = -30.0
    small = float(centre_focal_loss(miss_small, masks, is_nodule))
    mass = float(centre_focal_loss(miss_mass, masks, is_nodule))
    assert small == pytest.approx(mass, rel=0.05) and small == pytest.approx(15.0, rel=0.01)
    # A false centre far from any nodule is penalised in full, near one much less.
    far, near = found.clone(), found.clone()
    far[0, 0, 1, 1, 1] = 0.0
    near[0, 0, 12, 12, 13] = 0.0
    base = centre_focal_loss(found, masks, is_nodule)
    assert centre_focal_loss(far, masks, is_nodule) - base > 10 * (
        centre_focal_loss(near, masks, is_nodule) - base
    )


def test_the_multitask_loss_adds_the_centre_loss_to_the_decoder_part() -> None:
    config = TrainConfig(lambda_seg=1.0, lambda_centre=2.0)
    masks = _ball((16, 16, 16), (8, 8, 8), 3.0)[None, None]
    label = torch.ones(1)
    args = (torch.zeros(1), torch.full((1,), 3.0), label, torch.full((1,), 3.0), label)
    mask_logit = torch.zeros(1, 1, 16, 16, 16)
    centre_logit = torch.full((1, 1, 16, 16, 16), -3.0)
    without = MultiTaskLoss(config)(
        *args, mask_logit=mask_logit, mask_target=masks, mask_label=label
    )
    with_centre = MultiTaskLoss(config)(
        *args,
        mask_logit=mask_logit,
        mask_target=masks,
        mask_label=label,
        centre_logit=centre_logit,
    )
    expected = 2.0 * centre_focal_loss(centre_logit, masks, label)
    assert float(with_centre[4] - without[4]) == pytest.approx(float(expected), rel=1e-5)


def test_the_network_gives_a_centre_map_beside_the_mask_only_when_asked() -> None:
    x = torch.zeros(2, 1, 40, 40, 40)
    with_head = NoduleNet(ModelConfig(centre_head=True))
    out = with_head(x, with_mask=True)
    assert len(out) == 6 and out[4].shape == out[5].shape == (2, 1, 40, 40, 40)
    assert with_head.dense_logits(x).shape == (2, 2, 40, 40, 40)
    # the dense path's mask channel is the mask the heads' forward gives
    with_head.eval()
    torch.testing.assert_close(with_head.dense_logits(x)[:, :1], with_head(x, with_mask=True)[4])
    without = NoduleNet(ModelConfig(centre_head=False))
    assert len(without(x, with_mask=True)) == 5 and without.dense_logits(x).shape[1] == 1
    with pytest.raises(ValueError, match="centre_head: true needs segmentation"):
        ModelConfig(centre_head=True, segmentation=False)


def test_an_ensemble_averages_both_maps_and_refuses_members_that_differ() -> None:
    from lungcad.core.model.ensemble import EnsembleError, EnsembleNet

    x = torch.rand(1, 1, 32, 32, 32)
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(NoduleNet(ModelConfig(centre_head=True)).eval())
    ensemble = EnsembleNet(members)
    with torch.no_grad():
        mean = torch.stack([torch.sigmoid(m.dense_logits(x)) for m in members]).mean(0)
        averaged = torch.sigmoid(ensemble.dense_logits(x))
        assert len(ensemble(x, with_mask=True)) == 6
    torch.testing.assert_close(averaged, mean, atol=1e-5, rtol=1e-4)
    with pytest.raises(EnsembleError, match="centre heatmap"):
        EnsembleNet([members[0], NoduleNet(ModelConfig(centre_head=False))])


def test_the_centre_head_learns_where_the_nodules_are(tmp_path) -> None:
    from lungcad.core.dataset import load_cube_data

    # The tiny dataset's nodules are spheres at the cube centre; its negatives hold a tube.
    dataset = make_tiny_dataset(tmp_path / "d", n_patients=10, n_val=2)
    data = load_cube_data(*dataset)
    config = tiny_train_config(
        epochs=25, lr=1e-2, batch_size=8, model={**_tiny_model(), "centre_head": True}
    )
    Trainer(config, data, tmp_path / "m", progress=False).fit()
    net, _ = load_model(tmp_path / "m" / "checkpoints" / "last.pt")
    rows = data.subset("train").sort_values("cube_index")
    x = window_hu(
        torch.from_numpy(data.cubes[rows["cube_index"].to_numpy()])[:, None], (-1000, 400)
    )
    with torch.no_grad():
        heat = torch.sigmoid(net.dense_logits(x)[:, 1])
    nodule = torch.from_numpy(rows["label"].to_numpy() == 1)
    size = heat.shape[-1]
    peaks = np.array(np.unravel_index(heat.flatten(1).argmax(1).numpy(), heat.shape[1:])).T
    centre = (size - 1) / 2
    assert (np.abs(peaks[nodule.numpy()] - centre).max(axis=1) <= 2).mean() > 0.9
    # Nodules light the map up, the negatives' tubes do not.
    best = heat.flatten(1).amax(1)
    assert best[nodule].median() > 0.5 and best[~nodule].median() < 0.2


def _tiny_model() -> dict:
    return tiny_train_config().model.model_dump()
