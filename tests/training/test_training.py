"""Training on real cubes flowing through the real loop: overfitting, AMP, resume, failures."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from scipy import stats

from lungcad.config import ModelConfig, TrainConfig, load_params
from lungcad.core.dataset import DatasetMissingError, TrainTargets, load_cube_data
from lungcad.core.masks import read_masks
from lungcad.core.metrics import reader_nll, safe_auc
from lungcad.core.model.attributes import ATTRIBUTES, attribute_targets, to_lidc_scale
from lungcad.core.model.loading import load_model
from lungcad.core.model.network import SPREAD_FLOOR, NoduleNet
from lungcad.core.model.predict import predict_hu_cubes, predict_rows
from lungcad.training.losses import MultiTaskLoss
from lungcad.training.trainer import NonFiniteLossError, Trainer
from tests.conftest import make_tiny_dataset, tiny_train_config


def test_network_outputs_and_256_d_feature() -> None:
    net = NoduleNet(ModelConfig(attributes=False))
    logit, malignancy, attributes, spread = net(torch.zeros(2, 1, 64, 64, 64))
    assert logit.shape == (2,) and malignancy.shape == (2,) and attributes.shape == (2, 0)
    assert spread.shape == (2, 0) and net.output_names == ()
    assert net.features(torch.zeros(1, 1, 64, 64, 64)).shape == (1, 256)
    assert "attribute_head.weight" not in net.state_dict()  # older checkpoints still load
    assert net.state_dict()["malignancy_head.weight"].shape == (1, 256)


@pytest.mark.parametrize("hierarchical", [False, True])
def test_attribute_head_shapes(hierarchical: bool) -> None:
    model = ModelConfig(widths=(4, 8, 8, 16), attributes=True, hierarchical=hierarchical)
    net = NoduleNet(model)
    logit, malignancy, attributes, spread = net(torch.zeros(3, 1, 32, 32, 32))
    assert logit.shape == (3,) and malignancy.shape == (3,) and spread.shape == (3, 0)
    assert attributes.shape == (3, len(ATTRIBUTES)) == (3, 9)
    assert net.output_names == tuple(a.name for a in ATTRIBUTES)
    assert net.malignancy_head.in_features == 256 + (9 if hierarchical else 0)
    with pytest.raises(ValueError, match="hierarchical: true needs attributes"):
        ModelConfig(hierarchical=True, attributes=False)
    with pytest.raises(ValueError, match="lambda_attr > 0 needs"):
        TrainConfig(lambda_attr=0.5, model=ModelConfig(attributes=False))


def test_attribute_targets_on_their_lidc_scales(tiny_dataset) -> None:
    index = load_cube_data(*tiny_dataset).index.sort_values("cube_index")
    targets, mask = attribute_targets(index)
    nodule = index["label"].to_numpy() == 1
    assert mask[nodule].all() and not mask[~nodule].any()  # negatives carry none
    assert np.all(targets[~nodule] == 0)
    for i, a in enumerate(ATTRIBUTES):
        expected = (index.loc[nodule, a.column] - (a.low + a.high) / 2) / ((a.high - a.low) / 2)
        np.testing.assert_allclose(targets[nodule, i], expected, rtol=1e-5)
    # Back on the LIDC scales: the centre of each range, and clipped at its ends.
    ones = np.ones((1, len(ATTRIBUTES)), np.float32)
    np.testing.assert_allclose(to_lidc_scale(0 * ones)[0], [a.centre for a in ATTRIBUTES])
    np.testing.assert_allclose(to_lidc_scale(5 * ones)[0], [a.high for a in ATTRIBUTES])
    assert to_lidc_scale(ones)[0, 1] == 4  # internal structure: 1-4
    with pytest.raises(KeyError, match="mean_texture"):
        attribute_targets(index.drop(columns="mean_texture"))


def test_attribute_loss_only_on_nodule_values() -> None:
    config = TrainConfig(lambda_attr=2.0, model=ModelConfig(attributes=True))
    logit, mal = torch.tensor([2.0, -2.0]), torch.tensor([3.0, 3.0])
    label, target, has = torch.tensor([1.0, 0.0]), torch.tensor([3.0, 1.0]), torch.tensor([1, 0])
    pred = torch.zeros(2, 9, requires_grad=True)
    attr_target = torch.zeros(2, 9)
    attr_target[0, 0] = 1.0  # the nodule's one value off by 1 -> smooth L1 0.5
    attr_target[1] = 5.0  # the negative's values are far off but masked out
    has_attr = torch.zeros(2, 9, dtype=torch.bool)
    has_attr[0, 0] = True
    total, det, m, attr, _ = MultiTaskLoss(config)(
        logit, mal, label, target, has.bool(), None, pred, attr_target, has_attr
    )
    assert attr.item() == pytest.approx(0.5)
    assert total.item() == pytest.approx(det.item() + 0.5 * m.item() + 2.0 * 0.5)
    attr.backward()
    assert pred.grad[1].abs().sum() == 0 and pred.grad[0, 1:].abs().sum() == 0
    assert pred.grad[0, 0] != 0


def test_the_attribute_head_learns_an_attribute_that_the_image_shows(tmp_path) -> None:
    # The tiny dataset's sphere radius grows with the malignancy rating; make the texture
    # rating that same number, so that it is a known function of the image.
    dataset = make_tiny_dataset(tmp_path / "d", n_patients=10, n_val=2)
    index = pd.read_csv(dataset[0] / "index.csv")
    index["mean_texture"] = index["malignancy_mean"]
    index.to_csv(dataset[0] / "index.csv", index=False)
    data = load_cube_data(*dataset)
    model = {"widths": [4, 8, 8, 16], "feature_dim": 16, "dropout": 0.0, "attributes": True}
    config = tiny_train_config(epochs=25, lr=1e-2, batch_size=8, lambda_attr=1.0, model=model)
    result = Trainer(config, data, tmp_path / "m", progress=False).fit()
    assert result.history[-1]["train_loss_attr"] < 0.5 * result.history[0]["train_loss_attr"]
    net, _ = load_model(tmp_path / "m" / "checkpoints" / "last.pt")
    train_mean = data.subset("train").query("label == 1")["mean_texture"].mean()
    for split in ("train", "val"):
        rows = data.subset(split).query("label == 1")
        pred = predict_rows(net, data.cubes, rows, config.window_hu, "cpu")
        assert stats.spearmanr(pred["mean_texture"], pred["pred_texture"])[0] > 0.9, split
        mae = (pred["pred_texture"] - pred["mean_texture"]).abs().mean()
        assert mae < 0.5 * (pred["mean_texture"] - train_mean).abs().mean(), split


def test_malignancy_loss_only_on_nodules_unless_asked() -> None:
    logit = torch.tensor([2.0, -2.0])
    mal = torch.tensor([3.0, 5.0])
    label = torch.tensor([1.0, 0.0])
    target = torch.tensor([4.0, 1.0])
    has = torch.tensor([True, False])
    total, det, m, attr, _ = MultiTaskLoss(TrainConfig(lambda_det=1, lambda_mal=2))(
        logit, mal, label, target, has
    )
    assert attr.item() == 0  # no attribute head
    assert m.item() == pytest.approx(0.5)  # smooth L1 of |3 - 4| = 1 -> 0.5; negative ignored
    assert total.item() == pytest.approx(det.item() + 2 * 0.5)
    _, _, m_all, _, _ = MultiTaskLoss(TrainConfig(mal_on="all"))(logit, mal, label, target, has)
    assert m_all.item() == pytest.approx((0.5 + 3.5) / 2)
    _, focal, _, _, _ = MultiTaskLoss(TrainConfig(det_loss="focal"))(logit, mal, label, target, has)
    assert 0 < focal.item() < det.item()  # focal down-weights the easy examples


def test_tiny_model_overfits_a_handful_of_cubes(tmp_path) -> None:
    data = load_cube_data(*make_tiny_dataset(tmp_path / "d", n_patients=4))  # 8 train cubes
    assert len(data.subset("train")) == 8
    config = tiny_train_config(
        epochs=30,
        lr=1e-2,
        batch_size=8,
        augment={"flip": False, "rot90": False, "shift_mm": 0, "hu_jitter": 0.0},
    )
    result = Trainer(config, data, tmp_path / "m", progress=False).fit()
    losses = [h["train_loss_det"] for h in result.history]
    assert losses[-1] < 0.3 * losses[0], losses
    assert result.history[-1]["val_auc"] == 1.0


def test_one_training_step_under_cpu_autocast(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    trainer = Trainer(tiny_train_config(amp="bf16", epochs=1), data, tmp_path / "m", progress=False)
    assert trainer.amp_dtype == torch.bfloat16 and trainer.device.type == "cpu"
    trainer.on_train_start()
    before = [p.detach().clone() for p in trainer.model.parameters()]
    batch = next(trainer.batches(trainer.on_epoch_start(0)))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert trainer.model(batch[0])[0].dtype == torch.bfloat16
    loss, *_ = trainer.train_step(batch)
    assert np.isfinite(loss.item())
    assert any(not torch.equal(a, b) for a, b in zip(before, trainer.model.parameters()))


class _Interrupt(Exception):
    pass


class _StopAfter:
    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        if epoch == self.epoch:
            raise _Interrupt

    def on_train_end(self, trainer, result) -> None:
        pass


@pytest.mark.parametrize("data_on_device,num_workers", [("true", 0), ("false", 0), ("false", 2)])
def test_resume_ends_with_the_same_model_as_an_uninterrupted_run(
    tiny_dataset, tmp_path, data_on_device, num_workers
) -> None:
    data = load_cube_data(*tiny_dataset)
    resident = tiny_train_config(epochs=3, data_on_device="true")
    config = resident.replace(data_on_device=data_on_device, num_workers=num_workers)
    straight = Trainer(resident, data, tmp_path / "a", progress=False).fit()
    interrupted = Trainer(config, data, tmp_path / "b", callbacks=[_StopAfter(2)], progress=False)
    assert interrupted.data_on_device == (data_on_device == "true")
    with pytest.raises(_Interrupt):
        interrupted.fit()
    resumed = Trainer(config, data, tmp_path / "b", progress=False).fit(resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    # Bit-identical to the uninterrupted run, whether the cubes were resident or streamed
    # by (persistent) DataLoader workers: every random draw is made from (seed, epoch).
    a = torch.load(straight.last_checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.last_checkpoint, weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key
    assert straight.history[-1]["val_auc"] == resumed.history[-1]["val_auc"]
    # The weight average is carried by the last checkpoint: best.pt is the same too.
    a = torch.load(straight.best_checkpoint, weights_only=True)["model"]
    b = torch.load(resumed.best_checkpoint, weights_only=True)["model"]
    for key in a:
        assert torch.equal(a[key], b[key]), key


class _KeepWeights:
    """Copies the weights at the end of every epoch."""

    def __init__(self) -> None:
        self.weights: dict[int, dict[str, torch.Tensor]] = {}

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        self.weights[epoch] = {k: v.clone() for k, v in trainer.model.state_dict().items()}

    def on_train_end(self, trainer, result) -> None:
        pass


def test_best_pt_holds_the_mean_of_the_last_epochs_weights(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    kept = _KeepWeights()
    config = tiny_train_config(epochs=4, average_last=2)
    result = Trainer(config, data, tmp_path / "m", callbacks=[kept], progress=False).fit()
    assert result.selected == "mean of epochs 3-4"
    best = torch.load(result.best_checkpoint, weights_only=True)
    assert best["selected"] == "mean of epochs 3-4"
    for key, value in best["model"].items():
        if "running_" in key or "num_batches" in key:
            continue  # batch-norm statistics: recomputed for the averaged weights
        mean = (kept.weights[3][key] + kept.weights[4][key]) / 2
        torch.testing.assert_close(value, mean, msg=key)
    # ... whose batch-norm statistics are their own, not those of either epoch.
    stats = [k for k in best["model"] if k.endswith("running_mean")]
    assert stats and all(not torch.equal(best["model"][k], kept.weights[4][k]) for k in stats)
    # The best validation epoch is kept beside it, as it was at that epoch.
    epoch = torch.load(tmp_path / "m" / "best_epoch.pt", weights_only=True)
    assert epoch["selected"] == f"epoch {result.best_epoch}"
    for key, value in epoch["model"].items():
        assert torch.equal(value, kept.weights[result.best_epoch][key]), key
    # best.pt's validation metric is the one of the model it holds.
    model, _ = load_model(result.best_checkpoint)
    val = data.subset("val").sort_values("cube_index")
    pred = predict_rows(model, data.cubes, val, config.window_hu, "cpu")
    auc = safe_auc(val["label"].to_numpy(), pred["nodule_prob"].to_numpy())
    assert best["selected_val"]["val_auc"] == pytest.approx(auc, abs=1e-6)
    assert result.best_metric == pytest.approx(best["selected_val"]["val_objective"])


def test_the_averaged_epochs_train_at_the_held_learning_rate(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    config = tiny_train_config(epochs=5, average_last=2, average_lr=0.25)
    result = Trainer(config, data, tmp_path / "m", progress=False).fit()
    lr = [h["lr"] for h in result.history]  # the rate each epoch trained at
    assert lr[0] == pytest.approx(config.lr)
    assert lr[0] > lr[1] > lr[2] > 0.25 * config.lr  # cosine, down to the held rate ...
    assert lr[3] == pytest.approx(0.25 * config.lr)  # ... held over the averaged epochs 4-5
    assert lr[4] == pytest.approx(0.25 * config.lr)
    # Without it: the cosine schedule over every epoch, down to 0 after the last.
    plain = tiny_train_config(epochs=5, average_last=2)
    lr = [h["lr"] for h in Trainer(plain, data, tmp_path / "p", progress=False).fit().history]
    assert lr[4] == pytest.approx(config.lr * 0.5 * (1 + np.cos(np.pi * 4 / 5)))


def test_best_epoch_selection_keeps_the_best_validation_epoch(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    kept = _KeepWeights()
    config = tiny_train_config(epochs=3, selection="best_epoch")
    result = Trainer(config, data, tmp_path / "m", callbacks=[kept], progress=False).fit()
    objectives = [h["val_objective"] for h in result.history]
    assert result.best_epoch == 1 + int(np.argmax(objectives))
    assert result.selected == f"epoch {result.best_epoch}"
    best = torch.load(result.best_checkpoint, weights_only=True)["model"]
    epoch = torch.load(tmp_path / "m" / "best_epoch.pt", weights_only=True)["model"]
    for key, value in best.items():
        assert torch.equal(value, kept.weights[result.best_epoch][key]), key
        assert torch.equal(epoch[key], value), key


def test_resume_refuses_a_checkpoint_of_other_settings(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    Trainer(tiny_train_config(epochs=1), data, tmp_path / "m", progress=False).fit()
    with pytest.raises(ValueError, match="other train settings"):
        Trainer(tiny_train_config(epochs=2), data, tmp_path / "m", progress=False).fit(resume=True)


def test_non_finite_loss_stops_with_a_clear_message(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    Trainer(tiny_train_config(epochs=1), data, tmp_path / "m", progress=False).fit()
    good = torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=True)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, batch 1.*last good checkpoint"):
        Trainer(
            tiny_train_config(epochs=1, lambda_mal=float("inf")),
            data,
            tmp_path / "m",
            progress=False,
        ).fit()
    kept = torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=True)
    assert kept["config"] == good["config"]  # the last good checkpoint is untouched


class _PoisonTarget:
    """After epoch ``epoch``, one training row's malignancy target becomes NaN."""

    def __init__(self, epoch: int, position: int) -> None:
        self.epoch, self.position = epoch, position

    def on_epoch_end(self, trainer, epoch, metrics) -> None:
        if epoch == self.epoch:
            trainer.train_targets.malignancy[self.position] = float("nan")
            trainer.train_targets.has_mal[self.position] = True

    def on_train_end(self, trainer, result) -> None:
        pass


def test_nan_in_the_middle_of_an_epoch_names_its_batch(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    # Host syncs only at the end of the epoch: the batch is still the first bad one.
    config = tiny_train_config(epochs=3, sync_every=1000)
    trainer = Trainer(config, data, tmp_path / "m", progress=False)
    plan = trainer.on_epoch_start(1)  # epoch 2's order: put the bad row in its third batch
    position = int(plan.order[2 * config.batch_size + 1])
    assert len(plan) == 4
    trainer.callbacks.append(_PoisonTarget(1, position))
    with pytest.raises(NonFiniteLossError, match=r"loss is nan .* at epoch 2, batch 3: "):
        trainer.fit()
    kept = torch.load(tmp_path / "m" / "checkpoints" / "last.pt", weights_only=True)
    assert kept["epochs_done"] == 1  # the last good checkpoint, finite weights
    assert all(torch.isfinite(v).all() for v in kept["model"].values() if v.is_floating_point())


def test_missing_dataset_names_the_stage_that_makes_it(tmp_path, tiny_dataset) -> None:
    with pytest.raises(DatasetMissingError, match="dvc repro preprocess"):
        load_cube_data(tmp_path / "nowhere", tiny_dataset[1])
    with pytest.raises(DatasetMissingError, match="dvc repro split"):
        load_cube_data(tiny_dataset[0], tmp_path / "splits.json")


def test_checkpoint_round_trip(tiny_dataset, tmp_path) -> None:
    data = load_cube_data(*tiny_dataset)
    result = Trainer(tiny_train_config(epochs=1), data, tmp_path / "m", progress=False).fit()
    model, config = load_model(result.best_checkpoint)
    assert config == tiny_train_config(epochs=1)
    assert model(torch.zeros(1, 1, 32, 32, 32))[0].shape == (1,)


@pytest.mark.parametrize("profile", ["real-lidc-gpu.yaml", "real-lidc-gpu-fast.yaml"])
def test_gpu_profiles_are_valid_train_settings(profile) -> None:
    from pathlib import Path

    repo = Path(__file__).parents[2]
    config = load_params(repo / "configs" / profile).train
    assert config.device == "cuda" and config.model.blocks == (2, 2, 2, 2)
    assert config.data_on_device == "auto" and not config.deterministic


def test_the_defaults_train_and_detect_for_the_sliding_window() -> None:
    from pathlib import Path

    repo = Path(__file__).parents[2]
    params = load_params(repo / "params.yaml")
    assert params.detect.detector == "dense" and params.train.seg_dice == "per_cube"
    assert params.train.augment.crop_size == 48 and params.train.seg_cubes == 0
    assert params.train.lambda_mal == 2.0 and params.train.lambda_seg == 2.0
    # findings scored by the centre heatmap (which the network draws) with the cube's
    # detection head
    assert params.train.model.centre_head and params.detect.score == "combined"
    # a finding's peaks read from its own cube: they do not depend on where the patches fall
    assert params.detect.peaks == "cube" and params.detect.overlap == 0.25
    assert params.detect.max_findings == 300  # the cube detector's candidate budget
    # each finding rated in the cube protocol's cubes, not the training crops
    assert params.detect.malignancy_cube == params.preprocess.cube_size == 64
    assert params.detect.patch == 96


def test_the_cubes_profile_trains_on_whole_cubes_for_the_cube_detector() -> None:
    from pathlib import Path

    params = load_params(Path(__file__).parents[2] / "configs" / "cubes.yaml")
    assert params.detect.detector == "cubes" and params.detect.threshold == 0.9
    # its detector scores whole cubes centred on candidates: it learns on whole cubes with
    # the nodule near the centre, and has no centre heatmap to score by
    assert params.train.augment.crop_size == 0 and params.train.augment.offcentre_share == 0.5
    assert not params.train.model.centre_head and params.detect.score == "peak"
    assert params.detect.max_findings == 0 and params.detect.malignancy_cube == 0
    assert (
        params.train.experiment
        != load_params(Path(__file__).parents[2] / "params.yaml").train.experiment
    )


def test_agreement_weighting_counts_nodules_the_readers_agree_on_more(tiny_dataset) -> None:
    rows = load_cube_data(*tiny_dataset).index.sort_values("cube_index").copy()
    rows.loc[rows["label"] == 1, "malignancy_std"] = np.where(
        np.arange((rows["label"] == 1).sum()) % 2 == 0, 0.0, 1.0
    )
    targets = TrainTargets(rows, "cpu", agreement_weights=True)
    nodule = torch.as_tensor(rows["label"].to_numpy() == 1)
    weights = targets.mal_weight[nodule]
    assert set(weights.tolist()) == {1.0, 0.5}  # 1 / (1 + std)
    assert torch.all(TrainTargets(rows, "cpu").mal_weight == 1)
    with pytest.raises(KeyError, match="malignancy_std"):
        TrainTargets(rows.drop(columns="malignancy_std"), "cpu", agreement_weights=True)

    # Two nodules off by 1 and by 3 (smooth L1 0.5 and 2.5), weighted 1 and 0.5.
    logit, label = torch.zeros(3), torch.tensor([1.0, 1.0, 0.0])
    mal, target = torch.tensor([3.0, 3.0, 3.0]), torch.tensor([4.0, 0.0, 1.0])
    has, weight = torch.tensor([True, True, False]), torch.tensor([1.0, 0.5, 1.0])
    _, _, m, _, _ = MultiTaskLoss(TrainConfig(mal_weighting="agreement"))(
        logit, mal, label, target, has, weight
    )
    assert m.item() == pytest.approx((0.5 * 1 + 2.5 * 0.5) / 1.5)


def test_spread_head_predicts_a_positive_sd_after_the_attributes() -> None:
    net = NoduleNet(ModelConfig(widths=(4, 8, 8, 16), attributes=True, spread=True))
    with torch.no_grad():
        net.malignancy_head.bias[1] = -50.0  # softplus -> 0: the floor holds
        _, malignancy, attributes, spread = net(torch.zeros(3, 1, 32, 32, 32))
    assert malignancy.shape == (3,) and attributes.shape == (3, 9) and spread.shape == (3, 1)
    assert torch.allclose(spread, torch.full((3, 1), SPREAD_FLOOR))
    assert net.output_names[-1] == "malignancy_sd" and len(net.output_names) == 10


def test_reader_likelihood_is_lowest_at_the_readers_mean_and_spread() -> None:
    # Three readers rated 2, 3, 4: mean 3, sd (ddof 0) sqrt(2/3). The closed form equals the
    # mean of the three readers' Gaussian negative log-likelihoods.
    ratings = torch.tensor([2.0, 3.0, 4.0])
    m, s = ratings.mean(), ratings.std(unbiased=False)
    grid_mu = torch.linspace(2, 4, 81)[:, None]
    grid_sd = torch.linspace(0.3, 2.0, 69)[None, :]
    nll = reader_nll(grid_mu, grid_sd, m, s)
    direct = torch.stack(
        [-torch.distributions.Normal(grid_mu, grid_sd).log_prob(r) for r in ratings]
    ).mean(0)
    torch.testing.assert_close(nll, direct)
    best = np.unravel_index(int(nll.argmin()), nll.shape)
    assert grid_mu[best[0], 0].item() == pytest.approx(3.0)
    assert grid_sd[0, best[1]].item() == pytest.approx(s.item(), abs=0.013)

    # In the multi-task loss: masked to nodules, and the negative's (absent) spread ignored.
    config = TrainConfig(lambda_mal=2.0, model=ModelConfig(spread=True))
    logit, label = torch.zeros(2), torch.tensor([1.0, 0.0])
    mal, target, has = torch.tensor([3.0, 5.0]), torch.tensor([3.0, 1.0]), torch.tensor([1, 0])
    spread, reader_sd = torch.tensor([[1.0], [0.1]]), torch.tensor([s.item(), 0.0])
    total, det, part, _, _ = MultiTaskLoss(config)(
        logit, mal, label, target, has.bool(), None, None, None, None, spread, reader_sd
    )
    expected = reader_nll(torch.tensor(3.0), torch.tensor(1.0), m, s)
    assert part.item() == pytest.approx(expected.item(), rel=1e-5)
    assert total.item() == pytest.approx(det.item() + 2.0 * part.item())
    with pytest.raises(KeyError, match="model.spread needs"):
        rows = pd.DataFrame({"malignancy_mean": [3.0], "label": [1]})
        TrainTargets(rows, "cpu", reader_spread=True)


def test_the_spread_head_learns_a_spread_that_the_image_shows(tmp_path) -> None:
    # Readers' disagreement as a known function of the image: nodules whose (tiny-dataset)
    # sphere is larger than the median were read with sd 1.2, the others unanimously.
    dataset = make_tiny_dataset(tmp_path / "d", n_patients=10, n_val=2)
    index = pd.read_csv(dataset[0] / "index.csv")
    nodule = index["label"] == 1
    large = index["malignancy_mean"] > index.loc[nodule, "malignancy_mean"].median()
    index["malignancy_std"] = np.where(nodule, np.where(large, 1.2, 0.0), np.nan)
    index.to_csv(dataset[0] / "index.csv", index=False)
    data = load_cube_data(*dataset)
    model = {"widths": [4, 8, 8, 16], "feature_dim": 16, "dropout": 0.0, "spread": True}
    config = tiny_train_config(epochs=25, lr=1e-2, batch_size=8, lambda_mal=1.0, model=model)
    Trainer(config, data, tmp_path / "m", progress=False).fit()
    net, _ = load_model(tmp_path / "m" / "checkpoints" / "last.pt")
    rows = data.subset("train").query("label == 1")
    pred = predict_rows(net, data.cubes, rows, config.window_hu, "cpu")
    disagreed = pred["malignancy_std"] > 0
    assert disagreed.any() and (~disagreed).any()
    # The disagreed-on nodules get the wider predicted spread, every one of them.
    assert (
        pred.loc[disagreed, "pred_malignancy_sd"].min()
        > pred.loc[~disagreed, "pred_malignancy_sd"].max()
    )
    assert pred.loc[disagreed, "pred_malignancy_sd"].mean() == pytest.approx(1.2, abs=0.4)


def test_the_decoder_learns_the_mask_the_image_shows(tmp_path) -> None:
    # The tiny dataset's nodules are bright spheres whose consensus mask is the sphere.
    dataset = make_tiny_dataset(tmp_path / "d", n_patients=10, n_val=2)
    data = load_cube_data(*dataset)
    config = tiny_train_config(epochs=25, lr=1e-2, batch_size=8)
    result = Trainer(config, data, tmp_path / "m", progress=False).fit()
    assert result.history[-1]["train_loss_seg"] < 0.7 * result.history[0]["train_loss_seg"]
    net, _ = load_model(tmp_path / "m" / "checkpoints" / "last.pt")
    rows = data.subset("train").sort_values("cube_index")
    index = rows["cube_index"].to_numpy()
    *_, predicted = predict_hu_cubes(net, data.cubes[index], config.window_hu, "cpu", masks=True)
    reference = read_masks(dataset[0], index, data.cubes.shape[-1])
    nodule = rows["label"].to_numpy() == 1
    inter = (predicted & reference).sum(axis=(1, 2, 3))
    dice = 2 * inter / np.maximum(predicted.sum(axis=(1, 2, 3)) + reference.sum(axis=(1, 2, 3)), 1)
    assert dice[nodule].mean() > 0.8, dice[nodule]
    assert (
        predicted[~nodule].sum(axis=(1, 2, 3)).mean() < 0.1 * reference[nodule].sum() / nodule.sum()
    )


def test_nodule_crops_move_within_the_nodule_radius_and_others_stay_near_the_centre() -> None:
    from lungcad.config import AugmentConfig
    from lungcad.training.augment import draw_augmentation

    config = AugmentConfig(
        crop_size=48, shift_mm=0, offcentre_margin_mm=3.0, negative_shift_mm=4, offcentre_share=1.0
    )
    radius = torch.tensor([5.0] * 500 + [float("nan")] * 500)
    draws = draw_augmentation(
        1000, config, (-1000.0, 400.0), torch.Generator().manual_seed(0), 64, radius
    )
    offset = (draws.start - 8).float()  # 8: the centred crop's start in a 64-voxel cube
    nodule_offset = offset[:500].norm(dim=1)
    assert nodule_offset.max() <= 8 + 1 and nodule_offset.mean() > 4  # within r + 3 (+rounding)
    assert offset[500:].abs().max() <= 4 and draws.crop == 48


def test_nodule_crops_not_moved_off_centre_stay_within_the_centred_shift() -> None:
    from lungcad.config import AugmentConfig
    from lungcad.training.augment import draw_augmentation

    config = AugmentConfig(
        crop_size=48,
        shift_mm=8,
        offcentre_margin_mm=16.0,
        offcentre_share=0.5,
        centred_shift_mm=2,
        negative_shift_mm=12,
    )
    radius = torch.tensor([5.0] * 1000 + [float("nan")] * 1000)
    draws = draw_augmentation(
        2000, config, (-1000.0, 400.0), torch.Generator().manual_seed(0), 64, radius
    )
    offset = (draws.start - 16).float()  # 16: the centred crop's start, padding included
    nodule = offset[:1000]
    near = nodule.abs().amax(dim=1) <= 2
    assert 0.4 < near.float().mean() < 0.7  # half held near the centre, a few moved ones too
    assert nodule.norm(dim=1).max() <= 21 + 1  # the others within r + 16 (+rounding)
    assert (nodule.norm(dim=1) > 12).float().mean() > 0.2
    negatives = offset[1000:]
    assert negatives.abs().max() <= 12 and (negatives.abs().amax(dim=1) > 2).float().mean() > 0.8

    # With the negatives' reach, the nodule cubes not moved share the negatives' draw.
    same = config.model_copy(update={"centred_shift_mm": 12, "offcentre_share": 0.0})
    generator = torch.Generator()
    with_nodules = draw_augmentation(
        2000, same, (-1000.0, 400.0), generator.manual_seed(0), 64, radius
    )
    without = draw_augmentation(
        2000,
        same,
        (-1000.0, 400.0),
        generator.manual_seed(0),
        64,
        torch.full((2000,), float("nan")),
    )
    assert torch.equal(with_nodules.start, without.start)


def test_per_cube_dice_weighs_a_missed_small_nodule_as_much_as_a_found_mass() -> None:
    from lungcad.training.losses import nodule_dice_loss

    target = torch.zeros(2, 1, 32, 32, 32)
    target[0, :, 4:28, 4:28, 4:28] = 1.0  # a 24 mm mass, outlined exactly
    target[1, :, 15:18, 15:18, 15:18] = 1.0  # a 3 mm nodule, missed
    logit = torch.where(target[:1].bool(), 20.0, -20.0).expand(2, -1, -1, -1, -1).clone()
    logit[1] = -20.0
    is_nodule = torch.ones(2)
    pooled = nodule_dice_loss(logit, target, is_nodule)
    per_cube = nodule_dice_loss(logit, target, is_nodule, per_cube=True)
    assert pooled < 0.01  # the mass's voxels swamp the missed nodule's 27
    assert per_cube == pytest.approx(0.5, abs=0.01)
    # Cubes without a nodule are left out of either mean.
    none = nodule_dice_loss(logit, target, torch.tensor([1.0, 0.0]), per_cube=True)
    assert none < 0.01
