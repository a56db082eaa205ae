"""TGW's rollout state: the FIFO prompt memory of each imagined rollout, built from the dataset's
history of a start state (``start_memory``) and pushed one step at a time (``push``); rollout
start states drawn from the data (``sample_start_states``, shared by every model-based agent)."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from genworld.data.multi_env import MultiEnvDataset


@dataclass
class PromptMemory:
    """FIFO prompt of each rollout: slots ``0..count-1`` hold steps, the last one the current
    observation (its action is written by ``next``)."""

    observations: torch.Tensor  # (B, M, obs_max) raw
    actions: torch.Tensor  # (B, M, act_max)
    prev_rewards: torch.Tensor  # (B, M) raw reward of the step before each slot
    count: torch.Tensor  # (B,) int64 filled slots, >= 1
    env_idx: torch.Tensor  # (B,) int64

    @property
    def current_observations(self) -> torch.Tensor:
        rows = torch.arange(len(self.count), device=self.count.device)
        return self.observations[rows, self.count - 1]  # (B, obs_max)


def start_memory(
    dataset: MultiEnvDataset,
    env_idx: torch.Tensor,
    index: torch.Tensor,
    m: int,
    obs_max: int,
    act_max: int,
) -> PromptMemory:
    """Prompts for rollouts starting at transition ``index`` of env ``env_idx``: the up to
    M−1 dataset steps before it in the same episode, then the start observation. ``m``: the
    prompt length M; ``obs_max`` / ``act_max``: the padded widths."""
    b = len(env_idx)
    obs = torch.zeros(b, m, obs_max)
    act = torch.zeros(b, m, act_max)
    prev = torch.zeros(b, m)
    count = torch.zeros(b, dtype=torch.int64)
    for k, data in enumerate(dataset.envs):
        sel = torch.nonzero(env_idx == k).flatten()
        if len(sel) == 0:
            continue
        start = index[sel]
        history = torch.minimum(data.timesteps[start], torch.tensor(m - 1))  # (n,)
        offsets = torch.arange(m)[None] - history[:, None]  # (n, M) relative step, 0 = start
        slot_valid = offsets <= 0
        src = (start[:, None] + offsets).clamp(0, len(data) - 1)  # (n, M)
        od, ad = data.spec.obs_dim, data.spec.act_dim
        obs[sel, :, :od] = data.observations[src] * slot_valid[..., None]
        act[sel, :, :ad] = data.actions[src] * (offsets < 0)[..., None]
        prev_src = (src - 1).clamp(0, len(data) - 1)
        prev[sel] = data.rewards[prev_src] * (slot_valid & (torch.arange(m)[None] > 0))
        count[sel] = history + 1
    return PromptMemory(obs, act, prev, count, env_idx.clone())


def push(
    memory: PromptMemory, actions: torch.Tensor, next_obs: torch.Tensor, reward: torch.Tensor
) -> PromptMemory:
    """Append (next observation, reward of the step that led to it); drop the oldest when full."""
    b, m = memory.count.shape[0], memory.observations.shape[1]
    full = memory.count >= m  # (B,)
    rows = torch.arange(b, device=next_obs.device)

    def shift(x: torch.Tensor) -> torch.Tensor:
        rolled = torch.roll(x, -1, dims=1)
        return torch.where(full.view(-1, *([1] * (x.dim() - 1))), rolled, x)

    obs, act, prev = shift(memory.observations), shift(actions), shift(memory.prev_rewards)
    slot = torch.where(full, torch.full_like(memory.count, m - 1), memory.count)
    obs[rows, slot] = next_obs
    act[rows, slot] = 0.0
    prev[rows, slot] = reward
    return PromptMemory(obs, act, prev, torch.clamp(memory.count + 1, max=m), memory.env_idx)


def with_current_observations(memory: PromptMemory, observations: torch.Tensor) -> PromptMemory:
    """The memory with its current observations (the last filled slot) replaced."""
    obs = memory.observations.clone()
    rows = torch.arange(len(memory.count), device=memory.count.device)
    obs[rows, memory.count - 1] = observations
    return PromptMemory(obs, memory.actions, memory.prev_rewards, memory.count, memory.env_idx)


def row_chunks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def sample_start_states(
    dataset: MultiEnvDataset, n: int, generator: torch.Generator, mode: str = "balanced"
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(env_idx (n,), transition index (n,))`` of rollout start states from the data."""
    counts = dataset.env_counts(n, generator, mode)  # type: ignore[arg-type]
    env_idx = torch.cat([torch.full((c,), k, dtype=torch.int64) for k, c in enumerate(counts)])
    index = torch.cat(
        [
            torch.randint(len(data), (c,), generator=generator)
            for data, c in zip(dataset.envs, counts, strict=True)
        ]
    )
    return env_idx, index


__all__ = ["PromptMemory", "push", "row_chunks", "sample_start_states", "start_memory"]
