"""Meta-World tasks as genworld envs (MT1's goals, seeded), their success in the evaluation
records, and the scripted-noise datasets built from Meta-World's scripted policies."""

import json
import sys
import warnings

import numpy as np
import pytest
import torch

from genworld.envs import metaworld as mw
from genworld.envs.registry import get_env_spec, make_env
from genworld.errors import GenworldError

REACH = "mw-reach-v3"


def test_task_list_is_meta_worlds_own():
    """MW_TASKS is Meta-World 3.1.1's v3 task list, and every task has a scripted policy."""
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS
    from metaworld.policies import ENV_POLICY_MAP

    assert list(mw.MW_TASKS) == sorted(ALL_V3_ENVIRONMENTS) == sorted(ENV_POLICY_MAP)


@pytest.mark.parametrize("name", [REACH, "mw-push-v3", "mw-pick-place-v3"])
def test_spec_dims_episode_length_and_scores(name):
    spec = get_env_spec(name)
    assert (spec.obs_dim, spec.act_dim, spec.max_episode_steps) == (39, 4, 500)
    assert (spec.ref_min_score, spec.ref_max_score) == (0.0, 5000.0)  # 500 steps x [0, 10]
    assert spec.normalized_score(2500.0) == pytest.approx(50.0)
    env = make_env(name)
    assert env.observation_space.shape == (39,) and env.action_space.shape == (4,)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (39,) and obs.dtype == np.float32


def test_adapter_is_meta_world_step_for_step():
    """The env at goal k is Meta-World's own env with MT1's task k: same observations (as
    float32), rewards and success, for a fixed action sequence."""
    import metaworld

    env = make_env(REACH)
    obs, info = env.reset(seed=5)
    raw = metaworld.MT1("reach-v3", seed=mw.GOALS_SEED)
    own = raw.train_classes["reach-v3"]()
    own.set_task(raw.train_tasks[info["goal_index"]])
    own_obs, _ = own.reset()
    np.testing.assert_array_equal(obs, own_obs.astype(np.float32))
    for action in np.random.default_rng(0).uniform(-1, 1, (40, 4)).astype(np.float32):
        obs, reward, terminated, truncated, info = env.step(action)
        own_obs, own_reward, _, _, own_info = own.step(action)
        np.testing.assert_array_equal(obs, own_obs.astype(np.float32))
        assert reward == own_reward and info["success"] == bool(own_info["success"])
        assert not terminated and not truncated


def test_seeded_resets_repeat_and_sample_goals():
    """``reset(seed=s)`` picks the same goal (and start) in any env; seeds spread over goals."""
    a, b = make_env(REACH), make_env(REACH)
    for seed in (0, 1, 7):
        (obs_a, info_a), (obs_b, info_b) = a.reset(seed=seed), b.reset(seed=seed)
        np.testing.assert_array_equal(obs_a, obs_b)
        assert info_a == info_b
    goals = {a.reset(seed=s)[1]["goal_index"] for s in range(30)}
    assert len(goals) > 10
    observed_goals = {tuple(a.reset(seed=s)[0][36:]) for s in range(5)}
    assert len(observed_goals) > 1  # the goal is the observation's last 3 dims


def test_episode_is_500_steps_cut_by_the_time_limit():
    env = make_env(REACH)
    env.reset(seed=0)
    for t in range(500):
        _, _, terminated, truncated, info = env.step(np.zeros(4, np.float32))
        assert not terminated and truncated == (t == 499)
        assert isinstance(info["success"], bool)


class ScriptedAgent:
    """Meta-World's scripted reach policy behind the agent interface (padded obs in, actions
    out), for the evaluation records."""

    def __init__(self):
        self.policy = mw.scripted_policy("reach-v3")

    def act(self, observations: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            rows = [self.policy.get_action(o[:39]) for o in observations.numpy()]
        return torch.as_tensor(np.stack(rows), dtype=torch.float32)

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


def test_success_rate_is_in_the_evaluation_json_beside_the_return(tmp_path):
    from genworld.eval.scores import summarize
    from genworld.train.loop import eval_record, train_offline

    spec = get_env_spec(REACH)
    records = train_offline(
        "scripted",
        ScriptedAgent(),
        lambda generator: {"loss": 0.0},
        [spec],
        tmp_path,
        steps=1,
        eval_every=1,
        eval_episodes=2,
        seed=0,
        show_progress=False,
    )
    written = [json.loads(line) for line in (tmp_path / "eval.jsonl").read_text().splitlines()]
    assert written == records
    record = written[-1]
    assert record[f"eval/{REACH}/success_rate"] == 1.0  # the scripted policy reaches every goal
    assert record[f"eval/{REACH}/return"] > 4000.0
    assert summarize(records, [REACH], 1)[REACH]["last_k_success_rate"] == 1.0
    # envs that report no success keep their keys only
    hopper = eval_record([get_env_spec("hopper")], {"hopper": np.array([10.0])})
    assert not any("success" in key for key in hopper)


def test_bad_names_and_a_missing_extra_are_one_line_errors(monkeypatch):
    with pytest.raises(GenworldError, match=r"unknown Meta-World task 'mw-reach-v9'.*mw-reach-v3"):
        get_env_spec("mw-reach-v9")
    with pytest.raises(GenworldError, match=r"mw-reach-v3"):
        get_env_spec("metaworld-reach")
    monkeypatch.setitem(sys.modules, "metaworld", None)  # import metaworld now fails
    with pytest.raises(GenworldError, match=r"metaworld extra: pip install -e '\.\[metaworld\]'"):
        make_env(REACH)


SCRIPTED = "mw-reach-v3-scripted-noise"


def _arrays(dataset_id):
    from genworld.data.minari_io import read_episodes

    fields = ("observations", "actions", "rewards", "terminations", "truncations")
    return [getattr(ep, f) for ep in read_episodes(dataset_id) for f in fields]


def test_scripted_noise_build_checks_and_is_byte_identical_on_rebuild(tmp_path, monkeypatch):
    from genworld.cli import main
    from genworld.data.build import build_dataset
    from genworld.data.info import check_dataset

    card = build_dataset(SCRIPTED, steps=1000, seed=0, show_progress=False)
    assert card["dataset_id"] == "genworld/mw-reach-v3/scripted-noise-v0"
    assert [(s["sigma"], s["steps"]) for s in card["segments"]] == [
        (0.1, 200),
        (0.3, 200),
        (0.5, 200),
        (1.0, 200),
        (2.0, 200),
    ]
    assert 0.0 <= card["success_rate"] <= 1.0 and "WPT does not read them" in card["reward_free"]
    assert check_dataset(card["dataset_id"])["steps"] == 1000
    assert main(["data", "check", SCRIPTED]) == 0
    first = _arrays(card["dataset_id"])
    assert any(a.dtype == np.float32 and a.ndim == 1 and a.any() for a in first)  # rewards kept
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "again"))
    build_dataset(SCRIPTED, steps=1000, seed=0, show_progress=False)
    again = _arrays(card["dataset_id"])
    assert len(first) == len(again)
    assert all(a.tobytes() == b.tobytes() for a, b in zip(first, again, strict=True))


def test_stored_actions_are_the_policy_on_the_stored_observations_plus_noise():
    """Segment 0 (sigma 0.1): away from the clip, action - policy(observation) has std 0.1."""
    from genworld.data.build import build_dataset
    from genworld.data.minari_io import read_episodes

    card = build_dataset(SCRIPTED, steps=1000, seed=1, show_progress=False)
    episode = read_episodes(card["dataset_id"])[0]  # the first segment's only episode
    policy = mw.scripted_policy("reach-v3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        clean = np.clip([policy.get_action(o) for o in episode.observations[:-1]], -1, 1)
    inside = (np.abs(episode.actions) < 1.0) & (np.abs(clean) < 1.0)
    residuals = (episode.actions - clean)[inside]
    assert len(residuals) > 100 and 0.08 < residuals.std() < 0.12


def test_scripted_noise_ids_are_listed_and_only_for_meta_world(capsys):
    from genworld.data.build import missing_policies
    from genworld.data.ids import listed_dataset_ids, parse_dataset_id

    dataset = parse_dataset_id(SCRIPTED)
    assert (dataset.env, dataset.quality) == ("mw-reach-v3", "scripted-noise")
    assert parse_dataset_id("genworld/mw-reach-v3/scripted-noise-v0") == dataset
    listed = {str(d) for d in listed_dataset_ids()}
    assert {f"genworld/mw-{t}/scripted-noise-v0" for t in mw.MW_TASKS} <= listed
    assert missing_policies(SCRIPTED) == []
    with pytest.raises(GenworldError, match=r"quality 'medium' for mw-reach-v3.*scripted-noise"):
        parse_dataset_id("mw-reach-v3-medium")
    with pytest.raises(GenworldError, match=r"quality 'scripted-noise' for hopper"):
        parse_dataset_id("hopper-scripted-noise")
    with pytest.raises(GenworldError, match=r"unknown Meta-World task 'mw-reach-v7'"):
        parse_dataset_id("mw-reach-v7-scripted-noise")


def test_data_info_shows_success_per_noise_level(capsys):
    from genworld.cli import main
    from genworld.data.build import build_dataset

    build_dataset(SCRIPTED, steps=1000, seed=0, show_progress=False)
    assert main(["data", "info", SCRIPTED]) == 0
    out = capsys.readouterr().out
    assert "success rate:" in out and "sigma 0.1:" in out and "sigma 2:" in out
    assert "scripted policies" in out
