"""Benchmark: training throughput (cubes/s) of the network a params file trains.

The network, batch, AMP, channels_last, compile and input path are those of the params
file's ``train`` section (default ``params.yaml``; ``--params configs/real-lidc-gpu.yaml``
for the GPU profiles), so the figures are those of the configuration users run. Per
variant it reports:

- in-memory: one batch already on the device, stepped again and again (the ceiling);
- pipeline: the trainer's own batches (resident or streamed cubes, windowing and
  augmentation on the device) feeding the same steps;
- epoch: whole epochs of ``Trainer.train_epoch`` + ``validate`` as ``lungcad train`` runs
  them: the training phase's rate ("epoch"), and training cubes over the whole epoch's
  time, validation included ("e2e"), with the GPU utilisation NVML saw during training
  (when ``nvidia-ml-py`` is installed) and the peak GPU memory;
- test s: predicting the test split as ``lungcad evaluate`` does (its inference part).

Usage:
    python bench/train_throughput.py [--params params.yaml] [--dataset data/processed \
        --splits data/splits.json] [--batch-size N] [--steps 20] [--epochs 2] [--matrix]

``--matrix`` adds variants around the profile: AMP off, channels_last flipped,
torch.compile on, cubes streamed instead of resident. For a dataset the size of the real
LIDC cube set without running the phantom, see ``bench/make_synthetic_dataset.py``.
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from lungcad.config import TrainConfig, load_params
from lungcad.core.dataset import load_cube_data
from lungcad.core.model.predict import predict_rows
from lungcad.training.telemetry import amp_dtype_name
from lungcad.training.trainer import Trainer


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _step_rate(trainer: Trainer, batches, steps: int, warmup: int) -> float:
    trainer.model.train()
    done, start = 0, 0.0
    for i, batch in enumerate(itertools.islice(batches, warmup + steps)):
        if i == warmup:
            _sync(trainer.device)
            start = time.perf_counter()
        trainer.train_step(batch)
        done += len(batch[0]) if i >= warmup else 0
    _sync(trainer.device)
    return done / (time.perf_counter() - start)


def _pipeline(trainer: Trainer):
    for epoch in itertools.count():
        yield from trainer.batches(trainer.on_epoch_start(epoch))


def _variants(config: TrainConfig, matrix: bool) -> list[tuple[str, TrainConfig]]:
    out = [("profile", config)]
    if matrix:
        out += [
            ("amp off", config.replace(amp="off")),
            (
                f"channels_last {not config.channels_last}".lower(),
                config.replace(channels_last=not config.channels_last),
            ),
            ("streamed cubes", config.replace(data_on_device="false")),
        ]
        if not config.compile:
            out.append(("torch.compile", config.replace(compile=True)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--dataset", default="data/processed")
    parser.add_argument("--splits", default="data/splits.json")
    parser.add_argument("--batch-size", type=int, help="override train.batch_size")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2, help="whole epochs timed per variant")
    parser.add_argument("--matrix", action="store_true", help="variants around the profile")
    args = parser.parse_args()

    config = load_params(args.params).train
    if args.batch_size:
        config = config.replace(batch_size=args.batch_size)
    if config.device == "cuda" and not torch.cuda.is_available():
        config = config.replace(device="cpu")
        print("no CUDA device: running the profile on the CPU")
    data = load_cube_data(args.dataset, args.splits)
    m = config.model
    print(
        f"params {args.params}: widths {list(m.widths)} blocks {list(m.blocks)}, batch "
        f"{config.batch_size}, amp {config.amp}, channels_last {config.channels_last}, "
        f"compile {config.compile}, data_on_device {config.data_on_device}; "
        f"{len(data.subset('train'))} train / {len(data.subset('val'))} val cubes"
    )
    header = (
        f"{'variant':22s} {'dtype':5s} {'resident':8s} {'in-memory':>9s} {'pipeline':>9s} "
        f"{'epoch':>7s} {'e2e':>7s} {'epoch s':>8s} {'val s':>6s} {'GPU %':>6s} "
        f"{'peak GB':>7s} {'test s':>6s}"
    )
    for label, variant in _variants(config, args.matrix):
        trainer = Trainer(variant, data, "/tmp/lungcad-bench", progress=False)
        if label == "profile":
            device = trainer.device
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
            print(f"device: {name} ({torch.get_num_threads()} threads); torch {torch.__version__}")
            print(
                f"{header}\n{'':37s}{'cubes/s':>9s} {'cubes/s':>9s} {'cubes/s':>7s} {'cubes/s':>7s}"
            )
        trainer.on_train_start()
        pipeline = _step_rate(trainer, _pipeline(trainer), args.steps, args.warmup)
        batch = next(trainer.batches(trainer.on_epoch_start(0)))
        in_memory = _step_rate(trainer, itertools.repeat(batch), args.steps, args.warmup)
        epochs = []
        for epoch in range(args.epochs):
            metrics = trainer.train_epoch(epoch, trainer.on_epoch_start(epoch))
            metrics.update(trainer.validate())
            epochs.append(metrics)
        last = epochs[-1]  # the first may hold compilation / cuDNN autotuning
        test = data.subset("test")
        _sync(trainer.device)
        started = time.perf_counter()  # the inference part of `lungcad evaluate`
        predict_rows(
            trainer.model,
            data.cubes,
            test,
            variant.window_hu,
            trainer.device,
            variant.eval_batch_size,
            trainer.amp_dtype,
        )
        test_s = time.perf_counter() - started
        epoch_s = last["epoch_train_s"] + last["epoch_val_s"]
        print(
            f"{label:22s} {amp_dtype_name(trainer.amp_dtype):5s} "
            f"{str(trainer.data_on_device).lower():8s} {in_memory:9.1f} {pipeline:9.1f} "
            f"{last['train_cubes_per_s']:7.1f} {len(data.subset('train')) / epoch_s:7.1f} "
            f"{epoch_s:8.2f} {last['epoch_val_s']:6.2f} "
            f"{last.get('gpu_util_mean_pct', float('nan')):6.1f} "
            f"{last.get('gpu_peak_mem_gb', float('nan')):7.2f} {test_s:6.2f}"
        )
        if args.epochs > 2:
            total = sum(e["epoch_train_s"] + e["epoch_val_s"] for e in epochs)
            print(f"{'':22s} {args.epochs} epochs (training + validation): {total:.1f} s")
        del trainer


if __name__ == "__main__":
    main()
