"""The process group of a ``torchrun`` launch and what the trainer needs from it.

``torchrun --nproc-per-node N -m lungcad.cli.main train ...`` (or ``lungcad train --nproc N``,
which runs that command) starts N copies of the command; each reads its rank from the
environment torchrun sets (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``) and joins the group:
NCCL when training on CUDA (process ``LOCAL_RANK`` takes GPU ``LOCAL_RANK``), gloo on CPUs.
Without those variables nothing is initialised and every helper is the single-process
identity, so the same code runs both ways.

Each process trains on its own shard of every epoch (``DistributedSampler``, reseeded per
epoch) with ``train.batch_size`` cubes per step: the global batch is N × ``batch_size``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DistributedSampler

#: How long a collective waits for a missing rank before failing (a dead rank is normally
#: reported sooner by torchrun, which stops the others).
TIMEOUT = timedelta(minutes=10)


@dataclass(frozen=True)
class DistContext:
    """Where this process stands in the group (one process: rank 0 of 1).

    Attributes:
        rank: this process's global rank.
        world_size: the number of processes.
        local_rank: the rank on this machine (the GPU it takes).
    """

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the process that logs, writes checkpoints and shows progress."""
        return self.rank == 0


def context_from_env() -> DistContext:
    """The context torchrun's environment describes (one process without it)."""
    return DistContext(
        int(os.environ.get("RANK", 0)),
        int(os.environ.get("WORLD_SIZE", 1)),
        int(os.environ.get("LOCAL_RANK", 0)),
    )


def init_process_group(device: str) -> DistContext:
    """Join torchrun's group (NCCL for ``device`` cuda or auto with CUDA, gloo otherwise).

    Args:
        device: the ``train.device`` setting (auto, cpu or cuda).
    """
    ctx = context_from_env()
    if not ctx.enabled or dist.is_initialized():
        return ctx
    cuda = device in ("auto", "cuda") and torch.cuda.is_available()
    if cuda:
        torch.cuda.set_device(ctx.local_rank)
    dist.init_process_group("nccl" if cuda else "gloo", timeout=TIMEOUT)
    return ctx


def destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def shard_order(n: int, seed: int, epoch: int, ctx: DistContext) -> torch.Tensor:
    """This rank's positions of an epoch over ``n`` rows: ``DistributedSampler`` shuffled
    with ``seed`` and reseeded with ``epoch``; shards are padded to equal length (a few
    rows are seen twice) so that every rank takes the same number of steps."""
    sampler = DistributedSampler(
        range(n), num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed
    )
    sampler.set_epoch(epoch)
    return torch.tensor(list(sampler), dtype=torch.long)


def all_sum(values: torch.Tensor, ctx: DistContext) -> torch.Tensor:
    """``values`` summed over the ranks (itself with one process)."""
    if ctx.enabled:
        values = values.clone()
        dist.all_reduce(values)
    return values


def gather_predictions(
    positions: np.ndarray, columns: tuple[np.ndarray, ...], n: int, ctx: DistContext
) -> tuple[np.ndarray, ...]:
    """Every rank's predictions for its ``positions`` of ``n`` rows, put back in row order
    on every rank (so validation metrics equal those of one process on the same weights)."""
    if not ctx.enabled:
        return columns
    parts: list = [None] * ctx.world_size
    dist.all_gather_object(parts, (positions, columns))
    out = [np.empty(n, dtype=np.float64) for _ in columns]
    seen = np.zeros(n, dtype=bool)
    for pos, cols in parts:
        seen[pos] = True
        for full, col in zip(out, cols):
            full[pos] = col
    if not seen.all():
        raise RuntimeError(f"validation gathered {seen.sum()} of {n} rows from the ranks")
    return tuple(out)


def broadcast_buffers(model: torch.nn.Module, ctx: DistContext) -> None:
    """Give every rank rank 0's buffers (BatchNorm running statistics). DDP broadcasts them
    before each training forward, but that forward then updates each rank's copy with its own
    batch: without this, ranks would validate with statistics that differ from rank 0's, which
    is what the checkpoint holds."""
    if ctx.enabled:
        for buffer in model.buffers():
            dist.broadcast(buffer, src=0)


def barrier(ctx: DistContext) -> None:
    if ctx.enabled:
        dist.barrier()


def launch(nproc: int, argv: list[str]) -> int:
    """Run ``torchrun --nproc-per-node nproc -m lungcad.cli.main *argv`` on this machine;
    its exit status (non-zero when any rank failed; torchrun stops the others)."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
    cmd += ["--nproc-per-node", str(nproc), "-m", "lungcad.cli.main", *argv]
    return subprocess.run(cmd).returncode
