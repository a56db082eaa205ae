"""Task families (cheetah-vel, ant-dir, ant-fwd-back): rewards by hand, splits, registration,
ids."""

import gymnasium as gym
import numpy as np
import pytest

from genworld.data.ids import parse_dataset_id
from genworld.envs import get_env_spec, make_env
from genworld.envs.tasks import FAMILIES, split
from genworld.errors import GenworldError


def test_splits_are_as_specified():
    train, test = split("cheetah-vel")
    ten = [0, 4, 9, 13, 17, 22, 26, 30, 35, 39]  # round(linspace(0, 39, 10))
    assert train == ten[:5] and test == ten[5:]
    train, test = split("ant-dir")
    assert len(train) == len(test) == 5
    # ant-dir's directions are random: the ten are picked at equal intervals of the angle order,
    # so the training tasks are the first half-turn and the unseen ones the second
    angles = FAMILIES["ant-dir"].goals()[train + test]
    assert list(angles) == sorted(angles)
    assert angles[4] < np.pi < angles[5]


def test_unseen_tasks_report_their_distance_to_the_nearest_training_task():
    from genworld.envs.tasks import unseen_distances

    near = unseen_distances("cheetah-vel")
    assert near == pytest.approx(
        {
            "cheetah-vel-22": 0.375,
            "cheetah-vel-26": 0.675,
            "cheetah-vel-30": 0.975,
            "cheetah-vel-35": 1.35,
            "cheetah-vel-39": 1.65,
        }
    )
    ant = unseen_distances("ant-dir")
    assert set(ant) == {f"ant-dir-{i}" for i in split("ant-dir")[1]}
    assert all(0 <= d <= 180 for d in ant.values())
    assert min(ant.values()) < 10  # the last direction comes back near the first (Fig. 4)
    assert split("cheetah-vel", scheme="prompt-dt")[1] == [2, 7, 15, 23, 26]
    assert split("ant-dir", scheme="prompt-dt")[1] == [6, 17, 23, 30, 41]
    assert len(split("ant-dir", scheme="prompt-dt")[0]) == 45


def test_ant_fwd_back_is_ant_dir_forward_and_back_with_both_tasks_training():
    from genworld.envs.tasks import task_reward_fn, unseen_distances

    np.testing.assert_allclose(FAMILIES["ant-fwd-back"].goals(), [0.0, np.pi])
    for scheme in ("paper", "prompt-dt"):
        assert split("ant-fwd-back", scheme=scheme) == ([0, 1], [])
    assert unseen_distances("ant-fwd-back") == {}
    back = get_env_spec("ant-fwd-back-1")
    assert back.make_kwargs["goal_direction"] == pytest.approx(np.pi)
    assert (back.obs_dim, back.act_dim) == (27, 8)
    # running along +x is rewarded forward and penalised backward by the same speed
    obs = np.zeros((1, 27), np.float32)
    obs[0, 13] = 2.0
    import torch

    obs, act = torch.as_tensor(obs), torch.zeros(1, 8)
    forward, backward = (task_reward_fn(f"ant-fwd-back-{i}")(obs, act, obs) for i in (0, 1))
    assert float(forward) == pytest.approx(3.0) and float(backward) == pytest.approx(-1.0)


def test_goals_match_the_protocol():
    vel = FAMILIES["cheetah-vel"].goals()
    np.testing.assert_allclose(vel, np.linspace(0.075, 3.0, 40))
    dirs = FAMILIES["ant-dir"].goals()
    assert dirs.shape == (50,) and dirs.min() >= 0 and dirs.max() < 2 * np.pi
    np.testing.assert_array_equal(dirs, FAMILIES["ant-dir"].goals())  # fixed seed


def test_cheetah_vel_reward_by_hand():
    env = make_env("cheetah-vel-10")
    goal = np.linspace(0.075, 3.0, 40)[10]
    env.reset(seed=0)
    data = env.unwrapped.data
    rng = np.random.default_rng(0)
    for _ in range(20):
        action = rng.uniform(-1, 1, 6)
        x_before = data.qpos[0]
        _, reward, terminated, _, _ = env.step(action)
        v = (data.qpos[0] - x_before) / env.unwrapped.dt
        assert reward == pytest.approx(-abs(v - goal) - 0.05 * np.sum(action**2), rel=1e-9)
        assert not terminated


def test_ant_dir_reward_by_hand_and_episode_length():
    env = make_env("ant-dir-3")
    theta = FAMILIES["ant-dir"].goals()[3]
    obs, _ = env.reset(seed=0)
    assert obs.shape == (27,)
    data = env.unwrapped.data
    rng = np.random.default_rng(1)
    steps = 0
    while True:
        action = rng.uniform(-1, 1, 8) * 0.3
        xy_before = data.body("torso").xpos[:2].copy()  # Ant-v5 measures the torso body
        _, reward, terminated, truncated, _ = env.step(action)
        v = (data.body("torso").xpos[:2] - xy_before) / env.unwrapped.dt
        forces = np.clip(data.cfrc_ext, -1, 1)
        expected = (
            v @ [np.cos(theta), np.sin(theta)]
            - 0.5 * np.sum(action**2)
            - 0.5e-3 * np.sum(forces**2)
            + 1.0
        )
        assert reward == pytest.approx(expected, rel=1e-9, abs=1e-9)
        steps += 1
        if terminated or truncated:
            break
    assert steps <= 200 and (terminated or steps == 200)


def test_task_envs_resolve_like_robots_and_are_registered():
    spec = get_env_spec("cheetah-vel-7")
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (17, 6, 200)
    assert spec.gym_id in gym.registry
    assert get_env_spec("ant-dir-49").act_dim == 8
    for bad in ("cheetah-vel-40", "ant-dir-50"):
        with pytest.raises(GenworldError, match="has tasks"):
            get_env_spec(bad)
    dataset = parse_dataset_id("cheetah-vel-7-expert")
    assert (dataset.env, dataset.quality) == ("cheetah-vel-7", "expert")
    assert str(parse_dataset_id("genworld/ant-dir-3/medium-replay-v0")) == (
        "genworld/ant-dir-3/medium-replay-v0"
    )
    assert parse_dataset_id("hopper-medium-expert").quality == "medium-expert"
