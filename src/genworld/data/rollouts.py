"""On-policy rollout storage for online agents (PPO) over the copies of several envs: per-env
seeded random streams (an env's draws do not depend on which process holds it), the step
buffers, running reward scaling, GAE advantages, and per-env views and minibatch rows."""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from genworld.envs.groups import EnvGroup
from genworld.nn.agnostic import RunningObsNorm

SEED_STRIDE = 0x9E3779B97F4A7C15
"""Mixes an env index into an iteration's seed (golden-ratio constant, splitmix64)."""


def seed_stream(seed: int, key: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed + (key + 1) * SEED_STRIDE) % 2**63)


def stream_draws(
    streams: Sequence[torch.Generator], copies: int, act_max: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """This step's noise, each env's rows from its own stream (shard-independent)."""
    noise = [torch.randn(copies, act_max, generator=s) for s in streams]
    uniform = [torch.rand(copies, 1, generator=s) for s in streams]
    return torch.cat(noise).to(device), torch.cat(uniform).to(device)


def rollout_buffer(
    num_steps: int, columns: torch.Tensor, obs_max: int, act_max: int
) -> dict[str, torch.Tensor]:
    """Zeroed ``(T, C, ...)`` storage of ``x`` (network inputs), ``actions``, ``logp``,
    ``rewards``, ``dones`` and ``values`` for ``num_steps`` steps of the env copies whose envs
    are ``columns (C,)`` (on their device)."""
    T, C, device = num_steps, len(columns), columns.device
    return {
        "x": torch.zeros(T, C, obs_max, device=device),
        "actions": torch.zeros(T, C, act_max, device=device),
        **{k: torch.zeros(T, C, device=device) for k in ("logp", "rewards", "dones", "values")},
    }


def normalize_rewards(
    grp: EnvGroup,
    rewards: np.ndarray,
    terminated: np.ndarray,
    return_norm: RunningObsNorm,
    gamma: float,
    clip: float,
) -> np.ndarray:
    """gymnasium 1.0 ``NormalizeReward`` per env (stats shared by its copies), then clip."""
    device = return_norm.var.device
    grp.discounted = grp.discounted * gamma * (1 - terminated) + rewards
    k = grp.key
    ids = torch.full((len(rewards),), k, device=device)
    return_norm.update(torch.as_tensor(grp.discounted[:, None], device=device), ids)
    std = math.sqrt(float(return_norm.var[k, 0]) + 1e-8)
    return np.clip(rewards / std, -clip, clip)


def gae(buf: dict[str, torch.Tensor], next_value, next_done, cfg) -> torch.Tensor:
    """GAE(gamma, lambda) advantages ``(T, C)`` of a filled buffer; ``cfg`` gives ``num_steps``,
    ``gamma`` and ``gae_lambda``."""
    advantages = torch.zeros_like(buf["rewards"])
    last = torch.zeros_like(next_value)
    for t in reversed(range(cfg.num_steps)):
        if t == cfg.num_steps - 1:
            nonterminal, next_v = 1.0 - next_done, next_value
        else:
            nonterminal, next_v = 1.0 - buf["dones"][t + 1], buf["values"][t + 1]
        delta = buf["rewards"][t] + cfg.gamma * next_v * nonterminal - buf["values"][t]
        last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
        advantages[t] = last
    return advantages


def per_env(t: torch.Tensor, held: int) -> torch.Tensor:
    """``(T, C, ...)`` → ``(S, n, ...)``: the ``n = T * C / S`` rows of each of the ``S = held``
    envs (the columns of an env are adjacent)."""
    num_steps, copies = t.shape[0], t.shape[1] // held
    t = t.reshape(num_steps, held, copies, *t.shape[2:]).transpose(0, 1)
    return t.reshape(held, num_steps * copies, *t.shape[3:])


def take_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t (S, n, ...)`` rows ``idx (S, m)`` → ``(S, m, ...)``."""
    view = idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(*idx.shape, *t.shape[2:])
    return t.gather(1, view)


def minibatches(
    data: dict[str, torch.Tensor],
    env: torch.Tensor,
    streams: Sequence[torch.Generator],
    num_minibatches: int,
    device: torch.device,
) -> Iterator[tuple[dict[str, torch.Tensor], torch.Tensor]]:
    """One epoch over per-env rows ``data (S, n, ...)`` with their envs ``env (S, n)``: each env's
    rows shuffled by its own stream, minibatch ``j`` the ``j``-th slice of every env's rows;
    yields ``(S, m, ...)`` rows and their envs ``(S * m,)``."""
    n = env.shape[1]
    m = n // num_minibatches
    perm = torch.stack([torch.randperm(n, generator=s) for s in streams]).to(device)
    for start in range(0, n, m):
        idx = perm[:, start : start + m]  # (S, m)
        yield {k: take_rows(v, idx) for k, v in data.items()}, env.gather(1, idx).reshape(-1)
