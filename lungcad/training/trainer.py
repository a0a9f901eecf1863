"""The training loop: a plain template of hooks, with checkpoints every epoch and resume.

``Trainer.fit`` runs ``on_train_start``, then per epoch ``on_epoch_start``, ``train_epoch``
(``train_step`` per batch), ``validate`` and ``on_epoch_end``, and finally ``on_train_end``.
Experiment tracking and hyper-parameter pruning plug in as callbacks at epoch end. All
randomness of an epoch (shuffling, augmentation, dropout) is derived from (seed, epoch),
so ``resume=True`` after an interruption ends with the same weights as an uninterrupted
run on the CPU.

What ``best.pt`` holds is ``train.selection``: by default the weights averaged over the last
``train.average_last`` epochs (``torch.optim.swa_utils``; the batch-norm statistics are
recomputed on the train cubes once training ends), or the epoch with the best validation
metric. A best epoch chosen on a few dozen validation cubes moves from run to run with the
seed; the average of the schedule's tail does not depend on that choice.

A training step never waits for the device: losses are summed on it and the first
non-finite loss of an epoch is recorded there; the host looks every ``sync_every`` steps
and at the end of the epoch.

Under ``torchrun`` (``lungcad.distributed.ddp``) the model is wrapped in
``DistributedDataParallel``, each rank trains on its shard of the epoch, validation is split
over the ranks and gathered, and only rank 0 writes checkpoints, the history and progress.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.optim.swa_utils import AveragedModel, update_bn
from tqdm.auto import tqdm

from lungcad.config import TrainConfig
from lungcad.core.dataset import (
    CubeData,
    CubeStore,
    MaskStore,
    TrainTargets,
    resolve_data_on_device,
)
from lungcad.core.metrics import malignancy_metrics, safe_auc, validation_objective
from lungcad.core.model.checkpoint import load_checkpoint, save_checkpoint
from lungcad.core.model.loading import build_model, resolve_amp, resolve_device
from lungcad.core.model.network import window_hu
from lungcad.core.model.predict import predict_batches
from lungcad.core.outputs import write_text_atomic
from lungcad.distributed.ddp import (
    DistContext,
    all_sum,
    barrier,
    broadcast_buffers,
    gather_predictions,
    shard_order,
)
from lungcad.errors import LungcadError
from lungcad.training.augment import AugmentDraws, augment_batch, draw_augmentation
from lungcad.training.lesions import insert_lesions
from lungcad.training.losses import MultiTaskLoss
from lungcad.training.telemetry import EpochTelemetry

log = logging.getLogger(__name__)


class TrainingSetupError(LungcadError, ValueError):
    """Training cannot start as asked (empty splits, a checkpoint of other settings)."""


class NonFiniteLossError(LungcadError, RuntimeError):
    """The loss became NaN or infinite; training stopped, the last good checkpoint is kept."""


class BatchTooLargeError(LungcadError, RuntimeError):
    """CUDA ran out of memory at the configured batch size."""


class Callback(Protocol):
    def on_epoch_end(self, trainer: Trainer, epoch: int, metrics: dict[str, float]) -> None: ...

    def on_train_end(self, trainer: Trainer, result: TrainResult) -> None: ...


@dataclass
class EpochPlan:
    """An epoch's order of the training rows and their augmentation (drawn on the CPU)."""

    order: torch.Tensor
    draws: AugmentDraws
    batch_size: int
    drop_last: bool
    seed: int = 0  # the epoch's seed: synthetic lesions are drawn from (seed, batch)

    def __len__(self) -> int:
        n = len(self.order)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)


@dataclass
class TrainResult:
    """``best_epoch``: the best validation epoch; ``best_metric``: the validation metric of
    the model in ``best_checkpoint`` (the averaged weights under ``selection: average``);
    ``selected``: which model that is, in words."""

    best_epoch: int
    best_metric: float
    best_checkpoint: Path
    last_checkpoint: Path
    history: list[dict[str, float]] = field(default_factory=list)
    selected: str = ""


class _WithMask(nn.Module):
    """The network with its decoder on, so that recomputing the batch-norm statistics
    covers the decoder's layers too."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor):
        return self.net(x, with_mask=True)


class Trainer:
    """Trains a NoduleNet on the train split, selecting the best epoch on validation.

    Args:
        config: training settings.
        data: the cube dataset with splits.
        out_dir: receives ``checkpoints/last.pt`` (every epoch), ``best.pt`` (the model
            ``selection`` picks), ``best_epoch.pt`` (the best validation epoch) and
            ``history.json``.
        callbacks: objects with ``on_epoch_end`` / ``on_train_end`` (tracking, pruning).
        progress: show progress bars (rank 0 only).
        dist: this process's place in a torchrun group (one process by default).
    """

    def __init__(
        self,
        config: TrainConfig,
        data: CubeData,
        out_dir: str | Path,
        callbacks: list[Callback] | None = None,
        progress: bool = True,
        dist: DistContext | None = None,
    ) -> None:
        self.dist = dist or DistContext()
        self.config = config
        self.data = data
        self.out_dir = Path(out_dir)
        self.ckpt_dir = self.out_dir / "checkpoints"
        self.callbacks = list(callbacks or [])
        self.progress = progress and self.dist.is_main
        self.device = resolve_device(config.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
        self.amp_dtype = resolve_amp(config.amp, self.device)
        self.extra_state: dict[str, Any] = {}  # saved with checkpoints (e.g. MLflow run id)
        train_rows, val_rows = data.subset("train"), data.subset("val")
        if len(train_rows) == 0 or len(val_rows) == 0:
            raise TrainingSetupError(
                "the train and val splits must both hold cubes; re-run the split"
            )
        self.train_rows, self.val_rows = train_rows, val_rows
        index = np.concatenate([train_rows["cube_index"], val_rows["cube_index"]])
        nbytes = len(index) * int(np.prod(data.cubes.shape[1:])) * data.cubes.dtype.itemsize
        self.data_on_device = resolve_data_on_device(config.data_on_device, self.device, nbytes)
        self.train_store = CubeStore(
            data.cubes,
            train_rows["cube_index"].to_numpy(),
            self.device,
            self.data_on_device,
            config.num_workers,
        )
        self.val_store = CubeStore(
            data.cubes,
            np.sort(val_rows["cube_index"].to_numpy()),
            self.device,
            self.data_on_device,
            config.num_workers,
        )
        self.train_targets = TrainTargets(
            train_rows,
            self.device,
            config.model.attributes,
            agreement_weights=config.mal_weighting == "agreement",
            reader_spread=config.model.spread,
        )
        self.cube_size = int(data.cubes.shape[-1])
        self.segments = config.model.segmentation and config.lambda_seg > 0
        self.train_masks = None
        if self.segments:
            if data.dataset_dir is None:
                raise TrainingSetupError(
                    "train.lambda_seg > 0 needs the dataset's masks.npy: load the data with "
                    "load_cube_data, or set train.lambda_seg: 0"
                )
            self.train_masks = MaskStore(
                data.dataset_dir,
                train_rows["cube_index"].to_numpy(),
                self.cube_size,
                self.device,
            )
        # Each nodule cube's nodule radius (NaN elsewhere): how far off-centre its crop goes.
        diameter = train_rows.get("diameter_mm", pd.Series(np.nan, index=train_rows.index))
        self.train_radius_mm = torch.as_tensor(
            np.where(train_rows["label"].to_numpy() == 1, diameter.to_numpy(float) / 2, np.nan),
            dtype=torch.float32,
        )
        self.telemetry = EpochTelemetry(self.device)

    # -- hooks ---------------------------------------------------------------------------
    def on_train_start(self) -> None:
        torch.manual_seed(self.config.seed)
        if self.config.deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
            # Deterministic mode also fills every new tensor (NaN) to expose reads of
            # uninitialised memory: a debugging aid that took ~1/5 of each CPU step.
            torch.utils.deterministic.fill_uninitialized_memory = False
        torch.backends.cudnn.benchmark = not self.config.deterministic
        self.model = build_model(self.config, self.device)
        self.forward = self.model
        if self.dist.enabled:  # DDP broadcasts rank 0's initial weights to the others
            self.forward = torch.nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
        if self.config.compile:
            self.forward = torch.compile(self.forward)
        self.loss_fn = MultiTaskLoss(self.config)
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(),
            lr=self.config.lr,
            weight_decay=self.config.weight_decay,
            fused=True if self.device.type == "cuda" else None,  # one kernel for all params
        )
        self.averaged = AveragedModel(self.model) if self.config.selection == "average" else None
        self.scheduler = self.lr_schedule()
        use_scaler = self.device.type == "cuda" and self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_scaler)
        self.start_epoch, self.best_metric, self.best_epoch = 0, -math.inf, -1
        self.history: list[dict[str, float]] = []
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)

    def on_epoch_start(self, epoch: int) -> EpochPlan:
        seed = self.config.seed * 100_003 + epoch
        n = len(self.train_rows)
        if self.dist.enabled:  # each rank: its shard, its own dropout and augmentation
            seed = seed * 1_009 + self.dist.rank
            order = shard_order(n, self.config.seed, epoch, self.dist)
        torch.manual_seed(seed)  # dropout
        generator = torch.Generator().manual_seed(seed)
        if not self.dist.enabled:
            order = torch.randperm(n, generator=generator)
        draws = draw_augmentation(
            len(order),
            self.config.augment,
            self.config.window_hu,
            generator,
            self.cube_size,
            self.train_radius_mm[order],
        )
        return EpochPlan(
            order, draws, self.config.batch_size, len(order) > self.config.batch_size, seed
        )

    def batches(self, plan: EpochPlan):
        """(windowed, augmented cubes, label, malignancy target, malignancy mask and weight,
        attribute targets, attribute mask, readers' malignancy sd, the nodule masks moved
        with their cubes or None) per batch of ``plan``, all on the device."""
        draws = plan.draws.to(self.device)
        size = plan.batch_size
        stream = self.train_store.batches(plan.order, size, plan.drop_last)
        for i, (positions, cubes) in enumerate(stream):
            batch_draws = draws.take(slice(i * size, i * size + len(positions)))
            x = augment_batch(window_hu(cubes[:, None], self.config.window_hu), batch_draws)
            masks = None
            if self.train_masks is not None:
                masks = augment_batch(self.train_masks.take(positions), batch_draws, False)
            targets = self.train_targets.take(positions)
            if self.config.augment.lesion_share > 0:
                label, _, has_mal, _, _, has_attr, _ = targets
                insert_lesions(
                    x,
                    label,
                    has_mal,
                    has_attr,
                    masks,
                    self.config.augment.lesion_share,
                    self.config.window_hu,
                    torch.Generator().manual_seed(plan.seed * 10_007 + i),
                )
            yield (x, *targets, masks)

    def train_step(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One optimiser step on a batch already on the device; returns the (total,
        detection, malignancy, attribute, segmentation) losses as device tensors (no host
        sync)."""
        x, label, mal_target, has_mal, mal_weight, attr_target, has_attr, reader_sd, masks = batch
        with torch.autocast(
            self.device.type,
            dtype=self.amp_dtype or torch.float32,
            enabled=self.amp_dtype is not None,
        ):
            rows = None
            if masks is not None and 0 < self.config.seg_cubes < len(x):
                # the nodule cubes first, then others at random (seeded: the epoch's RNG)
                order = label + torch.rand(len(label), device=label.device) * 0.5
                rows = torch.topk(order, self.config.seg_cubes).indices
                masks, seg_label = masks.index_select(0, rows), label.index_select(0, rows)
            else:
                seg_label = label
            logit, malignancy, attributes, spread, *mask_logit = self.forward(
                x, with_mask=masks is not None, mask_rows=rows
            )
        loss, det, mal, attr, seg = self.loss_fn(
            logit,
            malignancy,
            label,
            mal_target,
            has_mal,
            mal_weight,
            attributes,
            attr_target,
            has_attr,
            spread,
            reader_sd,
            mask_logit[0] if mask_logit else None,
            masks,
            seg_label,
            mask_logit[1] if len(mask_logit) > 1 else None,
        )
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.optimizer)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        return loss.detach(), det.detach(), mal.detach(), attr.detach(), seg.detach()

    def _raise_if_non_finite(self, first_bad: torch.Tensor, bad_parts: torch.Tensor, epoch: int):
        step = int(first_bad.item())  # the host sync
        if step < 0:
            return
        loss, det, mal, attr, seg = bad_parts.tolist()
        raise NonFiniteLossError(
            f"loss is {loss} (detection {det}, malignancy {mal}, attributes {attr}, "
            f"segmentation {seg}) at epoch "
            f"{epoch + 1}, "
            f"batch {step + 1}: training stopped; the last good checkpoint is "
            f"{self.ckpt_dir / 'last.pt'}. Lower train.lr or check the data."
        )

    def train_epoch(self, epoch: int, plan: EpochPlan) -> dict[str, float]:
        self.model.train()
        sums = torch.zeros(5, device=self.device)  # loss, det, mal, attrs, seg x cubes
        first_bad = torch.full((), -1, dtype=torch.long, device=self.device)
        bad_parts = torch.zeros(5, device=self.device)
        n = 0
        bar = tqdm(
            total=len(plan),
            desc=f"epoch {epoch + 1}/{self.config.epochs}",
            unit="batch",
            leave=False,
            disable=not self.progress,
        )
        self.telemetry.start()
        for step, batch in enumerate(self.batches(plan)):
            try:
                parts = torch.stack(self.train_step(batch))
            except torch.cuda.OutOfMemoryError as exc:
                raise BatchTooLargeError(
                    f"CUDA out of memory at batch size {self.config.batch_size}: lower "
                    "train.batch_size (or enable train.amp)"
                ) from exc
            size = len(batch[0])
            n += size
            sums += parts * size
            newly_bad = (first_bad < 0) & ~torch.isfinite(parts[0])
            first_bad = torch.where(newly_bad, step, first_bad)
            bad_parts = torch.where(newly_bad, parts, bad_parts)
            if (step + 1) % self.config.sync_every == 0:
                self._raise_if_non_finite(first_bad, bad_parts, epoch)
                bar.set_postfix(loss=f"{sums[0].item() / n:.4f}")
            bar.update()
        bar.close()
        self._raise_if_non_finite(first_bad, bad_parts, epoch)
        totals = all_sum(torch.cat([sums, torch.tensor([n], device=self.device)]), self.dist)
        sums, n = totals[:5], int(totals[5].item())  # over all ranks
        names = ("train_loss", "train_loss_det", "train_loss_mal", "train_loss_attr")
        metrics = dict(zip((*names, "train_loss_seg"), (sums / max(n, 1)).tolist()))
        if not self.model.n_attributes:
            metrics.pop("train_loss_attr")
        if not self.segments:
            metrics.pop("train_loss_seg")
        return {**metrics, **self.telemetry.stop(n)}

    def validate(self, model: nn.Module | None = None) -> dict[str, float]:
        """Validation metrics of ``model`` (the one being trained by default)."""
        model = self.model if model is None else model
        started = time.perf_counter()
        broadcast_buffers(model, self.dist)  # validate (and save) rank 0's statistics
        n = len(self.val_store)
        order = torch.arange(self.dist.rank, n, self.dist.world_size)  # all rows on one rank
        prob, mal = predict_batches(
            model,
            (x for _, x in self.val_store.batches(order, self.config.eval_batch_size)),
            self.config.window_hu,
            self.device,
            self.amp_dtype,
        )
        prob, mal = gather_predictions(order.numpy(), (prob, mal), n, self.dist)
        rows = self.val_rows.sort_values("cube_index").assign(nodule_prob=prob, malignancy_pred=mal)
        auc = safe_auc(rows["label"].to_numpy(), rows["nodule_prob"].to_numpy())
        nodules = rows[rows["label"] == 1]
        mm = malignancy_metrics(
            nodules["malignancy_mean"].to_numpy(), nodules["malignancy_pred"].to_numpy()
        )
        return {
            "val_auc": auc,
            "val_mae": mm["mae"],
            "val_pearson": mm["pearson"],
            "val_objective": validation_objective(auc, mm["mae"]),
            "epoch_val_s": time.perf_counter() - started,
        }

    def selection_value(self, metrics: dict[str, float]) -> float:
        name = self.config.select_metric
        value = -metrics["val_mae"] if name == "neg_val_mae" else metrics[name]
        return -math.inf if math.isnan(value) else value

    def lr_schedule(self) -> torch.optim.lr_scheduler.LRScheduler:
        """Cosine annealing over the epochs; with ``average_lr`` (and ``selection:
        average``) it falls to ``average_lr`` x ``lr`` by the first averaged epoch and holds."""
        held = self.config.average_lr
        if held is None or self.averaged is None:
            return torch.optim.lr_scheduler.CosineAnnealingLR(
                self.optimizer, T_max=self.config.epochs
            )
        falling = self.first_averaged_epoch - 1  # epochs before the first averaged one

        def share(epoch: int) -> float:
            if epoch >= falling:
                return held
            return held + (1 - held) * 0.5 * (1 + math.cos(math.pi * epoch / falling))

        return torch.optim.lr_scheduler.LambdaLR(self.optimizer, share)

    @property
    def first_averaged_epoch(self) -> int:
        """The first (1-based) of the epochs ``selection: average`` averages."""
        return max(1, self.config.epochs - self.config.average_last + 1)

    def on_epoch_end(self, epoch: int, metrics: dict[str, float]) -> None:
        self.history.append({"epoch": epoch + 1, **metrics})
        value = self.selection_value(metrics)
        improved = value > self.best_metric
        if improved:
            self.best_metric, self.best_epoch = value, epoch + 1
        if self.averaged is not None and epoch + 1 >= self.first_averaged_epoch:
            self.averaged.update_parameters(self.model)
        if self.dist.is_main:
            state = self.state_dict(epoch + 1)
            save_checkpoint(state, self.ckpt_dir / "last.pt")
            if improved:
                state = {**state, "selected": f"epoch {epoch + 1}"}
                save_checkpoint(state, self.out_dir / "best_epoch.pt")
                if self.averaged is None:
                    save_checkpoint(state, self.out_dir / "best.pt")
            write_text_atomic(
                self.out_dir / "history.json", json.dumps(self.history, indent=2), "the history"
            )
            summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            best = " *best" if improved else ""
            log.info(f"epoch {epoch + 1}/{self.config.epochs} {summary}{best}")
        barrier(self.dist)  # no rank runs ahead of the checkpoint it would resume from
        for cb in self.callbacks:
            cb.on_epoch_end(self, epoch + 1, metrics)

    # -- state -------------------------------------------------------------------------
    def state_dict(self, epochs_done: int) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(),
            "epochs_done": epochs_done,
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "history": self.history,
            "averaged": None if self.averaged is None else self.averaged.state_dict(),
            "config": self.config.to_dict(),
            "cut_settings": self.data.cut_settings,
            "extra": self.extra_state,
            "torch_version": torch.__version__,
        }

    def load_state(self, path: Path) -> None:
        state = load_checkpoint(path, self.device)
        if state["config"] != self.config.to_dict():
            raise TrainingSetupError(
                f"{path} was written with other train settings; remove it or drop --resume"
            )
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.scaler.load_state_dict(state["scaler"])
        self.start_epoch = state["epochs_done"]
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.history = list(state["history"])
        if self.averaged is not None:
            self.averaged.load_state_dict(state["averaged"])
        self.extra_state = dict(state.get("extra", {}))

    def resumable_state(self) -> dict[str, Any] | None:
        """The ``extra`` state of an existing last checkpoint (e.g. its MLflow run id)."""
        path = self.ckpt_dir / "last.pt"
        if not path.exists():
            return None
        return load_checkpoint(path).get("extra", {})

    def fit(self, resume: bool = False) -> TrainResult:
        self.on_train_start()
        last = self.ckpt_dir / "last.pt"
        if resume and last.exists():
            self.load_state(last)
            log.info("resuming from %s after epoch %d", last, self.start_epoch)
        started = time.perf_counter()
        for epoch in range(self.start_epoch, self.config.epochs):
            plan = self.on_epoch_start(epoch)
            metrics = self.train_epoch(epoch, plan)
            metrics["lr"] = self.optimizer.param_groups[0]["lr"]
            self.scheduler.step()
            metrics.update(self.validate())
            self.on_epoch_end(epoch, metrics)
        selected, selected_metric = f"epoch {self.best_epoch}", self.best_metric
        if self.averaged is not None:
            selected, selected_metric = self.finish_average()
        result = TrainResult(
            self.best_epoch,
            selected_metric,
            self.out_dir / "best.pt",
            last,
            self.history,
            selected,
        )
        log.info(
            "trained %d epochs in %.0f s; best epoch %d (%s=%.4f); best.pt: %s (%.4f)"
            + ("" if self.dist.is_main else f" (rank {self.dist.rank})"),
            self.config.epochs - self.start_epoch,
            time.perf_counter() - started,
            self.best_epoch,
            self.config.select_metric,
            self.best_metric,
            selected,
            selected_metric,
        )
        for cb in self.callbacks:
            cb.on_train_end(self, result)
        return result

    def finish_average(self) -> tuple[str, float]:
        """Recomputes the averaged weights' batch-norm statistics on the train cubes (HU
        window, no augmentation), validates them and writes them as ``best.pt``; returns
        (what they are, their validation metric)."""
        n = len(self.train_store)
        order = torch.arange(n)
        batches = (
            window_hu(x[:, None], self.config.window_hu)
            for _, x in self.train_store.batches(order, self.config.eval_batch_size)
        )
        update_bn(batches, _WithMask(self.averaged.module), self.device)
        metrics = self.validate(self.averaged.module)
        first, last = self.first_averaged_epoch, self.config.epochs
        selected = f"mean of epochs {first}-{last}" if first < last else f"epoch {last}"
        value = self.selection_value(metrics)
        if self.dist.is_main:
            state = {
                **self.state_dict(self.config.epochs),
                "model": self.averaged.module.state_dict(),
                "selected": selected,
                "selected_val": metrics,
            }
            save_checkpoint(state, self.out_dir / "best.pt")
            summary = " ".join(f"{k}={v:.4f}" for k, v in metrics.items())
            log.info(f"{selected} averaged: {summary}")
        return selected, value
