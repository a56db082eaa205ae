"""Termination functions agree with the simulator's own `terminated` on thousands of states."""

import numpy as np
import pytest

from genworld.envs import ENV_SPECS, make_env


def _collect(name: str, steps: int, seed: int):
    env = make_env(name)
    rng = np.random.default_rng(seed)
    next_obs, terminated = [], []
    env.reset(seed=seed)
    for t in range(steps):
        # vary the action scale so some episodes live long and some fall fast
        scale = [0.1, 0.5, 1.0][(t // 200) % 3]
        obs, _, term, trunc, _ = env.step(rng.uniform(-scale, scale, env.action_space.shape))
        next_obs.append(obs)
        terminated.append(term)
        if term or trunc:
            env.reset(seed=int(rng.integers(1 << 30)))
    return np.array(next_obs), np.array(terminated)


@pytest.mark.parametrize("name", sorted(ENV_SPECS))
def test_termination_matches_simulator(name):
    next_obs, terminated = _collect(name, 3000, seed=1)
    predicted = ENV_SPECS[name].termination(next_obs)
    assert predicted.dtype == bool and predicted.shape == terminated.shape
    np.testing.assert_array_equal(predicted, terminated)
    if name in ("hopper", "walker2d"):
        assert terminated.sum() > 20  # both classes really occur in the sample


def test_hand_made_states():
    hopper = ENV_SPECS["hopper"].termination
    ok = np.zeros((1, 11))
    ok[0, 0] = 1.25
    assert not hopper(ok)[0]
    low = ok.copy()
    low[0, 0] = 0.7  # z must be > 0.7 (open interval)
    tilted = ok.copy()
    tilted[0, 1] = 0.2  # |angle| must be < 0.2
    wild = ok.copy()
    wild[0, 4] = 100.0  # state entries must be inside (-100, 100)
    assert hopper(np.concatenate([low, tilted, wild])).all()
    walker = ENV_SPECS["walker2d"].termination
    states = np.zeros((4, 17))
    states[:, 0] = [1.2, 0.8, 2.0, 1.2]
    states[3, 1] = -1.0
    np.testing.assert_array_equal(walker(states), [False, True, True, True])
    ant = ENV_SPECS["ant"].termination
    states = np.zeros((4, 27))
    states[:, 0] = [0.5, 0.2, 1.0, 1.01]
    np.testing.assert_array_equal(ant(states), [False, False, False, True])
    states[0, 5] = np.nan
    assert ant(states)[0]
    assert not ENV_SPECS["halfcheetah"].termination(np.full((3, 17), 1e6)).any()
