"""DeepMind Control tasks as genworld envs: the adapter is dm_control, step for step."""

import builtins

import numpy as np
import pytest

from genworld.envs import dmc
from genworld.envs.registry import get_env_spec, make_env
from genworld.errors import GenworldError


def _raw(name: str, seed: int):
    """dm_control's own environment, loaded the suite's way (not through genworld's copies)."""
    from dm_control import suite

    dmc._prepare()
    domain, task = dmc.DMC_TASKS[name]
    return suite.load(domain, task, task_kwargs={"random": seed})


@pytest.mark.parametrize("name", ["dmc-cheetah-run", "dmc-walker-walk", "dmc-quadruped-walk"])
def test_dmc_adapter_equals_dm_control_step_for_step(name):
    """Same seed, same actions: the adapter's observations (OBS_KEYS order, float32) and rewards
    are dm_control's own; quadruped also checks the np.in1d shim and the affine action map."""
    env = make_env(name)
    obs, _ = env.reset(seed=3)
    raw = _raw(name, 3)
    time_step = raw.reset()
    adapter = env.unwrapped
    np.testing.assert_array_equal(obs, adapter.observation(time_step))
    actions = np.random.default_rng(0).uniform(-1, 1, (60, env.action_space.shape[0]))
    for action in actions:
        obs, reward, terminated, truncated, _ = env.step(action.astype(np.float32))
        time_step = raw.step(adapter.env_action(action.astype(np.float32)))
        expected = np.concatenate(
            [np.asarray(time_step.observation[k]).reshape(-1) for k in adapter.keys]
        ).astype(np.float32)
        np.testing.assert_array_equal(obs, expected)
        assert reward == time_step.reward and not terminated and not truncated


@pytest.mark.parametrize("name", list(dmc.DMC_TASKS))
def test_dmc_spec_matches_dm_control(name):
    """OBS_KEYS (order and sizes) and ACT_DIMS are what dm_control reports for every task."""
    raw = _raw(name, 0)
    domain, _ = dmc.DMC_TASKS[name]
    keys = [(k, int(np.prod(v.shape))) for k, v in raw.observation_spec().items()]
    assert keys == list(dmc.OBS_KEYS[domain])
    spec = get_env_spec(name)
    assert spec.obs_dim == sum(n for _, n in keys) and spec.act_dim == raw.action_spec().shape[0]
    assert spec.normalized_score(500.0) == pytest.approx(50.0)  # return / 10
    assert spec.max_episode_steps == dmc.EPISODE_STEPS


def test_a_hard_variant_is_the_task_made_sparse_and_action_penalised_as_wpts_code():
    """``dmc-walker-walk-hard``: the same simulation; each step's reward is 0 below 0.6, then
    0.1 × ‖a‖ is subtracted (NCRL's HardTaskWrapper with its finetune config)."""
    hard, plain = make_env("dmc-walker-walk-hard"), make_env("dmc-walker-walk")
    spec = get_env_spec("dmc-walker-walk-hard")
    assert (spec.obs_dim, spec.act_dim) == (24, 6) and spec.name == "dmc-walker-walk-hard"
    a, _ = hard.reset(seed=2)
    b, _ = plain.reset(seed=2)
    np.testing.assert_array_equal(a, b)
    actions = np.random.default_rng(1).uniform(-1, 1, (40, 6)).astype(np.float32)
    for action in actions:
        a, r_hard, _, _, info = hard.step(action)
        b, r_plain, _, _, plain_info = plain.step(action)
        np.testing.assert_array_equal(a, b)
        sparse = 0.0 if r_plain < 0.6 else r_plain
        assert r_hard == pytest.approx(sparse - 0.1 * np.linalg.norm(action.astype(np.float64)))
        assert info == {"sparse_hits": int(r_plain >= 0.6)} and plain_info == {}
    assert dmc.hard_reward(0.7, np.zeros(6), 0.6) == 0.7
    assert dmc.hard_reward(0.5, np.zeros(6), 0.6) == 0.0


def test_hard_thresholds_follow_wpts_code():
    """NCRL's finetune.py: 0.2 for the cheetah's tasks, 0.6 for the others."""
    assert dmc.hard_threshold("cheetah") == 0.2 and dmc.hard_threshold("walker") == 0.6
    assert make_env("dmc-cheetah-run-hard").unwrapped.domain == "cheetah"


def test_action_map_reaches_the_task_bounds():
    env = make_env("dmc-quadruped-walk").unwrapped
    np.testing.assert_allclose(env.env_action(-np.ones(12)), env.low)
    np.testing.assert_allclose(env.env_action(np.ones(12)), env.high)
    assert (env.high != 1.0).any()  # quadruped's bounds are not [-1, 1]


def test_episode_is_1000_control_steps_and_action_repeat_sums_rewards():
    plain, repeated = (
        make_env("dmc-cartpole-balance"),
        make_env("dmc-cartpole-balance", action_repeat=4),
    )
    plain.reset(seed=1)
    repeated.reset(seed=1)
    action = np.zeros(1, np.float32)
    summed = sum(plain.step(action)[1] for _ in range(4))
    assert repeated.step(action)[1] == pytest.approx(summed, abs=1e-12)
    steps = 1
    while True:
        *_, terminated, truncated, _ = repeated.step(action)
        steps += 1
        if terminated or truncated:
            break
    assert (steps, terminated, truncated) == (250, False, True)  # a time limit, not a terminal
    with pytest.raises(GenworldError, match="action_repeat=3"):
        dmc.DMCEnv("dmc-cartpole-balance", action_repeat=3)


def test_bad_names_and_a_missing_extra_are_one_line_errors(monkeypatch):
    with pytest.raises(GenworldError, match="unknown DeepMind Control task 'dmc-cheetah-fly'"):
        get_env_spec("dmc-cheetah-fly")
    real_import = builtins.__import__

    def no_dm_control(name, *args, **kwargs):
        if name.startswith("dm_control"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_dm_control)
    with pytest.raises(GenworldError, match=r"dmc extra: pip install -e '\.\[dmc\]'") as err:
        dmc._load("cheetah", "run", 0)
    assert "\n" not in str(err.value)


def test_dmc_envs_run_in_the_env_pool():
    from genworld.envs.vector import EnvPool

    pool = EnvPool("dmc-cheetah-run", 2, seed=0)
    obs = pool.reset()
    assert obs.shape == (2, 17)
    result = pool.step(np.zeros((2, 6), np.float32))
    assert result.observations.shape == (2, 17) and result.rewards.shape == (2,)


def test_a_dmc_random_dataset_builds_checks_and_says_where_it_comes_from(tmp_path, monkeypatch):
    from genworld.api import build_dataset, check_dataset, dataset_info, info_card

    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    card = build_dataset("dmc-cartpole-balance-random", steps=1_200, seed=0, show_progress=False)
    assert card["steps"] == 1_200 and "DeepMind Control" in card["provenance"]
    assert check_dataset("genworld/dmc-cartpole-balance/random-v0")["ok"] is True
    info = dataset_info("dmc-cartpole-balance-random")
    assert (info["ref_min_score"], info["ref_max_score"]) == (0.0, 1000.0)
    assert "uniform random actions" in info_card(info)
