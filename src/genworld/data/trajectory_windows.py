"""Return-conditioned trajectory windows (Decision Transformer, Prompt-DT): per-env
returns-to-go and padded length-L segments sampled from a :class:`MultiEnvDataset`."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch

from genworld.data.multi_env import EnvData, MultiEnvDataset


def returns_to_go(env: EnvData) -> torch.Tensor:
    """``(N,)`` undiscounted return from each transition to the end of *its* episode.

    One cumulative sum over the flat reward array; ``steps_left`` gives each transition's
    episode end, so ``rtg[n] = sum(rewards[n : n + steps_left[n]])`` never crosses episodes.
    """
    cumulative = torch.cat([torch.zeros(1, dtype=torch.float64), env.rewards.double().cumsum(0)])
    start = torch.arange(len(env))  # (N,)
    return (cumulative[start + env.steps_left] - cumulative[start]).float()  # (N,)


@dataclass(frozen=True)
class Windows:
    """Padded length-L segments with their raw returns-to-go (right-padded, zero past the end)."""

    observations: torch.Tensor  # (B, L, obs_max)
    actions: torch.Tensor  # (B, L, act_max)
    returns_to_go: torch.Tensor  # (B, L) unscaled
    timesteps: torch.Tensor  # (B, L) int64
    step_mask: torch.Tensor  # (B, L) bool
    env_idx: torch.Tensor  # (B,) int64

    def map(self, fn) -> Windows:
        """Apply ``fn`` to every tensor (device moves, row selection, expansion)."""
        return Windows(**{f.name: fn(getattr(self, f.name)) for f in fields(self)})

    def to(self, device) -> Windows:
        return self.map(lambda v: v.to(device))

    @staticmethod
    def cat(parts: list[Windows]) -> Windows:
        return Windows(
            **{f.name: torch.cat([getattr(p, f.name) for p in parts]) for f in fields(Windows)}
        )


def gather_windows(
    env: EnvData, rtg: torch.Tensor, first: torch.Tensor, length: int, k: int, obs_max, act_max
) -> Windows:
    """Windows of env ``k`` starting at flat transitions ``first (n,)``; cut at episode ends."""
    offsets = torch.arange(length)  # (L,)
    valid = offsets[None, :] < env.steps_left[first][:, None]  # (n, L)
    idx = (first[:, None] + offsets[None, :]).clamp(max=len(env) - 1)  # (n, L)
    m = valid.float()
    n, d, a = len(first), env.spec.obs_dim, env.spec.act_dim
    obs, act = torch.zeros(n, length, obs_max), torch.zeros(n, length, act_max)
    obs[..., :d] = env.observations[idx] * m[..., None]
    act[..., :a] = env.actions[idx] * m[..., None]
    env_idx = torch.full((n,), k, dtype=torch.int64)
    return Windows(obs, act, rtg[idx] * m, env.timesteps[idx] * valid, valid, env_idx)


def sample_windows(
    dataset: MultiEnvDataset,
    rtgs: list[torch.Tensor],
    batch_size: int,
    length: int,
    generator: torch.Generator,
    mode: str = "balanced",
) -> Windows:
    """:meth:`MultiEnvDataset.sample_windows` plus returns-to-go: uniform start transitions."""
    counts = dataset.env_counts(batch_size, generator, mode)
    parts = []
    for k, (env, count) in enumerate(zip(dataset.envs, counts, strict=True)):
        if count:
            first = torch.randint(len(env), (count,), generator=generator)  # (count,)
            parts.append(
                gather_windows(env, rtgs[k], first, length, k, dataset.obs_max, dataset.act_max)
            )
    return Windows.cat(parts)
