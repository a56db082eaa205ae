"""Meta-World v3 manipulation tasks as genworld environments (Gymnasium envs with an ``EnvSpec``).

Names are ``mw-<task>`` for Meta-World's 50 v3 tasks (``mw-reach-v3``, ``mw-push-v3``,
``mw-pick-place-v3``; ``MW_TASKS`` lists them). Meta-World (the ``metaworld`` extra:
``pip install -e ".[metaworld]"``) is imported only when such an env is made.

- **Tasks**: each env is Meta-World's MT1 single-task setting: the task's 50 goal/object
  configurations come from ``metaworld.MT1(task, seed=GOALS_SEED)`` (fixed, so every genworld
  process sees the same 50), and every reset picks one of them with the env's seeded generator:
  ``reset(seed=s)`` always starts the same episode. The goal is part of the observation (MT1),
  which Meta-World's scripted policies need.
- **Observations**: Meta-World's 39 dims as float32: hand position and gripper opening (4),
  two objects' positions and quaternions (14), the same 18 at the previous step, the goal (3).
- **Actions**: 4 dims in [-1, 1] (hand displacement xyz, gripper), clipped to that box.
- **Episodes**: 500 steps, cut by the time limit (a truncation; no task terminates, and reaching
  the goal does not end an episode, so every return sums 500 rewards).
- **Success**: ``info["success"]`` (bool) every step, Meta-World's own test. An episode is a
  success when it held at any step: Meta-World's evaluation ends episodes at their first success
  and counts them, which is the same count.
- **Scores**: rewards are Meta-World's v2 reward functions, in [0, 10] a step, so returns lie in
  [0, 5000]; the EnvSpec's reference scores are these bounds, and ``normalized_score`` is
  ``100 * return / 5000``: a return scale for genworld's tables, not Meta-World's headline
  metric. The papers report the **success rate** (per cent of successful episodes); genworld's
  evaluation reports it beside the return wherever an env gives ``info["success"]``.
"""

from __future__ import annotations

import functools
from typing import Any

import gymnasium as gym
import numpy as np

from genworld.envs.termination import never_terminates
from genworld.errors import GenworldError
from genworld.types import EnvSpec

MW_TASKS: tuple[str, ...] = (
    "assembly-v3",
    "basketball-v3",
    "bin-picking-v3",
    "box-close-v3",
    "button-press-topdown-v3",
    "button-press-topdown-wall-v3",
    "button-press-v3",
    "button-press-wall-v3",
    "coffee-button-v3",
    "coffee-pull-v3",
    "coffee-push-v3",
    "dial-turn-v3",
    "disassemble-v3",
    "door-close-v3",
    "door-lock-v3",
    "door-open-v3",
    "door-unlock-v3",
    "drawer-close-v3",
    "drawer-open-v3",
    "faucet-close-v3",
    "faucet-open-v3",
    "hammer-v3",
    "hand-insert-v3",
    "handle-press-side-v3",
    "handle-press-v3",
    "handle-pull-side-v3",
    "handle-pull-v3",
    "lever-pull-v3",
    "peg-insert-side-v3",
    "peg-unplug-side-v3",
    "pick-out-of-hole-v3",
    "pick-place-v3",
    "pick-place-wall-v3",
    "plate-slide-back-side-v3",
    "plate-slide-back-v3",
    "plate-slide-side-v3",
    "plate-slide-v3",
    "push-back-v3",
    "push-v3",
    "push-wall-v3",
    "reach-v3",
    "reach-wall-v3",
    "shelf-place-v3",
    "soccer-v3",
    "stick-pull-v3",
    "stick-push-v3",
    "sweep-into-v3",
    "sweep-v3",
    "window-close-v3",
    "window-open-v3",
)
"""Meta-World 3.1.1's v3 tasks (``metaworld.env_dict.ALL_V3_ENVIRONMENTS``; a test checks the
list against it). The genworld name of ``reach-v3`` is ``mw-reach-v3``."""

PREFIX = "mw-"
OBS_DIM = 39
ACT_DIM = 4
EPISODE_STEPS = 500
"""Meta-World's ``max_path_length``: steps per episode."""
MAX_STEP_REWARD = 10.0
"""The v2 reward functions' largest reward a step."""
GOALS_SEED = 0
"""Seed of ``metaworld.MT1``'s 50 goal/object configurations per task."""


def mw_task(name: str) -> str:
    """Meta-World's task name of a genworld name (``mw-reach-v3`` → ``reach-v3``)."""
    return name.removeprefix(PREFIX)


def mw_spec(name: str) -> EnvSpec | None:
    """The EnvSpec of a Meta-World name, or None if ``name`` is not one (``mw-`` names that are
    not ``mw-`` + one of ``MW_TASKS`` are an error listing those that are)."""
    if not name.startswith(PREFIX):
        return None
    if mw_task(name) not in MW_TASKS:
        raise GenworldError(
            f"unknown Meta-World task {name!r}: choose one of "
            f"{', '.join(PREFIX + task for task in MW_TASKS)}"
        )
    return EnvSpec(
        name=name,
        gym_id=gym_id(name),
        obs_dim=OBS_DIM,
        act_dim=ACT_DIM,
        max_episode_steps=EPISODE_STEPS,
        ref_min_score=0.0,
        ref_max_score=MAX_STEP_REWARD * EPISODE_STEPS,
        termination=never_terminates,
    )


def gym_id(name: str) -> str:
    """``mw-reach-v3`` → ``genworld/MW-reach-v3`` (Meta-World's own ``-v3`` is the version)."""
    return f"genworld/MW-{mw_task(name)}"


def _import_metaworld():
    """The ``metaworld`` module, or a one-line error naming the extra to install."""
    try:
        import metaworld
    except ImportError:
        raise GenworldError(
            "Meta-World tasks need the metaworld extra: pip install -e '.[metaworld]' "
            "(metaworld==3.1.1)"
        ) from None
    return metaworld


@functools.cache
def mt1_goals(task: str) -> tuple:
    """The 50 goal/object configurations (``metaworld.Task``) of ``task``, the same in every
    process (``metaworld.MT1(task, seed=GOALS_SEED)``; about half a second, so cached)."""
    return tuple(_import_metaworld().MT1(task, seed=GOALS_SEED).train_tasks)


def scripted_policy(task: str):
    """Meta-World's scripted policy of ``task`` (``get_action(obs) -> action``), acting on the
    39-dim observation with the goal."""
    _import_metaworld()
    from metaworld.policies import ENV_POLICY_MAP

    return ENV_POLICY_MAP[task]()


class MetaWorldEnv(gym.Env):
    """One Meta-World v3 task in MT1's setting as a Gymnasium env (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, name: str):
        mw_spec(name)
        self.name, self.task = name, mw_task(name)
        _import_metaworld()
        from metaworld.env_dict import ALL_V3_ENVIRONMENTS

        self.goals = mt1_goals(self.task)
        self.env = ALL_V3_ENVIRONMENTS[self.task]()
        self.goal_index: int | None = None
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (OBS_DIM,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (ACT_DIM,), np.float32)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.goal_index = int(self.np_random.integers(len(self.goals)))
        self.env.set_task(self.goals[self.goal_index])
        observation, _ = self.env.reset()
        return observation.astype(np.float32), {"goal_index": self.goal_index}

    def step(self, action):
        action = np.clip(np.asarray(action, dtype=np.float32), -1.0, 1.0)
        observation, reward, terminated, truncated, info = self.env.step(action)
        info = {**info, "success": bool(info["success"])}
        return observation.astype(np.float32), float(reward), terminated, truncated, info

    def close(self) -> None:
        self.env.close()


def register() -> None:
    """Register every ``MW_TASKS`` env with Gymnasium (cheap: Meta-World loads on make)."""
    for task in MW_TASKS:
        name = PREFIX + task
        if gym_id(name) not in gym.registry:
            gym.register(
                id=gym_id(name),
                entry_point="genworld.envs.metaworld:MetaWorldEnv",
                max_episode_steps=EPISODE_STEPS,
                kwargs={"name": name},
            )


register()
