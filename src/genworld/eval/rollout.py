"""Evaluation episodes in the real simulator: vectorised, one seed per episode."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from genworld.envs.registry import get_env_spec, make_env

PolicyFn = Callable[[np.ndarray], np.ndarray]


def evaluate_policy(env: str, policy: PolicyFn, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes; episode ``i`` is reset with seed ``seed + i``.

    All episodes run side by side so the policy sees one batch ``(n_alive, obs_dim)`` per step.
    """
    spec = get_env_spec(env)
    envs = [make_env(env) for _ in range(episodes)]
    observations = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    returns = np.zeros(episodes)
    alive = np.ones(episodes, dtype=bool)
    for _ in range(spec.max_episode_steps):
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        actions = policy(observations[idx])
        for j, i in enumerate(idx):
            obs, reward, terminated, truncated, _ = envs[i].step(actions[j])
            observations[i] = obs
            returns[i] += reward
            if terminated or truncated:
                alive[i] = False
    for e in envs:
        e.close()
    return returns
