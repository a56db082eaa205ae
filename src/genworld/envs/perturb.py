"""Observation perturbations (MrCoM, seed 002, Table 3) as seeded Gymnasium wrappers.

- ``add-g``: Gaussian noise on every dimension, N(0, ``noise_std``²), new each step;
- ``add-d``: ``k`` extra dimensions of N(0, 1) noise appended to the observation;
- ``msk-r``: ``k`` dimensions, drawn anew each step, set to zero;
- ``msk-f``: ``k`` dimensions, drawn once when the wrapper is made, set to zero every step.

``k = max(1, round(fraction · d))`` of the observation's ``d`` dims. The seed text names the four
kinds but not their sizes; ours, a documented choice: ``noise_std`` 0.1 (in the observation's own
units) and ``fraction`` 0.1 ("about 10%"), both fields of :class:`Perturbation`.

Every draw comes from the wrapper's own generator, seeded from ``Perturbation.seed`` and, at each
``reset(seed=s)``, from ``s`` too: the same seeds give the same perturbed episodes.
:func:`perturb_episode_observations` perturbs a recorded episode's observations exactly as the
wrapper reset with a seed would have (offline data of a perturbed scenario), and the registry
names a perturbed env ``<env>@obs=<kind>`` (default sizes and seed, :func:`perturbed_name`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import gymnasium as gym
import numpy as np

from genworld.errors import GenworldError
from genworld.types import EnvSpec

KINDS = ("add-g", "add-d", "msk-r", "msk-f")


@dataclass(frozen=True)
class Perturbation:
    kind: str
    """add-g, add-d, msk-r or msk-f (see the module docstring)."""
    noise_std: float = 0.1
    """add-g: standard deviation of the added noise, in the observation's units."""
    fraction: float = 0.1
    """add-d, msk-r, msk-f: share of the observation's dims added or zeroed (at least one)."""
    seed: int = 0
    """Seeds the noise, the masked dims of msk-f and, with each reset seed, every episode."""

    def validate(self, obs_dim: int | None = None) -> None:
        if self.kind not in KINDS:
            raise GenworldError(f"unknown perturbation {self.kind!r}: choose {', '.join(KINDS)}")
        if self.noise_std < 0 or not 0 < self.fraction <= 1:
            raise GenworldError(
                f"perturbation {self.kind}: noise_std must be ≥ 0 and fraction in (0, 1], got "
                f"{self.noise_std}, {self.fraction}"
            )
        if obs_dim is not None and self.kind.startswith("msk") and obs_dim < 2:
            raise GenworldError(
                f"perturbation {self.kind} zeroes dims of the observation: it needs at least 2, "
                f"the env has {obs_dim}"
            )

    def count(self, obs_dim: int) -> int:
        """``k``: dims added or zeroed."""
        return max(1, round(self.fraction * obs_dim))

    def spec(self, spec: EnvSpec) -> EnvSpec:
        """The EnvSpec of ``spec``'s env under this perturbation (add-d widens it)."""
        self.validate(spec.obs_dim)
        extra = self.count(spec.obs_dim) if self.kind == "add-d" else 0
        return replace(
            spec, name=perturbed_name(spec.name, self.kind), obs_dim=spec.obs_dim + extra
        )

    def fixed_dims(self, obs_dim: int) -> np.ndarray:
        """msk-f's zeroed dims: drawn once from ``seed``, sorted."""
        order = np.random.default_rng([self.seed, 1]).permutation(obs_dim)
        return np.sort(order[: self.count(obs_dim)])

    def episode_rng(self, reset_seed: int) -> np.random.Generator:
        """The generator of an episode reset with ``reset_seed``."""
        return np.random.default_rng([self.seed, 2, reset_seed])

    def apply(self, obs: np.ndarray, rng: np.random.Generator, fixed: np.ndarray) -> np.ndarray:
        """One observation ``(d,)`` perturbed with draws from ``rng`` (``fixed``: msk-f's dims)."""
        obs = np.array(obs, copy=True)
        d, k = obs.shape[0], self.count(obs.shape[0])
        if self.kind == "add-g":
            obs = obs + rng.normal(0.0, self.noise_std, obs.shape).astype(obs.dtype)
        elif self.kind == "add-d":
            obs = np.concatenate([obs, rng.normal(0.0, 1.0, k).astype(obs.dtype)])
        elif self.kind == "msk-r":
            obs[rng.choice(d, k, replace=False)] = 0
        else:
            obs[fixed] = 0
        return obs


PERTURBED = "@obs="
"""What separates an env's name from its perturbation's kind: ``dmc-cheetah-run@obs=add-g``."""


def perturbed_name(env: str, kind: str) -> str:
    """The registry name of ``env`` with its observations perturbed by ``kind``."""
    return f"{env}{PERTURBED}{kind}"


def split_perturbed(name: str) -> tuple[str, Perturbation | None]:
    """``<env>@obs=<kind>`` → (``<env>``, the kind's :class:`Perturbation` with its default
    sizes and seed); another name → (name, None)."""
    env, mark, kind = name.rpartition(PERTURBED)
    if not mark:
        return name, None
    perturbation = Perturbation(kind)
    perturbation.validate()
    return env, perturbation


def perturb_episode_observations(
    observations: np.ndarray, perturbation: Perturbation, reset_seed: int
) -> np.ndarray:
    """An episode's observations ``(T+1, d)`` as :class:`PerturbedObservation` reset with
    ``reset_seed`` gives them (the same draws in the same order): ``(T+1, d')``."""
    observations = np.asarray(observations)
    perturbation.validate(observations.shape[1])
    rng, fixed = (
        perturbation.episode_rng(reset_seed),
        perturbation.fixed_dims(observations.shape[1]),
    )
    return np.stack([perturbation.apply(o, rng, fixed) for o in observations])


class PerturbedObservation(gym.ObservationWrapper):
    """An env whose observations pass through a :class:`Perturbation`."""

    def __init__(self, env: gym.Env, perturbation: Perturbation):
        super().__init__(env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Box) or len(space.shape) != 1:
            raise GenworldError(
                f"perturbation {perturbation.kind} needs a flat Box observation, the env has {space}"
            )
        d = space.shape[0]
        perturbation.validate(d)
        self.p, self.d, self.k = perturbation, d, perturbation.count(d)
        self.rng = np.random.default_rng(perturbation.seed)
        self.fixed = perturbation.fixed_dims(d)
        if perturbation.kind == "add-d":
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (d + self.k,), space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = self.p.episode_rng(seed)
        return super().reset(seed=seed, options=options)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return self.p.apply(observation, self.rng, self.fixed)
