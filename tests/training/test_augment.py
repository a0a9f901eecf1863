"""Batched augmentation on the device: seeded, label-preserving, air-padded, and the same
geometry as the per-sample MONAI transforms it replaces."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.transforms import BorderPad, Flip, Rotate90, SpatialCrop

from lungcad.config import AugmentConfig
from lungcad.core.dataset import load_cube_data
from lungcad.core.model.network import window_hu
from lungcad.training.augment import augment_batch, draw_augmentation
from lungcad.training.trainer import Trainer
from tests.conftest import tiny_train_config

WINDOW = (-1000.0, 400.0)


def _draws(n: int, seed: int = 0, **augment):
    return draw_augmentation(
        n, AugmentConfig(**augment), WINDOW, torch.Generator().manual_seed(seed)
    )


def _monai_chain(cube: np.ndarray, draws, i: int) -> np.ndarray:
    """The per-sample MONAI transforms with the batch's draws for sample ``i``."""
    s = draws.shift_mm
    size = cube.shape[-1]
    out = BorderPad(spatial_border=s, mode="constant")(cube) if s else cube
    start = draws.start[i].tolist()
    out = SpatialCrop(roi_start=start, roi_end=[v + size for v in start])(out)
    for axis in range(3):
        if draws.flip[i, axis]:
            out = Flip(spatial_axis=axis)(out)
    out = Rotate90(k=int(draws.rot90[i]), spatial_axes=(1, 2))(out)
    return np.asarray(out) + float(draws.offset[i])


@pytest.mark.parametrize("shift_mm", [0, 3])
def test_batch_matches_the_per_sample_monai_transforms(shift_mm) -> None:
    x = torch.rand(48, 1, 12, 12, 12, generator=torch.Generator().manual_seed(1))
    draws = _draws(48, shift_mm=shift_mm)
    assert set(draws.rot90.tolist()) == {0, 1, 2, 3} and draws.flip.any() and not draws.flip.all()
    out = augment_batch(x, draws)
    assert out.shape == x.shape
    for i in range(len(x)):
        np.testing.assert_array_equal(out[i].numpy(), _monai_chain(x[i].numpy(), draws, i))


def test_a_marked_voxel_moves_where_the_draws_say() -> None:
    size, s = 16, 4
    draws = _draws(64, seed=3, shift_mm=s, hu_jitter=0.0)
    x = torch.zeros(64, 1, size, size, size)
    z0, y0, x0 = 5, 2, 11
    x[:, 0, z0, y0, x0] = 1.0
    out = augment_batch(x, draws)
    for i in range(64):
        # shift: the content moves by shift - start along each axis
        z, y, xx = (c + s - int(st) for c, st in zip((z0, y0, x0), draws.start[i]))
        inside = all(0 <= c < size for c in (z, y, xx))
        if not inside:  # moved out of the cube: nothing of it is left
            assert out[i].sum() == 0
            continue
        fz, fy, fx = draws.flip[i].tolist()
        z, y, xx = size - 1 - z if fz else z, size - 1 - y if fy else y, size - 1 - xx if fx else xx
        for _ in range(int(draws.rot90[i])):  # one counter-clockwise quarter turn in (y, x)
            y, xx = size - 1 - xx, y
        assert out[i].sum() == 1 and out[i, 0, z, y, xx] == 1, (i, draws.start[i])


def test_padding_is_air_and_offsets_are_bounded() -> None:
    s, jitter = 4, 20.0
    draws = _draws(200, seed=5, shift_mm=s, hu_jitter=jitter, flip=False, rot90=False)
    tissue = window_hu(torch.full((200, 1, 16, 16, 16), 100, dtype=torch.int16), WINDOW)
    out = augment_batch(tissue, draws) - draws.offset[:, None, None, None, None]
    for i in range(200):
        shift_z = s - int(draws.start[i, 0])  # content moved by this many slices along z
        air = out[i, 0, :shift_z] if shift_z > 0 else out[i, 0, shift_z:]
        assert shift_z == 0 or (air == 0).all()  # air (0 after windowing), not edge copies
    assert draws.offset.abs().max() <= jitter / (WINDOW[1] - WINDOW[0])
    assert 0.7 < (draws.offset != 0).float().mean() < 0.9  # applied with p 0.8


def test_draws_are_seeded_and_switch_off() -> None:
    a, b, c = _draws(100, seed=7), _draws(100, seed=7), _draws(100, seed=8)
    for field in ("start", "flip", "rot90", "offset"):
        assert torch.equal(getattr(a, field), getattr(b, field))
    assert not torch.equal(a.rot90, c.rot90)
    off = _draws(100, seed=7, flip=False, rot90=False, shift_mm=0, hu_jitter=0.0)
    x = torch.rand(100, 1, 8, 8, 8)
    assert torch.equal(augment_batch(x, off), x)


def test_epoch_batches_keep_labels_and_are_reproducible(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    # Each training cube's centre voxel encodes its row, so a batch tells which row it came
    # from; shifts stay under the marker's half-width so the centre still shows it.
    cubes = np.array(data.cubes)
    train = data.subset("train")
    for k, ci in enumerate(train["cube_index"]):
        cubes[ci, 12:20, 12:20, 12:20] = -1000 + 10 * k
    marked = type(data)(cubes, data.index, dataset_dir=data.dataset_dir)
    config = tiny_train_config(augment={"shift_mm": 2, "hu_jitter": 0.0, "lesion_share": 0.0})
    trainer = Trainer(config, marked, tmp_path / "m", progress=False)
    plan = trainer.on_epoch_start(1)
    seen = []
    for x, label, mal, has_mal, *_ in trainer.batches(plan):
        hu = x[:, 0, 16, 16, 16] * (WINDOW[1] - WINDOW[0]) + WINDOW[0]
        rows = torch.round((hu + 1000) / 10).long().tolist()
        seen += rows
        expect = train.iloc[rows]
        assert label.tolist() == expect["label"].tolist()
        assert has_mal.tolist() == expect["malignancy_mean"].notna().tolist()
        assert mal[has_mal].tolist() == pytest.approx(expect["malignancy_mean"].dropna().tolist())
    assert seen == plan.order[: len(seen)].tolist()  # the epoch's order, no row twice
    again = trainer.on_epoch_start(1)
    assert torch.equal(plan.order, again.order) and torch.equal(plan.draws.start, again.draws.start)
    assert not torch.equal(plan.order, trainer.on_epoch_start(2).order)


def test_synthetic_lesions_turn_negatives_into_positives_the_same_way_each_run(
    tiny_dataset, tmp_path
) -> None:
    data = load_cube_data(*tiny_dataset)
    config = tiny_train_config(augment={"lesion_share": 1.0})
    labels = []
    for run in ("a", "b"):
        trainer = Trainer(config, data, tmp_path / run, progress=False)
        plan = trainer.on_epoch_start(1)
        train = data.subset("train")
        seen = [
            (label, train["label"].to_numpy()[batch_rows])
            for batch_rows, (_, label, *_) in zip(
                plan.order.split(plan.batch_size), trainer.batches(plan)
            )
        ]
        labels.append(torch.cat([torch.as_tensor(label) for label, _ in seen]))
        became = sum(
            int(((label > 0.5) & (torch.as_tensor(was) == 0)).sum()) for label, was in seen
        )
        assert became > 0  # negatives with lung at their centre became lesions
    assert torch.equal(labels[0], labels[1])  # drawn from (seed, epoch, batch)
