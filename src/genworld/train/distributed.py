"""Distributed training with torch.distributed DDP: DD-IQL, DD-PPO and world models.

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

CLI hook: ``add_agnostic_parser(train_subparsers)`` adds ``agnostic-iql`` and ``agnostic-ppo`` to
``genworld train``; ``python -m genworld.train.distributed agnostic-iql ...`` works on its own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from genworld.errors import GenworldError

SCALES = ("tiny", "mini", "full")


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


def _resume(out: Path, d: Dist) -> tuple[int, dict] | None:
    """Rank 0 reads the newest intact checkpoint and broadcasts it."""
    from genworld.train.checkpoint import resume_point

    return broadcast_object(resume_point(out / "checkpoints") if d.is_main else None, d)


# ---------------------------------------------------------------- DD-IQL
@dataclass(frozen=True)
class AgnosticIQLRunConfig:
    """A DD-IQL run: IQL with agnostic networks over several datasets, sharded over processes."""

    datasets: tuple[str, ...] = ()
    """Dataset ids (one env each); empty = the scale's default."""
    scale: str = "mini"
    """tiny | mini | full: the agent preset and the run budget below."""
    steps: int = 0
    """Gradient updates; 0 = the scale's budget."""
    eval_every: int = 0
    """Updates between evaluations + checkpoints; 0 = the scale's."""
    eval_episodes: int = 0
    """Episodes per env per evaluation; 0 = the scale's."""
    log_every: int = 0
    """Updates between ``metrics.jsonl`` records; 0 = the scale's."""
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    """torch threads per process."""
    agent: dict[str, Any] = field(default_factory=dict)
    """AgnosticIQLConfig overrides (nested dicts for ``net``)."""
    dataset_steps: int = 0
    """Transitions per dataset when a missing one is built; 0 = the scale's (tiny: 2,000,
    mini/full: the dataset's default size)."""


IQL_BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "datasets": ("halfcheetah-random", "hopper-random", "walker2d-random"),
        "steps": 20,
        "eval_every": 10,
        "eval_episodes": 1,
        "log_every": 5,
        "dataset_steps": 2_000,
    },
    "mini": {
        "datasets": ("halfcheetah-medium", "hopper-medium", "walker2d-medium"),
        "steps": 10_000,
        "eval_every": 2_000,
        "eval_episodes": 5,
        "log_every": 100,
    },
    "full": {
        "datasets": ("halfcheetah-medium", "hopper-medium", "walker2d-medium"),
        "steps": 1_000_000,
        "eval_every": 50_000,
        "eval_episodes": 10,
        "log_every": 1_000,
    },
}


def resolve_iql_run(cfg: AgnosticIQLRunConfig) -> AgnosticIQLRunConfig:
    """Fill the zero / empty fields from the scale's budget (a new frozen config)."""
    from dataclasses import replace

    from genworld.data.ids import parse_dataset_id

    if cfg.scale not in SCALES:
        raise GenworldError(f"--scale {cfg.scale!r} is unknown: choose tiny, mini or full")
    budget = IQL_BUDGETS[cfg.scale]
    filled = {k: v for k, v in budget.items() if not getattr(cfg, k)}
    cfg = replace(cfg, **filled)
    if len({parse_dataset_id(x).env for x in cfg.datasets}) != len(cfg.datasets):
        raise GenworldError("--datasets names one env twice; give one dataset per env")
    return cfg


def global_statistics(local, held: list[int], specs, d: Dist, normalize_reward: bool = True):
    """The per-env observation normaliser and IQL reward scales of *all* envs: each process
    fits its held envs' rows, the rows are summed over processes."""
    from genworld.algos.iql import reward_scales
    from genworld.data.normalization import Normalizer

    num_envs, obs_max = len(specs), max(s.obs_dim for s in specs)
    fitted = Normalizer.fit(local)
    norm = Normalizer(num_envs, obs_max)
    stats = [torch.zeros(num_envs, obs_max), torch.zeros(num_envs, obs_max)]
    stats += [torch.zeros(num_envs) for _ in range(3)]
    scales = reward_scales(local) if normalize_reward else torch.ones(local.num_envs)
    for i, g in enumerate(held):
        w = specs[g].obs_dim
        stats[0][g, :w], stats[1][g, :w] = fitted.obs_mean[i, :w], fitted.obs_std[i, :w]
        stats[2][g], stats[3][g], stats[4][g] = (
            fitted.reward_mean[i],
            fitted.reward_std[i],
            scales[i],
        )
    if d.world_size > 1:
        for s in stats:
            dist.all_reduce(s)
    norm.obs_mean.copy_(stats[0])
    norm.obs_std.copy_(torch.where(stats[1] > 0, stats[1], torch.ones_like(stats[1])))
    norm.reward_mean.copy_(stats[2])
    norm.reward_std.copy_(stats[3])
    return norm, stats[4]


def build_dd_iql(local, specs, held: list[int], d: Dist, scale: str, seed: int, overrides=None):
    """The AgnosticIQL agent of this process (``local`` = the held envs' data), DDP-wrapped
    when there are several processes."""
    from genworld.algos.agnostic_iql import PRESETS, AgnosticIQL, AgnosticIQLConfig
    from genworld.algos.registry import resolve_config

    ctx = SimpleNamespace(scale=scale, overrides=dict(overrides or {}))
    cfg = resolve_config(AgnosticIQLConfig, PRESETS, ctx)
    norm, scales = global_statistics(local, held, specs, d, cfg.normalize_reward)
    torch.manual_seed(seed)  # identical initial weights everywhere (DDP also broadcasts rank 0's)
    agent = AgnosticIQL(
        local, cfg, d.device, specs=specs, env_ids=held, normalizer=norm, reward_scale=scales
    )
    if d.world_size > 1:
        agent.use_ddp(ddp_wrapper(d), d.world_size)
    return agent


def train_agnostic_iql(
    cfg: AgnosticIQLRunConfig, out: Path, *, show_progress: bool = False
) -> list[dict]:
    """DD-IQL on ``cfg.datasets`` (one or several processes); resumable from ``out``. Returns
    the evaluation records on rank 0 (``[]`` on the others)."""
    from genworld.data.build import ensure_built
    from genworld.data.ids import parse_dataset_id
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.utils.io import check_or_write_config

    cfg = resolve_iql_run(cfg)
    d = setup(cfg.device)
    try:
        torch.set_num_threads(cfg.threads)
        out = Path(out)
        if d.is_main:
            check_or_write_config(out, cfg)
        barrier(d)
        specs = [parse_dataset_id(x).spec for x in cfg.datasets]
        held = shard(len(specs), d)
        # each process builds the missing datasets it holds (distinct ids)
        ensure_built(
            [cfg.datasets[i] for i in held],
            steps=cfg.dataset_steps or None,
            show_progress=show_progress,
        )
        local = MultiEnvDataset.from_minari([cfg.datasets[i] for i in held])
        agent = build_dd_iql(local, specs, held, d, cfg.scale, cfg.seed, cfg.agent)
        return _offline_loop(agent, cfg, specs, held, out, d, show_progress)
    finally:
        teardown(d)


def _offline_loop(agent, cfg, specs, held, out: Path, d: Dist, show_progress: bool) -> list[dict]:
    from genworld.train.loop import AgentTrainer, Hook, read_eval, run_loop

    def log(step: int, metrics: dict) -> dict:
        return {**d.reduce(metrics), "processes": d.world_size}

    hooks = (
        Hook(cfg.log_every, log, log="metrics.jsonl", rate="time/updates_per_s"),
        Hook(
            cfg.eval_every, lambda step, m: _evaluate_held(agent, specs, held, cfg, d), "eval.jsonl"
        ),
    )
    run_loop(
        "dd-iql",
        AgentTrainer(agent),
        out,
        steps=cfg.steps,
        seed=cfg.seed,
        checkpoint_every=cfg.eval_every,
        hooks=hooks,
        show_progress=show_progress,
        processes=d,
        unit="update",
    )
    return read_eval(out) if d.is_main else []


def _evaluate_held(agent, specs, held, cfg, d: Dist) -> dict[str, float]:
    """Each process runs its held envs' episodes; rank 0 gets everything."""
    from genworld.eval.rollout import evaluate_agent
    from genworld.train.loop import eval_record

    global_idx = torch.tensor(held, device=d.device)

    def act(obs, local_idx):
        return agent.act(obs, global_idx[local_idx.to(d.device)])

    held_specs = [specs[g] for g in held]
    returns = evaluate_agent(act, held_specs, cfg.eval_episodes, cfg.seed * 1000)
    merged = {k: v for part in gather_objects(returns, d) for k, v in part.items()}
    return eval_record(specs, merged)


# ---------------------------------------------------------------- DD-PPO
@dataclass(frozen=True)
class AgnosticPPORunConfig:
    """A DD-PPO run: PPO with agnostic networks over several envs, sharded over processes."""

    envs: tuple[str, ...] = ()
    """genworld env names or Gymnasium ids; empty = the PPO preset's."""
    scale: str = "mini"
    total_timesteps: int = 0
    """Env steps over all envs and processes; 0 = the preset's."""
    checkpoint_every: int = 10
    """Iterations between checkpoints."""
    eval_episodes: int = 5
    """Deterministic episodes per env at the end."""
    seed: int = 0
    device: str = "auto"
    threads: int = 1
    ppo: dict[str, Any] = field(default_factory=dict)
    """PPOConfig overrides (nested dicts for ``net``)."""


def ppo_config(cfg: AgnosticPPORunConfig):
    from genworld.algos.ppo import PRESETS, PPOConfig
    from genworld.algos.registry import resolve_config

    if cfg.scale not in SCALES:
        raise GenworldError(f"--scale {cfg.scale!r} is unknown: choose tiny, mini or full")
    overrides = dict(cfg.ppo)
    overrides["seed"] = cfg.seed
    if cfg.envs:
        overrides["envs"] = tuple(cfg.envs)
    if cfg.total_timesteps:
        overrides["total_timesteps"] = cfg.total_timesteps
    return resolve_config(PPOConfig, PRESETS, SimpleNamespace(scale=cfg.scale, overrides=overrides))


def train_agnostic_ppo(
    cfg: AgnosticPPORunConfig, out: Path, *, show_progress: bool = False
) -> dict:
    """DD-PPO (Algorithm 1): each process steps its held envs, gradients are all-reduced;
    resumable from ``out``. Returns the final evaluation on rank 0 (``{}`` elsewhere)."""
    from genworld.algos.ppo import PPO
    from genworld.train.loop import Hook, run_loop
    from genworld.utils.io import atomic_write_json, check_or_write_config

    ppo_cfg = ppo_config(cfg)
    d = setup(cfg.device)
    try:
        torch.set_num_threads(cfg.threads)
        out = Path(out)
        if d.is_main:
            check_or_write_config(out, cfg, extra={"resolved": ppo_cfg})
        barrier(d)
        held = shard(len(ppo_cfg.envs), d)
        torch.manual_seed(cfg.seed)
        agent = PPO(ppo_cfg, d.device, env_ids=held)
        if d.world_size > 1:
            agent.use_ddp(ddp_wrapper(d, agent.mixed_heads), d.world_size)
        steps_per_iteration = ppo_cfg.num_steps * ppo_cfg.num_envs * len(ppo_cfg.envs)

        def log(iteration: int, metrics: dict) -> dict:
            record = _merge_ppo_metrics(gather_objects(metrics, d))
            record["global_step"] = iteration * steps_per_iteration
            return {**record, "processes": d.world_size}

        hook = Hook(
            1, log, log="metrics.jsonl", rate="charts/SPS", rate_per_step=steps_per_iteration
        )
        run_loop(
            "dd-ppo",
            PPOTrainer(agent, held, d),
            out,
            steps=agent.num_iterations,
            seed=cfg.seed,
            checkpoint_every=cfg.checkpoint_every,
            hooks=(hook,),
            show_progress=show_progress,
            processes=d,
            check=False,  # a PPO iteration's charts may be NaN (no episode finished yet)
            unit="iteration",
        )
        returns = agent.evaluate(cfg.eval_episodes, cfg.seed * 1000)
        merged = {k: v for part in gather_objects(returns, d) for k, v in part.items()}
        agent.close()
        if not d.is_main:
            return {}
        result = {name: float(np.mean(r)) for name, r in merged.items()}
        atomic_write_json(out / "eval.json", {"iteration": agent.iteration, "returns": result})
        return result
    finally:
        teardown(d)


class PPOTrainer:
    """PPO as a loop trainer: a step is one iteration (rollouts of the held envs, then the
    updates, gradients all-reduced under DDP); the held envs' statistics rows are synced."""

    def __init__(self, agent, held: list[int], d: Dist):
        self.agent, self.held, self.d = agent, held, d

    def step(self, generator: torch.Generator) -> dict[str, float]:
        metrics = self.agent.iterate()
        sync_held_rows(self.agent.stat_buffers(), self.held, self.d)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"ppo": self.agent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["ppo"])


def _merge_ppo_metrics(parts: list[dict[str, float]]) -> dict[str, float]:
    """Loss metrics averaged over processes; per-env charts taken from the process holding it."""
    merged: dict[str, float] = {}
    for key in {k for p in parts for k in p}:
        values = [p[key] for p in parts if key in p]
        merged[key] = float(np.mean(values))
    return dict(sorted(merged.items()))


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
