"""Groups of copies of one Gymnasium env for online agents (PPO): any genworld env or Gymnasium
id, Box or Discrete actions, same-step auto-reset (gymnasium 1.0's vector envs reset on the next
step), seeded episodes, actions given in [-1, 1] and mapped to the env's Box."""

from __future__ import annotations

from dataclasses import dataclass

import gymnasium as gym
import numpy as np

from genworld.errors import GenworldError


@dataclass(frozen=True)
class EnvInfo:
    name: str
    obs_dim: int
    act_dim: int
    """Action dims (Box) or number of choices (Discrete)."""
    discrete: bool
    low: tuple[float, ...] = ()
    high: tuple[float, ...] = ()


def make_gym_env(name: str) -> gym.Env:
    """A genworld env (registry variant) by name, else ``gymnasium.make(name)``."""
    from genworld.envs.registry import ENV_SPECS, make_env

    if name in ENV_SPECS or name.startswith(("cheetah-vel-", "ant-dir-", "ant-fwd-back-")):
        return make_env(name)
    try:
        return gym.make(name)
    except gym.error.Error as err:
        raise GenworldError(
            f"unknown env {name!r}: not a genworld env or Gymnasium id ({err})"
        ) from None


def env_info(name: str) -> EnvInfo:
    env = make_gym_env(name)
    obs_space, act_space = env.observation_space, env.action_space
    env.close()
    obs_dim = int(np.prod(obs_space.shape))
    if isinstance(act_space, gym.spaces.Discrete):
        return EnvInfo(name, obs_dim, int(act_space.n), True)
    if isinstance(act_space, gym.spaces.Box):
        low, high = act_space.low.reshape(-1), act_space.high.reshape(-1)
        return EnvInfo(
            name, obs_dim, len(low), False, tuple(map(float, low)), tuple(map(float, high))
        )
    raise GenworldError(f"{name}: action space {act_space} is neither Box nor Discrete")


class EnvGroup:
    """``copies`` copies of one env with same-step auto-reset and seeded episodes."""

    def __init__(self, info: EnvInfo, copies: int, seed: int, key: int = 0):
        self.info, self.key = info, key
        self.envs = [make_gym_env(info.name) for _ in range(copies)]
        self.rng = np.random.default_rng(seed)
        self.episode_return = np.zeros(copies)
        self.discounted = np.zeros(copies)
        self.finished: list[float] = []

    def reset(self) -> np.ndarray:
        seeds = self.rng.integers(0, 2**31 - 1, len(self.envs))
        return np.stack(
            [e.reset(seed=int(s))[0].reshape(-1) for e, s in zip(self.envs, seeds, strict=True)]
        )

    def to_env_actions(self, actions: np.ndarray) -> list:
        if self.info.discrete:
            return [int(a) for a in actions[:, 0]]
        low, high = np.array(self.info.low), np.array(self.info.high)
        u = np.clip(actions[:, : self.info.act_dim], -1.0, 1.0)
        return list(low + (u + 1.0) * 0.5 * (high - low))

    def step(self, actions: np.ndarray):
        """→ next observations (reset ones where an episode ended), rewards, terminated, done."""
        n, obs = len(self.envs), []
        rewards, terminated, done = np.zeros(n), np.zeros(n, bool), np.zeros(n, bool)
        for i, (env, action) in enumerate(
            zip(self.envs, self.to_env_actions(actions), strict=True)
        ):
            o, r, term, trunc, _ = env.step(action)
            rewards[i], terminated[i], done[i] = r, term, term or trunc
            self.episode_return[i] += r
            if done[i]:
                self.finished.append(float(self.episode_return[i]))
                self.episode_return[i] = 0.0
                o, _ = env.reset(seed=int(self.rng.integers(0, 2**31 - 1)))
            obs.append(np.asarray(o).reshape(-1))
        return np.stack(obs), rewards, terminated, done

    def close(self) -> None:
        for env in self.envs:
            env.close()
