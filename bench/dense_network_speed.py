"""Benchmark: the dense pass's network on a CPU, step by step, each fast path beside the
plain modules it replaces.

Times one pass of ``--patches`` 96^3 patches through ``NoduleNet.dense_logits`` (bf16
autocast and channels_last_3d where the CPU has native bf16, as the dense detector runs
it), then the three steps that have a faster path of the same sums, each both ways: the
backbone's 7^3 stride-2 stem (``conv1`` against ``blocked_conv``), its max pooling
(``maxpool`` against ``stem_pool``'s pairs), the mask's and the
centre's last levels (two blocks against ``_both_last_levels``), and the upsampling of
the logits (``F.interpolate`` against ``resize_trilinear``); last the heads on 48^3 cubes
in fp32 and in bf16. The network is the given checkpoint's (``--model``) or an untrained
one of ``--params``' architecture (``--random-model``: the same cost).

Usage:
    python bench/dense_network_speed.py --model models/best.pt [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import lungcad  # noqa: F401  (first, as in every lungcad command: its process settings)

# isort: split
import numpy as np
import torch
import torch.nn.functional as F

from lungcad.config import load_params
from lungcad.core.model.loading import load
from lungcad.core.model.network import (
    NoduleNet,
    blocked_conv,
    resize_trilinear,
    stem_pool,
)
from lungcad.core.model.predict import predict_hu_cubes
from lungcad.detection.dense import dense_amp


def _ms(fn, repeats: int) -> float:
    for _ in range(3):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default="models/best.pt")
    parser.add_argument("--random-model", action="store_true")
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--patches", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--json", default="")
    args = parser.parse_args()
    torch.manual_seed(0)
    if args.random_model:
        params = load_params(args.params)
        network, window = NoduleNet(params.train.model), tuple(params.train.window_hu)
    else:
        loaded = load(args.model, torch.device("cpu"))
        network, window = loaded.network, loaded.window
    network.eval()
    if not network.centres:
        raise SystemExit(f"{args.model}: no centre head; use a model of the defaults (params.yaml)")
    amp = dense_amp("auto", torch.device("cpu"))
    if amp is not None:
        network.to_channels_last()
    x = torch.rand(args.patches, 1, 96, 96, 96)
    layout = torch.channels_last_3d if amp is not None else torch.contiguous_format
    x = x.contiguous(memory_format=layout)
    b, decoder = network.backbone, network.decoder
    figures: dict[str, float] = {}
    with (
        torch.inference_mode(),
        torch.autocast("cpu", dtype=amp or torch.float32, enabled=amp is not None),
    ):
        figures["pass"] = _ms(lambda: network.dense_logits(x), args.repeats)
        low = x.to(amp) if amp is not None else x
        figures["stem_plain"] = _ms(lambda: b.conv1(x), args.repeats)
        padding = tuple(b.conv1.padding)
        figures["stem_blocked"] = _ms(
            lambda: blocked_conv(low, b.conv1.weight, b.conv1.bias, padding), args.repeats
        )
        stages = network.stages(x)
        stem = stages[0]
        figures["pool_plain"] = _ms(lambda: b.maxpool(stem), args.repeats)
        figures["pool_pairs"] = _ms(lambda: stem_pool(b.maxpool, stem), args.repeats)
        y = decoder.last_input(stages)
        figures["last_levels_two"] = _ms(
            lambda: (
                decoder.head(decoder.levels[-1](y)),
                decoder.centre_head(decoder.centre_level(y)),
            ),
            args.repeats,
        )
        figures["last_levels_one"] = _ms(lambda: decoder._both_last_levels(y), args.repeats)
        logits = decoder.last_level(stages)
        size = tuple(x.shape[2:])
        figures["upsample_trilinear"] = _ms(
            lambda: F.interpolate(logits, size=size, mode="trilinear"), args.repeats
        )
        figures["upsample_separable"] = _ms(lambda: resize_trilinear(logits, size), args.repeats)
    cubes = np.random.default_rng(0).integers(-1000, 400, (128, 48, 48, 48)).astype(np.int16)
    for name, dtype in (("heads_fp32", None), ("heads_bf16", amp)):
        if name == "heads_bf16" and amp is None:
            continue
        ms = _ms(
            lambda dtype=dtype: predict_hu_cubes(
                network, cubes, window, "cpu", 16, dtype, head_only=True
            ),
            2,
        )
        figures[f"{name}_per_cube"] = ms / len(cubes)
    summary = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "bf16": amp is not None,
        "patches_per_pass": args.patches,
        "ms": figures,
    }
    print(json.dumps(summary, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
