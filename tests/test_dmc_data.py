"""DeepMind Control datasets: the scenario-randomized training env, the scenario-conditioned
behaviour policy and MrCoM's qualities, and WPT's reward-free exploration data."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

pytest.importorskip("dm_control")

from genworld.data.build import build_dataset, dmc_behaviour  # noqa: E402
from genworld.data.ids import parse_dataset_id  # noqa: E402
from genworld.envs.registry import get_env_spec, make_env  # noqa: E402
from genworld.envs.scenarios import ScenarioRanges, slug, unslug  # noqa: E402
from genworld.errors import GenworldError  # noqa: E402


def test_the_randomized_env_draws_a_training_scenario_per_reset_and_shows_it():
    spec = get_env_spec("dmc-cheetah-run@train")
    assert spec.obs_dim == get_env_spec("dmc-cheetah-run").obs_dim + 3  # torso, length, speed
    env = make_env("dmc-cheetah-run@train")
    first, _ = env.reset(seed=3)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)  # the episode's seed draws the scenario
    ranges = ScenarioRanges().train
    drawn = {tuple(env.reset(seed=s)[0][-3:]) for s in range(6)}
    assert len(drawn) == 6
    for torso, length, speed in drawn:  # shown as scale - 1
        assert ranges["torso"][0] <= torso + 1 <= ranges["torso"][1]
        assert ranges["length"][0] <= length + 1 <= ranges["length"][1]
        assert ranges["speed"][0] <= speed + 1 <= ranges["speed"][1]
    last, _ = env.reset(seed=9)
    obs, *_ = env.step(np.zeros(6))
    np.testing.assert_array_equal(obs[-3:], last[-3:])  # the scenario holds for the episode
    assert get_env_spec("dmc-walker-stand@train").obs_dim == 24 + 2  # no speed to vary


@pytest.mark.parametrize(
    "name, expected",
    [
        ("dmc-cheetah-run@torso=1.2,speed=0.6", "dmc-cheetah-run_torso1p2_speed0p6"),
        ("dmc-walker-walk@length=0.9", "dmc-walker-walk_length0p9"),
        ("dmc-cheetah-run@train", "dmc-cheetah-run_train"),
        ("dmc-cheetah-run", "dmc-cheetah-run"),
    ],
)
def test_scenario_slugs_round_trip_and_name_the_dataset(name, expected):
    assert slug(name) == expected and unslug(expected) == name
    for text in (f"{name}-medium", f"{expected}-medium", f"genworld/{expected}/medium-v0"):
        dataset = parse_dataset_id(text)
        assert dataset.env == name and str(dataset) == f"genworld/{expected}/medium-v0"


def test_bad_scenario_ids_are_one_line_errors():
    with pytest.raises(GenworldError, match="slug"):
        unslug("dmc-cheetah-run_torsobig")
    with pytest.raises(GenworldError, match="torso must be in"):
        parse_dataset_id("dmc-cheetah-run@torso=9-medium")
    with pytest.raises(GenworldError, match="mixed"):  # lists what DMC datasets can be
        parse_dataset_id("dmc-cheetah-run-medium-replay")
    with pytest.raises(GenworldError, match="scenarios exist"):
        get_env_spec("dmc-cartpole-swingup@train")


def test_conditioned_policies_collect_every_scenario_of_a_task():
    assert dmc_behaviour("dmc-cheetah-run@torso=1.2,speed=0.6") == (
        "dmc-cheetah-run_train",
        pytest.approx((0.2, 0.0, -0.4)),
    )
    assert dmc_behaviour("dmc-cheetah-run") == ("dmc-cheetah-run_train", (0.0, 0.0, 0.0))
    assert dmc_behaviour("dmc-finger-spin") == ("dmc-finger-spin", None)


def test_conditioned_actor_appends_the_condition():
    from genworld.policies import ConditionedActor, TanhGaussianActor

    actor = TanhGaussianActor(5, 2, hidden=(8,))
    obs = np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32)
    cond = np.array([0.2, -0.1], np.float32)
    got = ConditionedActor(actor, cond).act(obs, deterministic=True)
    want = actor.act(np.concatenate([obs, np.tile(cond, (4, 1))], 1), deterministic=True)
    np.testing.assert_array_equal(got, want)
    with pytest.raises(GenworldError, match="cannot take"):
        ConditionedActor(TanhGaussianActor(2, 2, hidden=(8,)), cond)


def test_disagreement_rewards_the_unseen_more_than_the_seen():
    from genworld.algos.disagreement import Disagreement, DisagreementConfig
    from genworld.train.behaviour import ReplayBuffer

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    buffer = ReplayBuffer(512, 4, 2)
    for _ in range(512):  # a small region of the space, with simple dynamics
        obs, act = rng.uniform(-0.1, 0.1, 4), rng.uniform(-0.1, 0.1, 2)
        buffer.add(obs, act, 0.0, obs + 0.5 * np.r_[act, act], 0.0)
    explorer = Disagreement(
        4, 2, DisagreementConfig(hidden=(64, 64), batch_size=64), torch.device("cpu")
    )
    for _ in range(300):
        explorer.update(buffer, rng)
    seen = (
        torch.as_tensor(buffer.data["observations"][:256]),
        torch.as_tensor(buffer.data["actions"][:256]),
    )
    unseen = seen[0] + 3.0, seen[1] + 3.0
    assert explorer.reward(*unseen).mean() > 10 * explorer.reward(*seen).mean()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """Tiny behaviour and exploration runs, exported into a policy folder (half a minute:
    every snapshot is evaluated on 1,000-step episodes, so the tests using it are
    integration tests)."""
    from genworld.api import export_policies
    from genworld.train import policy_export
    from genworld.train.behaviour import config_for_scale, train_behaviour_policy

    root = tmp_path_factory.mktemp("dmc_policies")
    small = {"learning_starts": 300, "snapshot_every": 300, "eval_episodes": 1}
    runs = {
        "dmc-cheetah-run@train": config_for_scale("dmc-cheetah-run@train", steps=900, **small),
        "dmc-finger-spin": config_for_scale(
            "dmc-finger-spin", steps=900, intrinsic="disagreement", **small
        ),
    }
    with pytest.MonkeyPatch.context() as patch:  # picks re-evaluate on 1,000-step episodes
        for name, value in (("VERIFY_EPISODES", 1), ("VERIFY_TOP", 2), ("CONFIRM_EPISODES", 1)):
            patch.setattr(policy_export, name, value)
        for name, cfg in runs.items():
            run = train_behaviour_policy(cfg, root / "runs" / slug(name), show_progress=False)
            export_policies(run, root / "policies")
    return root / "policies"


@pytest.mark.integration
@pytest.mark.parametrize(
    "dataset", ["dmc-cheetah-run@torso=1.2,speed=0.6-medium", "dmc-cheetah-run_length0p9-mixed"]
)
def test_scenario_datasets_build_from_the_conditioned_policy(
    shipped, dataset, monkeypatch, tmp_path
):
    from genworld.data.minari_io import read_episodes

    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(shipped))
    cards = []
    for k in range(2):
        monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / str(k)))
        cards.append(build_dataset(dataset, steps=1100, seed=0, show_progress=False))
    card = cards[0]
    assert card["steps"] == 1100 and card["env"] == parse_dataset_id(dataset).env
    behaviour = [s for s in card["segments"] if s["policy"] != "uniform-random"]
    assert behaviour and all(s["policy"].startswith("dmc-cheetah-run_train-") for s in behaviour)
    assert all(len(s["condition"]) == 3 for s in behaviour)
    one, two = (
        read_episodes(str(parse_dataset_id(dataset)), root=tmp_path / str(k)) for k in (0, 1)
    )
    for a, b in zip(one, two, strict=True):  # a rebuild is the same bytes
        np.testing.assert_array_equal(a.observations, b.observations)
        np.testing.assert_array_equal(a.actions, b.actions)
    assert one[0].observations.shape[1] == get_env_spec("dmc-cheetah-run").obs_dim


@pytest.mark.integration
def test_expert_card_lists_the_whole_training_as_mixed(shipped):
    card = json.loads((shipped / "dmc-cheetah-run_train-expert.json").read_text())
    assert card["extra"]["condition_keys"] == ["torso", "length", "speed"]
    mixed = card["extra"]["mixed_snapshots"]
    assert mixed[0]["name"] == "uniform-random"
    assert sum(s["buffer_steps"] for s in mixed) == card["train_steps"]


@pytest.mark.integration
def test_exploration_data_is_random_play_and_explorer_snapshots(shipped, monkeypatch, tmp_path):
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(shipped))
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path))
    card = build_dataset("dmc-finger-spin-exploration", steps=1000, seed=0, show_progress=False)
    policies = [s["policy"] for s in card["segments"]]
    assert policies[0] == "uniform-random"
    assert all(p.startswith("dmc-finger-spin-explore-") for p in policies[1:]) and policies[1:]
    assert "reward-free" in card["reward_free"].lower() and card["steps"] == 1000
    explorer = json.loads((shipped / "dmc-finger-spin-explore.json").read_text())
    assert explorer["extra"]["intrinsic"] == "disagreement"
