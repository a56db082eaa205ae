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
        return replace(spec, name=f"{spec.name}@obs={self.kind}", obs_dim=spec.obs_dim + extra)


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
        self.fixed = np.sort(np.random.default_rng([perturbation.seed, 1]).permutation(d)[: self.k])
        if perturbation.kind == "add-d":
            self.observation_space = gym.spaces.Box(-np.inf, np.inf, (d + self.k,), space.dtype)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self.rng = np.random.default_rng([self.p.seed, 2, seed])
        return super().reset(seed=seed, options=options)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        obs = np.array(observation, copy=True)
        kind = self.p.kind
        if kind == "add-g":
            obs = obs + self.rng.normal(0.0, self.p.noise_std, obs.shape).astype(obs.dtype)
        elif kind == "add-d":
            obs = np.concatenate([obs, self.rng.normal(0.0, 1.0, self.k).astype(obs.dtype)])
        elif kind == "msk-r":
            obs[self.rng.choice(self.d, self.k, replace=False)] = 0
        else:
            obs[self.fixed] = 0
        return obs
