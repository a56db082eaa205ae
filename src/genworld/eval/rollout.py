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


def evaluate_agent(act_fn, specs, episodes: int, seed: int, device="cpu") -> dict[str, np.ndarray]:
    """Returns per env of a padded multi-env agent ``act_fn(obs (n, obs_max), env_idx (n,))``.

    Observations are zero-padded to the largest dim and actions cropped to each env's own dim
    (TD-MPC2's multitask wrapper, done here per batch).
    """
    import torch

    obs_max = max(s.obs_dim for s in specs)
    results = {}
    for k, spec in enumerate(specs):

        def policy(obs: np.ndarray, k=k, spec=spec) -> np.ndarray:
            padded = torch.zeros(len(obs), obs_max, device=device)
            padded[:, : spec.obs_dim] = torch.as_tensor(obs, dtype=torch.float32, device=device)
            env_idx = torch.full((len(obs),), k, dtype=torch.int64, device=device)
            return act_fn(padded, env_idx)[:, : spec.act_dim].cpu().numpy()

        results[spec.name] = evaluate_policy(spec.name, policy, episodes, seed)
    return results
