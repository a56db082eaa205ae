"""Per-env observation and reward statistics fitted on data, saved with models.

Padded dimensions keep mean 0 and std 1, so normalising leaves their zeros at zero.
"""

from __future__ import annotations

import torch

from genworld.data.multi_env import MultiEnvDataset

MIN_STD = 1e-6


class Normalizer(torch.nn.Module):
    """``(num_envs, obs_max)`` means/stds as buffers (they travel in ``state_dict``)."""

    def __init__(self, num_envs: int, obs_max: int):
        super().__init__()
        self.register_buffer("obs_mean", torch.zeros(num_envs, obs_max))
        self.register_buffer("obs_std", torch.ones(num_envs, obs_max))
        self.register_buffer("reward_mean", torch.zeros(num_envs))
        self.register_buffer("reward_std", torch.ones(num_envs))

    @classmethod
    def fit(cls, dataset: MultiEnvDataset) -> Normalizer:
        norm = cls(dataset.num_envs, dataset.obs_max)
        for k, env in enumerate(dataset.envs):
            d = env.spec.obs_dim
            both = torch.cat([env.observations, env.next_observations[-1:]])  # (N+1, d)
            norm.obs_mean[k, :d] = both.mean(0)
            norm.obs_std[k, :d] = both.std(0).clamp_min(MIN_STD)
            norm.reward_mean[k] = env.rewards.mean()
            norm.reward_std[k] = env.rewards.std().clamp_min(MIN_STD) if len(env) > 1 else 1.0
        return norm

    def normalize_obs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """``obs (..., B, obs_max)`` with ``env_idx (B,)``; padded dims stay 0."""
        return (obs - self.obs_mean[env_idx]) / self.obs_std[env_idx]

    def denormalize_obs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        return obs * self.obs_std[env_idx] + self.obs_mean[env_idx]

    def normalize_reward(self, reward: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        return (reward - self.reward_mean[env_idx]) / self.reward_std[env_idx]

    def denormalize_reward(self, reward: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        return reward * self.reward_std[env_idx] + self.reward_mean[env_idx]
