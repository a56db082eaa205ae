"""Observation perturbations (MrCoM Table 3): each wrapper's statistics, seeding and errors."""

import gymnasium as gym
import numpy as np
import pytest

from genworld.envs.perturb import Perturbation, PerturbedObservation
from genworld.envs.registry import get_env_spec, make_env
from genworld.errors import GenworldError


class Constant(gym.Env):
    """Observations of ``value`` in ``d`` dims, forever."""

    def __init__(self, d: int = 20, value: float = 1.0):
        self.value = value
        self.observation_space = gym.spaces.Box(-np.inf, np.inf, (d,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.full(self.observation_space.shape, self.value, np.float32), {}

    def step(self, action):
        return np.full(self.observation_space.shape, self.value, np.float32), 0.0, False, False, {}


def _observations(kind: str, steps: int = 2_000, d: int = 20, seed: int = 0, **kwargs):
    env = PerturbedObservation(Constant(d), Perturbation(kind, seed=seed, **kwargs))
    first, _ = env.reset(seed=5)
    return np.stack([first] + [env.step(np.zeros(1))[0] for _ in range(steps - 1)])


def test_add_g_adds_gaussian_noise_of_the_chosen_std_to_every_dim():
    obs = _observations("add-g") - 1.0  # (steps, 20)
    assert abs(obs.mean()) < 0.01 and obs.std() == pytest.approx(0.1, rel=0.05)
    assert np.all(obs.std(0) > 0.08)  # every dim
    assert _observations("add-g", noise_std=0.5).std() == pytest.approx(0.5, rel=0.05)


def test_add_d_appends_about_ten_percent_noise_dims_and_keeps_the_rest():
    obs = _observations("add-d", d=30)
    assert obs.shape == (2_000, 33)  # round(0.1 * 30) = 3 extra dims
    np.testing.assert_array_equal(obs[:, :30], 1.0)
    assert abs(obs[:, 30:].mean()) < 0.05 and obs[:, 30:].std() == pytest.approx(1.0, rel=0.05)
    spec = Perturbation("add-d").spec(get_env_spec("hopper"))
    assert (spec.name, spec.obs_dim) == ("hopper@obs=add-d", 12)


def test_msk_r_zeroes_k_random_dims_per_step():
    obs = _observations("msk-r")
    assert np.all((obs == 0).sum(1) == 2)  # round(0.1 * 20)
    frequency = (obs == 0).mean(0)  # each dim masked ~10% of the steps
    assert np.all(np.abs(frequency - 0.1) < 0.04)


def test_msk_f_zeroes_the_same_dims_every_step_chosen_by_the_seed():
    obs = _observations("msk-f")
    masked = obs[0] == 0
    assert masked.sum() == 2 and np.all((obs == 0) == masked)
    other = _observations("msk-f", seed=7)[0] == 0
    assert not np.array_equal(masked, other)


def test_same_seeds_give_the_same_perturbed_episode():
    for kind in ("add-g", "add-d", "msk-r"):
        np.testing.assert_array_equal(_observations(kind, 50), _observations(kind, 50))
        assert not np.array_equal(_observations(kind, 50), _observations(kind, 50, seed=1))


def test_perturbed_mujoco_env_runs_and_bad_input_is_one_line():
    env = make_env("hopper", seed=0, perturbation=Perturbation("add-d"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (12,) and env.observation_space.shape == (12,)
    with pytest.raises(GenworldError, match="unknown perturbation 'add-x': choose add-g"):
        Perturbation("add-x").validate()
    with pytest.raises(GenworldError, match="needs at least 2"):
        PerturbedObservation(Constant(1), Perturbation("msk-f"))
    with pytest.raises(GenworldError, match="fraction in"):
        Perturbation("msk-r", fraction=0.0).validate()
    discrete = gym.make("CartPole-v1")
    discrete.observation_space = gym.spaces.Discrete(3)
    with pytest.raises(GenworldError, match="needs a flat Box observation"):
        PerturbedObservation(discrete, Perturbation("add-g"))
