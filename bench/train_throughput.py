"""Benchmark: training throughput (cubes/s) of the default network.

Variants: fp32 vs AMP (bf16 autocast; fp16 + GradScaler on CUDA), channels_last_3d and
torch.compile where asked, each fed either by the real input pipeline (memory-mapped
cubes.npy -> MONAI augmentation -> DataLoader) or by a synthetic batch already in memory on
the device. If the real-data rate is close to the synthetic one, the input pipeline is not
the bottleneck.

Usage:
    python bench/train_throughput.py --dataset data/processed --splits data/splits.json \
        [--steps 8] [--batch-size 16] [--compile] [--channels-last]
"""

from __future__ import annotations

import argparse
import time

import torch

from lungcad.training.config import TrainConfig
from lungcad.training.data import load_cube_data
from lungcad.training.trainer import Trainer, resolve_amp


def _run(trainer: Trainer, batches, steps: int, warmup: int) -> float:
    trainer.model.train()
    done, start = 0, None
    for i, batch in enumerate(batches):
        if i == warmup:
            if trainer.device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        trainer.train_step(batch, 0, i)
        if i >= warmup:
            done += len(batch[0])
        if i + 1 >= warmup + steps:
            break
    if trainer.device.type == "cuda":
        torch.cuda.synchronize()
    return done / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dataset", default="data/processed")
    parser.add_argument("--splits", default="data/splits.json")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--channels-last", action="store_true")
    parser.add_argument(
        "--skip-amp", action="store_true", help="skip the AMP variant (slow on CPUs without bf16)"
    )
    args = parser.parse_args()

    data = load_cube_data(args.dataset, args.splits)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    name = (
        torch.cuda.get_device_name()
        if device == "cuda"
        else f"CPU ({torch.get_num_threads()} threads)"
    )
    print(
        f"device: {name}; torch {torch.__version__}; batch {args.batch_size}; "
        f"{args.steps} timed steps after {args.warmup} warm-up"
    )
    amp = "auto" if device == "cuda" else "bf16"
    fastest = amp if device == "cuda" else "off"  # CPU autocast is only a fallback
    variants = [("fp32", "off", False, False), ("amp", amp, False, False)]
    if args.skip_amp:
        variants.pop(1)
    if args.channels_last:
        variants.append(("channels_last_3d", fastest, True, False))
    if args.compile:
        variants.append(("torch.compile", fastest, False, True))
    print(f"{'variant':24s} {'amp dtype':10s} {'real data':>10s} {'synthetic':>10s}  cubes/s")
    for label, amp, channels_last, compile_ in variants:
        config = TrainConfig(
            batch_size=args.batch_size,
            amp=amp,
            device=device,
            channels_last=channels_last,
            compile=compile_,
            num_workers=args.workers,
            deterministic=False,
        )
        trainer = Trainer(config, data, "/tmp/lungcad-bench", progress=False)
        trainer.on_train_start()
        real = _run(trainer, _cycle(trainer), args.steps, args.warmup)
        batch = next(iter(trainer.on_epoch_start(0)))
        synthetic_batch = tuple(t.to(device) for t in batch)
        synthetic = _run(trainer, _repeat(synthetic_batch), args.steps, args.warmup)
        dtype = resolve_amp(amp, trainer.device)
        print(
            f"{label:24s} {str(dtype).replace('torch.', '') if dtype else 'fp32':10s} "
            f"{real:10.1f} {synthetic:10.1f}"
        )


def _cycle(trainer: Trainer):
    epoch = 0
    while True:
        yield from trainer.on_epoch_start(epoch)
        epoch += 1


def _repeat(batch):
    while True:
        yield batch


if __name__ == "__main__":
    main()
