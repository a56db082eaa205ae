"""Distributed training with torch.distributed DDP: the process group, its collectives and
world models under DDP; DD-IQL and DD-PPO use them (:mod:`genworld.train.dd_iql`,
:mod:`genworld.train.dd_ppo`).

Launch with ``torchrun --nproc-per-node N -m genworld train agnostic-iql ...`` (several nodes:
``--nnodes``, ``--node-rank``, ``--rdzv-endpoint``; docs/SCALING.md). The backend is gloo on CPU
and nccl on GPU (one GPU per process, ``cuda:LOCAL_RANK``). Without torchrun the same entry
point runs in one process with no process group at all.

Decentralised scheme (Kim & Joo 2023, §3.3, Algorithms 1 and 2; DD-PPO, Wijmans et al. 2019):
process ``r`` of ``W`` holds envs ``r, r+W, r+2W, ...`` (their datasets, or their simulators),
computes the loss on them only, and DDP averages the gradients during ``backward``; every process
then takes the same optimiser step, so parameters stay identical. Losses are scaled so that the
average equals the single-process gradient of the mean over all envs (tests/test_distributed.py:
2 gloo processes reach the single-process parameters). Per-env statistics (observation /
reward normalisers) are computed by the process holding the env and summed over processes. Rank 0
alone writes logs and checkpoints (atomic, :mod:`genworld.train.checkpoint`); a resumed run
reads rank 0's checkpoint and broadcasts it.

``genworld train agnostic-iql`` / ``agnostic-ppo`` run
:func:`genworld.train.dd_iql.train_agnostic_iql` / :func:`genworld.train.dd_ppo.train_agnostic_ppo`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from genworld.errors import GenworldError


# ---------------------------------------------------------------- process group and collectives
@dataclass(frozen=True)
class Dist:
    """This process's place in the job (world_size 1: no process group)."""

    rank: int
    world_size: int
    local_rank: int
    device: torch.device
    owns_group: bool = False
    """True when ``setup`` created the process group (``teardown`` destroys only that one)."""

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    # the training loop's view of the job (genworld.train.loop.Processes)
    def broadcast(self, obj: Any) -> Any:
        return broadcast_object(obj, self)

    def reduce(self, metrics: dict[str, Any]) -> dict[str, float]:
        return mean_over_processes(metrics, self)

    def barrier(self) -> None:
        barrier(self)


def setup(device: str = "auto") -> Dist:
    """Join the torchrun job described by RANK / WORLD_SIZE / LOCAL_RANK / MASTER_ADDR /
    MASTER_PORT (``env://``), or return a one-process Dist when WORLD_SIZE is absent or 1."""
    from genworld.utils.device import resolve_device

    world = int(os.environ.get("WORLD_SIZE", "1"))
    target = resolve_device(device)
    if world <= 1:
        return Dist(0, 1, 0, target)
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if target.type == "cuda":
        target = torch.device("cuda", local)
        torch.cuda.set_device(target)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group(
            "nccl" if target.type == "cuda" else "gloo", rank=rank, world_size=world
        )
    return Dist(rank, world, local, target, owns)


def teardown(d: Dist) -> None:
    if d.owns_group and dist.is_initialized():
        dist.destroy_process_group()


def shard(num_items: int, d: Dist) -> list[int]:
    """The envs (indices) this process holds: ``rank, rank + W, ...``."""
    if num_items < d.world_size:
        raise GenworldError(
            f"{num_items} env(s) for {d.world_size} processes: every process must hold at least "
            "one env; give more datasets/envs or fewer processes (--nproc-per-node)"
        )
    return list(range(d.rank, num_items, d.world_size))


def ddp_wrapper(d: Dist, find_unused_parameters: bool = False):
    """``module -> DistributedDataParallel(module)``; buffers are synced once at construction,
    not on every forward (the wrapped networks hold none that change; per-env statistics live
    outside them), inputs are placed by the caller."""
    from torch.nn.parallel import DistributedDataParallel

    def wrap(module: nn.Module) -> nn.Module:
        return DistributedDataParallel(
            module, forward_sync_buffers=False, find_unused_parameters=find_unused_parameters
        )

    return wrap


def sync_held_rows(buffers: list[torch.Tensor], held: list[int], d: Dist) -> None:
    """Per-env buffers (env axis first), each env's rows valid only in the process holding it:
    afterwards every process has every env's rows."""
    if d.world_size == 1:
        return
    for buf in buffers:
        mask = torch.zeros(buf.shape[0], dtype=buf.dtype, device=buf.device)
        mask[held] = 1
        buf.mul_(mask.view(-1, *([1] * (buf.dim() - 1))))
        dist.all_reduce(buf)


def broadcast_object(obj: Any, d: Dist) -> Any:
    if d.world_size == 1:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0, device=d.device if d.device.type == "cuda" else None)
    return box[0]


def gather_objects(obj: Any, d: Dist) -> list[Any]:
    if d.world_size == 1:
        return [obj]
    out: list[Any] = [None] * d.world_size
    dist.all_gather_object(out, obj)
    return out


def mean_over_processes(metrics: dict[str, Any], d: Dist) -> dict[str, float]:
    """Scalar metrics averaged over processes (one all-reduce)."""
    values = torch.stack(
        [torch.as_tensor(v, dtype=torch.float64).reshape(()) for v in metrics.values()]
    )
    if d.world_size > 1:
        values = values.to(d.device)
        dist.all_reduce(values)
        values = values / d.world_size
    return dict(zip(metrics, values.tolist(), strict=True))


def barrier(d: Dist) -> None:
    if d.world_size > 1:
        dist.barrier()


# ---------------------------------------------------------------- world models under DDP
class _WorldModelLoss(nn.Module):
    """DDP needs a ``forward``; a world model's training entry point is ``loss``."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, batch, generator):
        return self.model.loss(batch, generator)


def train_world_model_ddp(cfg, out: Path, *, show_progress: bool = False) -> Path:
    """``genworld train world-model`` under torchrun: one process = exactly
    :func:`genworld.train.world_model.train_world_model`; several = :func:`fit_world_model_ddp`."""
    from genworld.data.build import ensure_built
    from genworld.train.world_model import load_split, train_world_model

    d = setup(cfg.device)
    try:
        if d.world_size == 1:
            return train_world_model(cfg, out, show_progress=show_progress)
        cfg.validate()
        torch.set_num_threads(cfg.threads)
        if d.is_main:
            ensure_built(cfg.datasets, steps=cfg.dataset_steps or None)
        barrier(d)
        train, _ = load_split(cfg.datasets, cfg.holdout_fraction, cfg.seed)
        fit_world_model_ddp(cfg, train, Path(out), d, show_progress=show_progress)
        return Path(out)
    finally:
        teardown(d)


def fit_world_model_ddp(
    cfg, train, out: Path, d: Dist, *, show_progress: bool = False
) -> nn.Module:
    """:func:`~genworld.train.world_model.fit_world_model` with rank-sharded batches and a
    DDP-wrapped loss: the same loop, trainer, checkpoints and logs.

    Every process holds the whole training set and the same sampling generator, samples the
    global batch and keeps rows ``rank::W`` (so ``batch_size`` must divide by W, and the
    generator advances identically everywhere); the model's own noise draws use that shared
    generator too. The checkpoint layout is ``fit_world_model``'s, so ``load_trained`` and
    ``genworld eval world-model`` read DDP runs unchanged."""
    from genworld.data.normalization import Normalizer
    from genworld.train.world_model import WorldModelTrainer, build_model, fit_world_model

    cfg.validate_training()
    if cfg.batch_size % d.world_size:
        raise GenworldError(
            f"batch_size {cfg.batch_size} does not divide over {d.world_size} processes"
        )
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, train.specs, Normalizer.fit(train)).to(d.device)
    loss = _WorldModelLoss(model)
    wrapped = ddp_wrapper(d, find_unused_parameters=True)(loss) if d.world_size > 1 else loss

    def rows(batch):
        return type(batch)(
            **{k: v[d.rank :: d.world_size].to(d.device) for k, v in batch.__dict__.items()}
        )

    trainer = WorldModelTrainer(cfg, model, train, d.device, forward=wrapped, shard=rows)
    return fit_world_model(
        cfg, train, out, show_progress=show_progress, processes=d, trainer=trainer
    )
