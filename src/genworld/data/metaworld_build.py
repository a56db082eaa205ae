"""Meta-World datasets for WPT: non-expert play from Meta-World's scripted policies with noise.

WPT (seed 004, §4 "Datasets") pre-trains on Meta-World data collected by TD-MPC2 agents with
Gaussian action noise σ ∈ {0.1, 0.3, 0.5, 1, 2} to mimic imperfect demonstrations. genworld
ships no TD-MPC2 agents; Meta-World's own scripted policies (``metaworld.policies``) stand in
for them (a documented substitute, recorded in every card). The quality is ``scripted-noise``,
for ``mw-`` envs only: ``genworld/mw-reach-v3/scripted-noise-v0`` (short
``mw-reach-v3-scripted-noise``).

- **Segments**: one per σ in ``SIGMAS``, each an equal share of the steps (the first ones take
  the remainder), collected in that order; the card records each segment's σ, steps, episodes,
  success rate and normalized return, so episode ``i`` of the data belongs to the segment whose
  episode count covers it.
- **Actions**: ``clip(policy(obs) + σ·ε, -1, 1)`` with ε ~ N(0, I); the clipped action is what
  the env executes and what the data stores. The policy sees the float32 observation the data
  stores, so every stored action is the policy's response to the stored observation plus noise.
- **Episodes**: 500 steps (truncated by the time limit); a segment's last episode is cut by its
  step budget (also a truncation). Each episode starts from a fresh goal: its reset seed comes
  from the segment's generator.
- **Determinism**: segment ``k`` draws its episode seeds and its noise from one
  ``numpy.random.default_rng([seed, k])``, in one process (``--workers`` does not apply): the
  same seed gives the same bytes.
- **Rewards** (Meta-World's v2 reward functions) are stored, but WPT does not read them in
  pretraining; the card says so. The success rate (``info["success"]`` at some step of an
  episode, the budget-cut episode included) is recorded per segment and overall.
"""

from __future__ import annotations

import time
import warnings
from typing import Any

import numpy as np

from genworld import __version__
from genworld.data.episodes import Episode
from genworld.data.ids import DatasetId
from genworld.data.minari_io import write_dataset
from genworld.envs.metaworld import mw_task, scripted_policy
from genworld.envs.registry import get_env_spec, make_env
from genworld.utils.progress import progress_bar

SIGMAS = (0.1, 0.3, 0.5, 1.0, 2.0)
"""Standard deviations of the Gaussian action noise, one segment each (WPT's values)."""

DEFAULT_STEPS = 500_000
"""Steps of a build without ``--steps``: 1,000 episodes of 500 steps (200 per σ), WPT's
50k trajectories over 50 tasks."""

PROVENANCE = (
    "Made by genworld in Meta-World 3.1.1 (MT1 goals, 39-dim state observations) with "
    "Meta-World's scripted policies plus Gaussian action noise, sigma in "
    f"{{{', '.join(f'{s:g}' for s in SIGMAS)}}}, clipped to [-1, 1]: a substitute for WPT's noisy "
    "TD-MPC2 agents. Normalized return = return / 50 (reference 0 / 5000); Meta-World reports "
    "the success rate."
)
REWARD_FREE = (
    "Rewards (Meta-World's v2 reward functions) are stored, but WPT does not read them in "
    "pretraining: the data is meant to be used reward-free."
)


def noise_plan(steps: int | None) -> list[tuple[float, int]]:
    """``(sigma, steps)`` per segment: ``steps`` (default ``DEFAULT_STEPS``) in equal shares."""
    total = steps or DEFAULT_STEPS
    count = len(SIGMAS)
    return [
        (sigma, total // count + (1 if k < total % count else 0)) for k, sigma in enumerate(SIGMAS)
    ]


def collect_scripted(
    env: str, sigmas_and_steps: list[tuple[float, int]], seed: int, progress=None
) -> list[tuple[list[Episode], list[bool]]]:
    """Per ``(sigma, steps)`` segment: exactly ``steps`` transitions of the scripted policy of
    ``env`` with noise ``sigma``, whole episodes one after the other (the last one cut by the
    budget), and whether each episode succeeded. Segment ``k`` draws its episode seeds and noise
    from ``default_rng([seed, k])``; one env and one policy serve all segments."""
    spec = get_env_spec(env)
    policy = scripted_policy(mw_task(env))
    simulator = make_env(env)
    segments = []
    try:
        with warnings.catch_warnings():
            # the scripted policies' gains saturate the action box by design, and say so each step
            warnings.filterwarnings("ignore", message=r"Constant\(s\) may be too high")
            for k, (sigma, steps) in enumerate(sigmas_and_steps):
                rng = np.random.default_rng([seed, k])
                episodes: list[Episode] = []
                successes: list[bool] = []
                done = 0
                while done < steps:
                    episode, success = _episode(simulator, policy, sigma, spec, steps - done, rng)
                    episodes.append(episode)
                    successes.append(success)
                    done += len(episode)
                    if progress is not None:
                        progress(len(episode))
                segments.append((episodes, successes))
    finally:
        simulator.close()
    return segments


def _episode(simulator, policy, sigma: float, spec, budget: int, rng) -> tuple[Episode, bool]:
    """One episode of at most ``budget`` steps, and whether it succeeded."""
    horizon = min(spec.max_episode_steps, budget)
    observations = np.empty((horizon + 1, spec.obs_dim), np.float32)
    actions = np.empty((horizon, spec.act_dim), np.float32)
    rewards = np.empty(horizon)
    terminations, truncations = np.zeros(horizon, bool), np.zeros(horizon, bool)
    observations[0], _ = simulator.reset(seed=int(rng.integers(2**31 - 1)))
    success = False
    for t in range(horizon):
        noise = sigma * rng.standard_normal(spec.act_dim)
        actions[t] = np.clip(policy.get_action(observations[t]) + noise, -1.0, 1.0)
        obs, rewards[t], terminated, truncated, info = simulator.step(actions[t])
        observations[t + 1] = obs
        success |= bool(info["success"])
        if terminated or truncated:
            terminations[t] = terminated
            break
    length = t + 1
    truncations[length - 1] = not terminations[length - 1]  # the time limit or the budget
    episode = Episode.from_arrays(
        observations[: length + 1],
        actions[:length],
        rewards[:length],
        terminations[:length],
        truncations[:length],
        obs_dim=spec.obs_dim,
        act_dim=spec.act_dim,
    )
    return episode, success


def build_scripted_noise(
    dataset: DatasetId,
    *,
    steps: int | None,
    seed: int,
    force: bool = False,
    show_progress: bool = True,
) -> dict[str, Any]:
    """Collect and write ``dataset`` (a ``scripted-noise`` id), returning its card. Called by
    :func:`genworld.data.build.build_dataset`, which has checked the request and the target."""
    plan = noise_plan(steps)
    episodes: list[Episode] = []
    segments = []
    start = time.perf_counter()
    with progress_bar(f"build {dataset}", sum(n for _, n in plan), enabled=show_progress) as bar:
        collected = collect_scripted(dataset.env, plan, seed, bar)
    for (sigma, _), (segment_episodes, successes) in zip(plan, collected, strict=True):
        episodes += segment_episodes
        segments.append(_segment_record(dataset, sigma, segment_episodes, successes))
    seconds = time.perf_counter() - start
    card = scripted_noise_card(dataset, episodes, segments, seed, seconds)
    write_dataset(
        str(dataset),
        dataset.spec,
        episodes,
        card=card,
        description=f"{PROVENANCE} {REWARD_FREE}",
        algorithm_name="metaworld-scripted-policy+gaussian-noise",
        force=force,
    )
    return card


def _segment_record(dataset: DatasetId, sigma, episodes, successes) -> dict[str, Any]:
    returns = np.array([ep.episode_return for ep in episodes])
    return {
        "policy": f"metaworld scripted {mw_task(dataset.env)}",
        "sigma": sigma,
        "steps": int(sum(len(ep) for ep in episodes)),
        "episodes": len(episodes),
        "success_rate": float(np.mean(successes)),
        "normalized_mean": float(dataset.spec.normalized_score(returns.mean())),
    }


def scripted_noise_card(dataset: DatasetId, episodes, segments, seed, seconds) -> dict[str, Any]:
    """The dataset card: the fields every genworld card has (size, returns, build time,
    provenance, reference scores), the segments with their σ and success rates, and the
    success rate over all episodes."""
    spec = dataset.spec
    returns = np.array([ep.episode_return for ep in episodes])
    normalized = spec.normalized_score(returns)
    complete = np.array([len(ep) == spec.max_episode_steps for ep in episodes])
    steps = int(sum(len(ep) for ep in episodes))
    episode_counts = np.array([s["episodes"] for s in segments])
    rates = np.array([s["success_rate"] for s in segments])
    return {
        "dataset_id": str(dataset),
        "env": spec.name,
        "gym_id": spec.gym_id,
        "make_kwargs": spec.make_kwargs,
        "quality": dataset.quality,
        "seed": seed,
        "steps": steps,
        "episodes": len(episodes),
        "terminal_episodes": int(sum(bool(ep.terminations[-1]) for ep in episodes)),
        "return_mean": float(returns.mean()),
        "return_std": float(returns.std()),
        "return_min": float(returns.min()),
        "return_max": float(returns.max()),
        "normalized_mean": float(normalized.mean()),
        "normalized_std": float(spec.normalized_std(returns.std())),
        "normalized_mean_complete_episodes": float(normalized[complete].mean())
        if complete.any()
        else None,
        "success_rate": float((rates * episode_counts).sum() / episode_counts.sum()),
        "segments": segments,
        "policy_cards": {
            f"scripted sigma={s['sigma']:g}": {
                "eval_normalized": s["normalized_mean"],
                "success_rate": s["success_rate"],
                "note": "scores of the collected episodes, not of a separate evaluation",
            }
            for s in segments
        },
        "build_seconds": round(seconds, 2),
        "build_steps_per_second": round(steps / max(seconds, 1e-9), 1),
        "genworld_version": __version__,
        "metaworld_version": _metaworld_version(),
        "provenance": PROVENANCE,
        "reward_free": REWARD_FREE,
        "ref_min_score": spec.ref_min_score,
        "ref_max_score": spec.ref_max_score,
    }


def _metaworld_version() -> str:
    from importlib.metadata import version

    return version("metaworld")
