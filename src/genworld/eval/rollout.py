"""Evaluation episodes in the real simulator: vectorised, one seed per episode.

Every episode gives its return; an env that reports ``info["success"]`` (Meta-World) also gives
whether the episode succeeded (at any step), which the evaluation records carry beside the return.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from genworld.envs.registry import get_env_spec, make_env
from genworld.utils.device import simulator_threads

PolicyFn = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class EpisodeOutcomes:
    """What ``episodes`` evaluation episodes of one env gave, episode by episode."""

    returns: np.ndarray
    """(episodes,) sums of rewards."""
    successes: np.ndarray | None
    """(episodes,) bool: ``info["success"]`` held at some step of the episode; None when the
    env does not report success."""


def first_episode_seed(seed: int) -> int:
    """The reset seed of a run's first evaluation episode (episode ``i`` resets with this + i):
    runs of different seeds start 1,000 apart, so their evaluations never share a start state
    and the spread over seeds is not understated."""
    return seed * 1000


def evaluate_policy(env: str, policy: PolicyFn, episodes: int, seed: int) -> np.ndarray:
    """Returns of ``episodes`` episodes; episode ``i`` is reset with seed ``seed + i``.

    All episodes run side by side so the policy sees one batch ``(n_alive, obs_dim)`` per step.
    """
    return run_episodes(env, lambda obs, idx: policy(obs), None, episodes, seed)


def run_episodes(
    env: str,
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    observe: Callable[[np.ndarray, np.ndarray], None] | None,
    episodes: int,
    seed: int,
) -> np.ndarray:
    """The returns of :func:`episode_outcomes`."""
    return episode_outcomes(env, act, observe, episodes, seed).returns


def episode_outcomes(
    env: str,
    act: Callable[[np.ndarray, np.ndarray], np.ndarray],
    observe: Callable[[np.ndarray, np.ndarray], None] | None,
    episodes: int,
    seed: int,
) -> EpisodeOutcomes:
    """The episode loop: ``act(obs (n_alive, obs_dim), idx (n_alive,))`` gives actions for the
    episodes still running (``idx`` = their episode numbers); ``observe(idx, rewards)``, when
    given, receives each step's rewards (history-based policies such as DT need them)."""
    with simulator_threads():
        return _run_episodes(env, act, observe, episodes, seed)


def _run_episodes(env, act, observe, episodes: int, seed: int) -> EpisodeOutcomes:
    spec = get_env_spec(env)
    envs = [make_env(env) for _ in range(episodes)]
    observations = np.stack([e.reset(seed=seed + i)[0] for i, e in enumerate(envs)])
    returns = np.zeros(episodes)
    successes = np.zeros(episodes, dtype=bool)
    reports_success = False
    alive = np.ones(episodes, dtype=bool)
    for _ in range(spec.max_episode_steps):
        idx = np.flatnonzero(alive)
        if len(idx) == 0:
            break
        actions = act(observations[idx], idx)
        rewards = np.zeros(len(idx))
        for j, i in enumerate(idx):
            obs, reward, terminated, truncated, info = envs[i].step(actions[j])
            observations[i] = obs
            returns[i] += reward
            rewards[j] = reward
            if "success" in info:
                reports_success = True
                successes[i] |= bool(info["success"])
            if terminated or truncated:
                alive[i] = False
        if observe is not None:
            observe(idx, rewards)
    for e in envs:
        e.close()
    return EpisodeOutcomes(returns, successes if reports_success else None)


def evaluate_agent(
    agent: Any, specs, episodes: int, seed: int, device="cpu"
) -> dict[str, np.ndarray]:
    """Returns per env of :func:`evaluate_agent_outcomes`."""
    outcomes = evaluate_agent_outcomes(agent, specs, episodes, seed, device)
    return {name: outcome.returns for name, outcome in outcomes.items()}


def evaluate_agent_outcomes(
    agent: Any, specs, episodes: int, seed: int, device="cpu"
) -> dict[str, EpisodeOutcomes]:
    """Per env, the episodes of a padded multi-env agent (or a bare ``act(obs, env_idx)``
    function): returns, and successes where the env reports them.

    Observations are zero-padded to the largest dim and actions cropped to each env's own dim
    (TD-MPC2's multitask wrapper, done here per batch). An agent with
    ``episode_policy(env_k, episodes)`` gets a fresh per-episode policy object for each env:
    ``act(padded_obs (n, obs_max), idx (n,))`` and ``observe(idx, rewards)``.
    """
    import torch

    obs_max = max(s.obs_dim for s in specs)
    act_fn = agent.act if hasattr(agent, "act") else agent
    results = {}
    for k, spec in enumerate(specs):

        def pad(obs: np.ndarray, spec=spec) -> torch.Tensor:
            padded = torch.zeros(len(obs), obs_max, device=device)
            padded[:, : spec.obs_dim] = torch.as_tensor(obs, dtype=torch.float32, device=device)
            return padded

        if hasattr(agent, "episode_policy"):
            episode = agent.episode_policy(k, episodes)

            def act(obs, idx, episode=episode, spec=spec):
                out = episode.act(pad(obs), torch.as_tensor(idx, dtype=torch.int64))
                return out[:, : spec.act_dim].cpu().numpy()

            observe = episode.observe
        else:

            def act(obs, idx, k=k, spec=spec):
                env_idx = torch.full((len(obs),), k, dtype=torch.int64, device=device)
                return act_fn(pad(obs), env_idx)[:, : spec.act_dim].cpu().numpy()

            observe = None
        results[spec.name] = episode_outcomes(spec.name, act, observe, episodes, seed)
    return results
