"""EnvPool: N copies of one env stepped together, with same-step auto-reset.

Gymnasium's vector envs reset on the *next* step by default, which inserts a dummy transition; data
collection needs the final observation of each episode and a fresh start in the same call, so we
step a plain list of envs (MuJoCo stepping dominates; policy inference is batched by the caller).
Every episode is seeded from a per-pool ``numpy`` generator, so a pool's stream is deterministic.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genworld.envs.registry import get_env_spec, make_env


@dataclass
class StepResult:
    observations: np.ndarray  # (N, obs_dim) next obs; the reset obs where an episode ended
    final_observations: np.ndarray  # (N, obs_dim) true next obs (the last obs where it ended)
    rewards: np.ndarray  # (N,)
    terminations: np.ndarray  # (N,) bool
    truncations: np.ndarray  # (N,) bool
    episode_seeds: np.ndarray  # (N,) seed of the episode each env is in *after* this step


class EnvPool:
    """``num_envs`` copies of a registered env with deterministic per-episode seeds."""

    def __init__(self, name: str, num_envs: int, seed: int, **make_kwargs):
        self.spec = get_env_spec(name)
        self.num_envs = num_envs
        self.envs = [make_env(name, **make_kwargs) for _ in range(num_envs)]
        self._rng = np.random.default_rng(seed)
        self.episode_seeds = np.zeros(num_envs, dtype=np.int64)
        self.elapsed = np.zeros(num_envs, dtype=np.int64)

    def _new_seed(self) -> int:
        return int(self._rng.integers(0, 2**31 - 1))

    def reset(self) -> np.ndarray:
        observations = np.empty((self.num_envs, self.spec.obs_dim))
        for i, env in enumerate(self.envs):
            self.episode_seeds[i] = self._new_seed()
            observations[i], _ = env.reset(seed=int(self.episode_seeds[i]))
        self.elapsed[:] = 0
        return observations

    def step(self, actions: np.ndarray, active: int | None = None) -> StepResult:
        """Step the first ``active`` envs (all by default); results have ``active`` rows."""
        n = self.num_envs if active is None else active
        d = self.spec.obs_dim
        observations, final_observations = np.empty((n, d)), np.empty((n, d))
        rewards = np.empty(n)
        terminations, truncations = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
        for i in range(n):
            obs, reward, terminated, truncated, _ = self.envs[i].step(actions[i])
            self.elapsed[i] += 1
            final_observations[i], rewards[i], terminations[i] = obs, reward, terminated
            # the TimeLimit wrapper truncates at max_episode_steps; never both flags at once
            truncations[i] = truncated and not terminated
            if terminated or truncated:
                self.episode_seeds[i] = self._new_seed()
                obs, _ = self.envs[i].reset(seed=int(self.episode_seeds[i]))
                self.elapsed[i] = 0
            observations[i] = obs
        return StepResult(
            observations,
            final_observations,
            rewards,
            terminations,
            truncations,
            self.episode_seeds[:n].copy(),
        )

    def close(self) -> None:
        for env in self.envs:
            env.close()
