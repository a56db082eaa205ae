"""The EnvSpec registry: exact keys, no substring dispatch. A name is a robot
(:mod:`genworld.envs.robots`), a task env of a family (:mod:`genworld.envs.tasks`), a
DeepMind Control task (:mod:`genworld.envs.dmc`, ``dmc-cheetah-run``) or a Meta-World task
(:mod:`genworld.envs.metaworld`, ``mw-reach-v3``), any of them with its observations perturbed
(:mod:`genworld.envs.perturb`: ``dmc-cheetah-run@torso=1.2@obs=add-g``)."""

from __future__ import annotations

import gymnasium as gym

import genworld.envs.tasks  # noqa: F401  (registers the task families with Gymnasium)
from genworld.envs.dmc import DMC_TASKS, dmc_spec
from genworld.envs.metaworld import mw_spec
from genworld.envs.perturb import Perturbation, PerturbedObservation, split_perturbed
from genworld.envs.robots import ENV_SPECS
from genworld.envs.tasks import task_spec
from genworld.errors import GenworldError
from genworld.types import EnvSpec

__all__ = ["ENV_SPECS", "get_env_spec", "make_env"]


def get_env_spec(name: str) -> EnvSpec:
    """Look up an env by its exact genworld name, with an error that lists the known ones."""
    base, perturbation = split_perturbed(name)
    if perturbation is not None:
        return perturbation.spec(get_env_spec(base))
    if name in ENV_SPECS:
        return ENV_SPECS[name]
    # cheetah-vel-7, ant-dir-23, dmc-cheetah-run, mw-reach-v3
    spec = task_spec(name) or dmc_spec(name) or mw_spec(name)
    if spec is not None:
        return spec
    raise GenworldError(
        f"unknown environment {name!r}: choose one of {', '.join(sorted(ENV_SPECS))}, a task "
        f"env (cheetah-vel-<0..39>, ant-dir-<0..49>, ant-fwd-back-<0..1>), a DeepMind Control task "
        f"({', '.join(DMC_TASKS)}) or a Meta-World task (mw-reach-v3, …: mw-<Meta-World v3 task>)"
    )


def make_env(
    name: str, seed: int | None = None, perturbation: Perturbation | None = None, **kwargs
) -> gym.Env:
    """A Gymnasium env for a registered name, with the registry's observation variant and,
    optionally, an observation perturbation (:mod:`genworld.envs.perturb`), also given by a name
    ``<env>@obs=<kind>``."""
    base, named = split_perturbed(name)
    if named is not None:
        if perturbation is not None:
            raise GenworldError(f"{name!r} names its perturbation: give no other")
        name, perturbation = base, named
    spec = get_env_spec(name)
    env = gym.make(spec.gym_id, **{**spec.make_kwargs, **kwargs})
    if perturbation is not None:
        env = PerturbedObservation(env, perturbation)
    if seed is not None:
        env.reset(seed=seed)
        env.action_space.seed(seed)
    return env
