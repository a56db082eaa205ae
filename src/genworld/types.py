"""Typed contracts shared by every layer: environment specs and padded multi-env batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

TerminationFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EnvSpec:
    """Static facts about one environment; every dimension in the code comes from here."""

    name: str
    """Short genworld name (``halfcheetah``), used in dataset ids and reports."""
    gym_id: str
    """Gymnasium id of the simulator (``HalfCheetah-v5``)."""
    obs_dim: int
    act_dim: int
    max_episode_steps: int
    ref_min_score: float
    """D4RL reference return of a random policy (PROTOCOL.md)."""
    ref_max_score: float
    """D4RL reference return of an expert policy (PROTOCOL.md)."""
    termination: TerminationFn | None = None
    """Vectorised ``next_observations (N, obs_dim) -> terminated (N,) bool``; None = never."""
    make_kwargs: dict[str, Any] = field(default_factory=dict)
    """Extra keyword arguments for ``gymnasium.make`` (the observation variant)."""
    medium_band: tuple[float, float] = (0.0, 100.0)
    """Target normalized-score band of our medium behaviour policy (issue #3)."""
    expert_target: float = 90.0
    """Target normalized score of our expert behaviour policy (issue #3)."""

    def normalized_score(self, episode_return: float | np.ndarray) -> float | np.ndarray:
        """D4RL normalized score: ``100 * (R - ref_min) / (ref_max - ref_min)``."""
        return (
            100.0
            * (episode_return - self.ref_min_score)
            / (self.ref_max_score - self.ref_min_score)
        )

    def normalized_std(self, return_std: float | np.ndarray) -> float | np.ndarray:
        """A spread of returns in normalized units: scaled, never shifted (STYLE §12)."""
        return 100.0 * return_std / (self.ref_max_score - self.ref_min_score)


@dataclass(frozen=True)
class Batch:
    """A padded batch of transitions from several environments (STYLE §2)."""

    observations: torch.Tensor  # (B, obs_max) zero-padded
    actions: torch.Tensor  # (B, act_max) zero-padded
    rewards: torch.Tensor  # (B,)
    next_observations: torch.Tensor  # (B, obs_max)
    terminations: torch.Tensor  # (B,) 1.0 only for true terminals
    env_idx: torch.Tensor  # (B,) int64 index into the dataset's env list
    obs_mask: torch.Tensor  # (B, obs_max) bool
    act_mask: torch.Tensor  # (B, act_max) bool

    def to(self, device: torch.device | str) -> Batch:
        return Batch(**{k: v.to(device) for k, v in self.__dict__.items()})

    def rows(self, index: torch.Tensor, obs_width: int, act_width: int) -> Batch:
        """The rows ``index``, cut to ``obs_width`` observation and ``act_width`` action columns
        (what those rows' envs need: the rest is padding)."""
        return Batch(
            observations=self.observations[index, :obs_width],
            actions=self.actions[index, :act_width],
            rewards=self.rewards[index],
            next_observations=self.next_observations[index, :obs_width],
            terminations=self.terminations[index],
            env_idx=self.env_idx[index],
            obs_mask=self.obs_mask[index, :obs_width],
            act_mask=self.act_mask[index, :act_width],
        )


@dataclass(frozen=True)
class SeqBatch:
    """A padded batch of length-L windows that never cross an episode boundary."""

    observations: torch.Tensor  # (B, L, obs_max)
    actions: torch.Tensor  # (B, L, act_max)
    rewards: torch.Tensor  # (B, L)
    next_observations: torch.Tensor  # (B, L, obs_max)
    terminations: torch.Tensor  # (B, L)
    timesteps: torch.Tensor  # (B, L) int64 step index inside the episode
    step_mask: torch.Tensor  # (B, L) bool, False past the end of a short episode
    env_idx: torch.Tensor  # (B,) int64
    obs_mask: torch.Tensor  # (B, obs_max) bool
    act_mask: torch.Tensor  # (B, act_max) bool

    def to(self, device: torch.device | str) -> SeqBatch:
        return SeqBatch(**{k: v.to(device) for k, v in self.__dict__.items()})
