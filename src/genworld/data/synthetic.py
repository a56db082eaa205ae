"""Random-valued episodes with real envs' sizes: what contract checks, tests and throughput
benchmarks run on when the values do not matter (no simulator, no dataset on disk)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.envs import get_env_spec


def random_episode(
    rng: np.random.Generator, steps: int, obs_dim: int, act_dim: int, terminal: bool
) -> Episode:
    """``steps`` transitions of standard-normal observations and rewards and uniform actions in
    [-1, 1], ending in a termination (``terminal``) or a truncation."""
    terminations, truncations = np.zeros(steps, bool), np.zeros(steps, bool)
    (terminations if terminal else truncations)[-1] = True
    return Episode.from_arrays(
        rng.normal(size=(steps + 1, obs_dim)),
        rng.uniform(-1, 1, size=(steps, act_dim)),
        rng.normal(size=steps),
        terminations,
        truncations,
    )


def random_dataset(
    envs: Sequence[str], episodes: int, steps: int, seed: int = 0
) -> MultiEnvDataset:
    """``episodes`` random episodes of ``steps`` transitions for each env of ``envs`` (registry
    names, their true observation and action sizes), every other one ending in a termination."""
    rng = np.random.default_rng(seed)
    data = []
    for name in envs:
        spec = get_env_spec(name)
        eps = [
            random_episode(rng, steps, spec.obs_dim, spec.act_dim, terminal=i % 2 == 0)
            for i in range(episodes)
        ]
        data.append((spec, eps))
    return MultiEnvDataset(data)
