import numpy as np
import pytest

from genworld.envs import ENV_SPECS, get_env_spec, make_env
from genworld.errors import GenworldError

# PROTOCOL.md, D4RL gym_mujoco/__init__.py
PROTOCOL_REFS = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
}


@pytest.mark.parametrize("name", sorted(ENV_SPECS))
def test_spec_matches_simulator(name):
    spec = get_env_spec(name)
    env = make_env(name)
    assert env.observation_space.shape == (spec.obs_dim,)
    assert env.action_space.shape == (spec.act_dim,)
    assert env.spec.max_episode_steps == spec.max_episode_steps
    assert (spec.ref_min_score, spec.ref_max_score) == PROTOCOL_REFS[name]


def test_ant_uses_27_dim_variant():
    assert get_env_spec("ant").obs_dim == 27
    assert get_env_spec("ant").make_kwargs == {"include_cfrc_ext_in_observation": False}


def test_normalized_score_arithmetic():
    hopper = get_env_spec("hopper")
    assert hopper.normalized_score(-20.272305) == pytest.approx(0.0)
    assert hopper.normalized_score(3234.3) == pytest.approx(100.0)
    # 1627.0 = halfway: 100 * (1607.0139 - (-20.27)) / 3254.57 = 50.0
    assert hopper.normalized_score((3234.3 - 20.272305) / 2) == pytest.approx(50.0)
    cheetah = get_env_spec("halfcheetah")
    assert cheetah.normalized_score(5000.0) == pytest.approx(100 * 5280.178953 / 12415.178953)
    # a std is scaled, never shifted
    assert cheetah.normalized_std(124.15178953) == pytest.approx(1.0)
    np.testing.assert_allclose(hopper.normalized_score(np.array([3234.3, -20.272305])), [100, 0])


def test_unknown_env_is_a_clear_error():
    with pytest.raises(GenworldError, match="unknown environment 'hoper'.*hopper"):
        get_env_spec("hoper")
