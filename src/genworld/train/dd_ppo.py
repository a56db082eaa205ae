"""DD-PPO (Wijmans et al. 2019; Kim & Joo 2023, Algorithm 1): PPO with agnostic networks over
several envs, the envs sharded over processes (:mod:`genworld.train.distributed`).

``genworld train agnostic-ppo`` runs :func:`train_agnostic_ppo`, under ``torchrun`` or in one
process: each process steps its held envs, DDP all-reduces the gradients, and the held envs'
statistics rows are synced after every iteration (:class:`PPOTrainer`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

from genworld.config import apply, check_scale
from genworld.eval.rollout import first_episode_seed
from genworld.train.distributed import (
    Dist,
    barrier,
    ddp_wrapper,
    gather_objects,
    setup,
    shard,
    sync_held_rows,
    teardown,
)


@dataclass(frozen=True)
class AgnosticPPORunConfig:
    """A DD-PPO run: PPO with agnostic networks over several envs, sharded over processes."""

    envs: tuple[str, ...] = ()
    """genworld env names or Gymnasium ids; empty = the PPO preset's."""
    scale: str = "mini"
    """tiny | mini | full: the PPO preset (``genworld.algos.ppo.PRESETS``)."""
    total_timesteps: int = 0
    """Env steps over all envs and processes; 0 = the preset's."""
    checkpoint_every: int = 10
    """Iterations between checkpoints."""
    eval_episodes: int = 5
    """Deterministic episodes per env at the end."""
    seed: int = 0
    """Seeds the networks' initialisation, PPOConfig.seed (env resets, sampling, minibatches)
    and the final evaluation's episodes."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """torch threads per process."""
    ppo: dict[str, Any] = field(default_factory=dict)
    """PPOConfig overrides (nested dicts for ``net``)."""


def ppo_run_config(**fields: Any) -> AgnosticPPORunConfig:
    """The run config of ``fields``; ``total_timesteps`` *given* as 0 (or negative, or absurd)
    is an error: 0 stands for "the preset's" only when it is left out."""
    from genworld.train.dd_iql import check_given_counts

    check_given_counts(fields, ("total_timesteps", "checkpoint_every", "eval_episodes"))
    cfg = apply(AgnosticPPORunConfig(), fields)
    check_scale(cfg.scale)
    return cfg


def ppo_config(cfg: AgnosticPPORunConfig):
    from genworld.algos.ppo import PRESETS, PPOConfig
    from genworld.algos.registry import resolve_config

    check_scale(cfg.scale)
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
    from genworld.utils.io import atomic_write_json, check_or_write_config, claim_folder

    ppo_cfg = ppo_config(cfg)
    d = setup(cfg.device)
    folder_claim = contextlib.ExitStack()
    try:
        torch.set_num_threads(cfg.threads)
        out = Path(out)
        if d.is_main:  # the main process holds the folder for all of them
            folder_claim.enter_context(claim_folder(out, "genworld train agnostic-ppo"))
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
        returns = agent.evaluate(cfg.eval_episodes, first_episode_seed(cfg.seed))
        merged = {k: v for part in gather_objects(returns, d) for k, v in part.items()}
        agent.close()
        if not d.is_main:
            return {}
        result = {name: float(np.mean(r)) for name, r in merged.items()}
        atomic_write_json(out / "eval.json", {"iteration": agent.iteration, "returns": result})
        return result
    finally:
        folder_claim.close()
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
