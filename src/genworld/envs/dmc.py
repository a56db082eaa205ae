"""DeepMind Control Suite tasks as genworld environments (Gymnasium envs with an ``EnvSpec``).

Names are ``dmc-<domain>-<task>`` (``dmc-cheetah-run``, ``dmc-quadruped-walk``; ``DMC_TASKS``
lists them), or a scenario of one (``dmc-cheetah-run@torso=1.2,speed=0.6``:
:mod:`genworld.envs.scenarios`). dm_control (the ``dmc`` extra: ``pip install -e ".[dmc]"``) is imported only when
such an env is made.

- **Observations**: the task's observation dict flattened in the order of its
  ``observation_spec()`` (an ordered dict fixed by the task's code), each entry row-major, as
  float32; ``OBS_KEYS`` writes the order down and a test checks it against dm_control.
- **Actions**: in [-1, 1] on every dim, mapped affinely onto the task's action bounds (most are
  [-1, 1] already: the map is then the identity; quadruped's are not).
- **Episodes**: 1,000 control steps, cut by the time limit (a truncation, never a terminal: no
  suite task used here terminates); ``action_repeat`` k repeats each action k times, summing
  the rewards, so an episode is 1,000 / k agent steps.
- **Scores**: returns are in [0, 1000]; the normalized score is return / 10 (reference 0 / 1000,
  as the DMC papers report).
- **Seeding**: ``reset(seed=s)`` seeds the task's random state, so the same seed gives dm_control's
  own episode for ``task_kwargs={"random": s}``.
- **Hard variants** (``dmc-walker-walk-hard``): WPT's harder, sparse versions of a task, as its
  code (zhaoyi11/ncrl, ``src/envs.py`` ``HardTaskWrapper``, ``config/finetune.yaml``) makes them:
  each control step's reward is 0 below its domain's threshold (:func:`hard_threshold`: 0.2
  for the cheetah, 0.6 for every other domain), and ``HARD_ACTION_PENALTY`` (0.1) × the
  action's norm is subtracted; returns can be negative.

numpy 2 removed ``np.in1d``, which dm_control 1.0.28's quadruped still calls: :func:`_load`
restores it as ``np.isin`` (the same function) before loading a task; this is the one place
genworld patches a library.
"""

from __future__ import annotations

import os
from dataclasses import replace
from typing import Any

import gymnasium as gym
import numpy as np

from genworld.envs.scenarios import (
    condition,
    condition_keys,
    draw_training_scenario,
    load_scenario,
    parse_scenario,
    randomized_task,
)
from genworld.envs.termination import never_terminates
from genworld.errors import GenworldError
from genworld.types import EnvSpec

EPISODE_STEPS = 1_000
"""Control steps per episode (the suite's time limit at its control timestep)."""

OBS_KEYS: dict[str, tuple[tuple[str, int], ...]] = {
    "cheetah": (("position", 8), ("velocity", 9)),
    "walker": (("orientations", 14), ("height", 1), ("velocity", 9)),
    "hopper": (("position", 6), ("velocity", 7), ("touch", 2)),
    "cartpole": (("position", 3), ("velocity", 2)),
    "acrobot": (("orientations", 4), ("velocity", 2)),
    "pendulum": (("orientation", 2), ("velocity", 1)),
    "finger": (("position", 4), ("velocity", 3), ("touch", 2)),
    "reacher": (("position", 2), ("to_target", 2), ("velocity", 2)),
    "ball_in_cup": (("position", 4), ("velocity", 4)),
    "fish": (("joint_angles", 7), ("upright", 1), ("target", 3), ("velocity", 13)),
    "quadruped": (
        ("egocentric_state", 44),
        ("torso_velocity", 3),
        ("torso_upright", 1),
        ("imu", 6),
        ("force_torque", 24),
    ),
}
"""Per domain: the observation keys in the flattening order, with their sizes."""

ACT_DIMS = {
    "cheetah": 6,
    "walker": 6,
    "hopper": 4,
    "cartpole": 1,
    "acrobot": 1,
    "pendulum": 1,
    "finger": 2,
    "reacher": 2,
    "ball_in_cup": 2,
    "fish": 5,
    "quadruped": 12,
}

DMC_TASKS: dict[str, tuple[str, str]] = {
    "dmc-cheetah-run": ("cheetah", "run"),
    "dmc-walker-stand": ("walker", "stand"),
    "dmc-walker-walk": ("walker", "walk"),
    "dmc-walker-run": ("walker", "run"),
    "dmc-hopper-stand": ("hopper", "stand"),
    "dmc-hopper-hop": ("hopper", "hop"),
    "dmc-cartpole-balance": ("cartpole", "balance"),
    "dmc-cartpole-swingup": ("cartpole", "swingup"),
    "dmc-acrobot-swingup": ("acrobot", "swingup"),
    "dmc-pendulum-swingup": ("pendulum", "swingup"),
    "dmc-finger-spin": ("finger", "spin"),
    "dmc-reacher-easy": ("reacher", "easy"),
    "dmc-cup-catch": ("ball_in_cup", "catch"),
    "dmc-fish-swim": ("fish", "swim"),
    "dmc-quadruped-walk": ("quadruped", "walk"),
    "dmc-quadruped-run": ("quadruped", "run"),
}
"""genworld name → (dm_control domain, task)."""

HARD = "-hard"
"""Suffix of a task's hard, sparse variant (see the module docstring)."""
HARD_REWARD_THRESHOLD = 0.6
"""A hard variant's step reward below this is 0 (NCRL's ``env.reward_threshold``), in every
domain but those of ``HARD_DOMAIN_THRESHOLDS``."""
HARD_DOMAIN_THRESHOLDS = {"cheetah": 0.2}
"""Domains whose hard variant has its own threshold (NCRL's ``finetune.py``: 0.2 for
``dmc-cheetah`` tasks)."""
HARD_ACTION_PENALTY = 0.1
"""A hard variant subtracts this times the action's norm per step (NCRL's ``action_penalty``)."""


def hard_threshold(domain: str) -> float:
    """The step reward below which ``domain``'s hard variant pays nothing."""
    return HARD_DOMAIN_THRESHOLDS.get(domain, HARD_REWARD_THRESHOLD)


def hard_reward(reward: float, action: np.ndarray, threshold: float) -> float:
    """One control step's reward in a hard variant: sparse below ``threshold``
    (:func:`hard_threshold`), less the action's cost."""
    sparse = 0.0 if reward < threshold else reward
    return sparse - HARD_ACTION_PENALTY * float(np.sqrt(np.dot(action, action)))


def dmc_spec(name: str) -> EnvSpec | None:
    """The EnvSpec of a DMC task name, or None if ``name`` is not one (``dmc-`` names that are
    not in ``DMC_TASKS`` are an error listing those that are)."""
    if not name.startswith("dmc-"):
        return None
    scenario = parse_scenario(name)
    if scenario is not None:
        return replace(dmc_spec(scenario.task), name=name, make_kwargs={"name": name})
    task = randomized_task(name)
    if task is not None:  # the task's observation, then the scenario's parameters
        base = dmc_spec(task)
        extra = len(condition_keys(task))
        return replace(base, name=name, obs_dim=base.obs_dim + extra, make_kwargs={"name": name})
    if name.endswith(HARD) and name.removesuffix(HARD) in DMC_TASKS:
        return replace(dmc_spec(name.removesuffix(HARD)), name=name, gym_id=gym_id(name))
    if name not in DMC_TASKS:
        raise GenworldError(
            f"unknown DeepMind Control task {name!r}: choose one of {', '.join(DMC_TASKS)} "
            f"(or one of them with {HARD}: its hard, sparse variant)"
        )
    domain, _ = DMC_TASKS[name]
    return EnvSpec(
        name=name,
        gym_id=gym_id(name),
        obs_dim=sum(size for _, size in OBS_KEYS[domain]),
        act_dim=ACT_DIMS[domain],
        max_episode_steps=EPISODE_STEPS,
        ref_min_score=0.0,
        ref_max_score=1000.0,
        termination=never_terminates,
    )


def gym_id(name: str) -> str:
    return f"genworld/DMC-{name.removeprefix('dmc-')}-v0"


def _prepare() -> None:
    """Before dm_control loads a task: numpy 2's missing ``np.in1d`` restored (see the module
    docstring), no rendering backend probed without a display, and a one-line error naming the
    extra when dm_control is not installed."""
    if not hasattr(np, "in1d"):
        np.in1d = np.isin  # dm_control 1.0.28 quadruped; identical semantics
    if "MUJOCO_GL" not in os.environ and not os.environ.get("DISPLAY"):
        os.environ["MUJOCO_GL"] = "disable"  # state observations only: nothing is rendered
    try:
        import dm_control.suite  # noqa: F401
    except ImportError:
        raise GenworldError(
            "DeepMind Control tasks need the dmc extra: pip install -e '.[dmc]' "
            "(dm-control==1.0.28)"
        ) from None


_PROTOTYPES: dict[tuple[str, str], Any] = {}
"""One never-stepped ``suite.load`` environment per (domain, task) in this process."""


def _load(domain: str, task: str, seed: int | None):
    """The environment ``dm_control.suite.load(domain, task)`` gives, its task's random state
    seeded. MuJoCo compiles a suite model from XML in ~60 ms, a sixth of a 16-env lane's
    100k-step collection: the first environment of a (domain, task) is kept unstepped and later
    ones copy its compiled physics (model and data) and its task (tested step for step against
    ``suite.load``)."""
    import copy

    _prepare()
    from dm_control import suite

    key = (domain, task)
    if key not in _PROTOTYPES:
        _PROTOTYPES[key] = suite.load(domain, task)
    prototype = _PROTOTYPES[key]
    env = copy.copy(prototype)  # the same time limit, control steps and flags
    env._physics = prototype.physics.copy()
    env._physics.legacy_step = prototype.physics.legacy_step  # set by Environment, not copied
    env._task = copy.deepcopy(prototype.task)
    env._task.random.seed(seed)
    return env


class DMCEnv(gym.Env):
    """One dm_control suite task as a Gymnasium env (see the module docstring)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, name: str, action_repeat: int = 1):
        if action_repeat < 1 or EPISODE_STEPS % action_repeat:
            raise GenworldError(
                f"action_repeat={action_repeat}: give a divisor of {EPISODE_STEPS} (1, 2, 4, 5, …)"
            )
        spec = dmc_spec(name)
        scenario = parse_scenario(name)
        self.randomized = randomized_task(name)
        self.hard = scenario is None and self.randomized is None and name.endswith(HARD)
        base = scenario.task if scenario else self.randomized or name.removesuffix(HARD)
        self.name, self.domain, self.task = name, *DMC_TASKS[base]
        self.keys = [key for key, _ in OBS_KEYS[self.domain]]
        self.action_repeat = action_repeat
        self.condition = None  # the drawn scenario's parameters (``<task>@train`` only)
        if scenario is None and self.randomized is None:
            self.env = _load(self.domain, self.task, None)
        else:
            _prepare()
            self.env = load_scenario(scenario or draw_training_scenario(base, self.np_random), None)
        bounds = self.env.action_spec()
        self.low, self.high = bounds.minimum.astype(np.float64), bounds.maximum.astype(np.float64)
        self.half_range = 0.5 * (self.high - self.low)
        self.unit_bounds = bool(np.all(self.low == -1.0) and np.all(self.high == 1.0))
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (spec.obs_dim,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (spec.act_dim,), np.float32)

    def observation(self, time_step) -> np.ndarray:
        """The flattened observation of a dm_control time step (``OBS_KEYS`` order)."""
        parts = [np.asarray(time_step.observation[key]).reshape(-1) for key in self.keys]
        if self.condition is not None:
            parts.append(self.condition)
        return np.concatenate(parts).astype(np.float32)

    def env_action(self, action: np.ndarray) -> np.ndarray:
        """An action in [-1, 1] as the task's own (affine onto its bounds)."""
        # (ufuncs, not np.clip's wrapper: this runs once per step)
        a = np.minimum(np.maximum(np.asarray(action, dtype=np.float64), -1.0), 1.0)
        return a if self.unit_bounds else self.low + (a + 1.0) * self.half_range

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if self.randomized is not None:  # a new training scenario (the episode's seed draws it)
            scenario = draw_training_scenario(self.randomized, self.np_random)
            self.env = load_scenario(scenario, int(self.np_random.integers(2**31 - 1)))
            self.condition = condition(scenario)
        elif seed is not None:
            self.env.task.random.seed(seed)
        return self.observation(self.env.reset()), {}

    def step(self, action):
        """One agent step (``action_repeat`` control steps). A hard variant's ``info`` has
        ``sparse_hits``: its control steps whose task reward reached the threshold (paid)."""
        reward, native, hits = 0.0, self.env_action(action), 0
        threshold = hard_threshold(self.domain)
        for _ in range(self.action_repeat):
            time_step = self.env.step(native)
            step_reward = float(time_step.reward or 0.0)
            if self.hard:
                reward += hard_reward(step_reward, native, threshold)
                hits += step_reward >= threshold
            else:
                reward += step_reward
            if time_step.last():
                break
        terminated = time_step.last() and time_step.discount == 0.0
        truncated = time_step.last() and not terminated
        info = {"sparse_hits": hits} if self.hard else {}
        return self.observation(time_step), reward, terminated, truncated, info


def register() -> None:
    """Register every ``DMC_TASKS`` env and its hard variant with Gymnasium (cheap: dm_control
    loads on make)."""
    for name in (*DMC_TASKS, *(task + HARD for task in DMC_TASKS)):
        if gym_id(name) not in gym.registry:
            gym.register(
                id=gym_id(name),
                entry_point="genworld.envs.dmc:DMCEnv",
                max_episode_steps=EPISODE_STEPS,
                kwargs={"name": name},
            )


register()
