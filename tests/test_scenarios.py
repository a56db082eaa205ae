"""DMC scenarios (MrCoM §5): resized torsos with the mass that follows, target speeds, splits."""

import math

import numpy as np
import pytest

from genworld.envs import dmc
from genworld.envs.registry import get_env_spec, make_env
from genworld.envs.scenarios import (
    ALLOWED,
    SCENARIO_TASKS,
    Scenario,
    ScenarioRanges,
    load_scenario,
    parse_scenario,
    scaled_model_xml,
    scenario_split,
)
from genworld.errors import GenworldError


@pytest.mark.parametrize("task", SCENARIO_TASKS)
def test_the_unchanged_scenario_is_the_suite_task_step_for_step(task):
    """torso = length = speed = 1 rebuilds dm_control's own task: same observations and rewards."""
    dmc._prepare()
    ours, theirs = load_scenario(Scenario(task), 4), dmc._load(*dmc.DMC_TASKS[task], 4)
    a, b = ours.reset(), theirs.reset()
    actions = np.random.default_rng(1).uniform(-1, 1, (40, dmc.ACT_DIMS[task.split("-")[1]]))
    for action in actions:
        a, b = ours.step(action), theirs.step(action)
        for key in a.observation:  # (cheetah: its fixed total mass re-expressed as a density)
            np.testing.assert_allclose(a.observation[key], b.observation[key], rtol=1e-6, atol=1e-7)
        assert a.reward == pytest.approx(b.reward, rel=1e-6, abs=1e-7)


def _capsule_volume(radius: float, length: float) -> float:
    return math.pi * radius**2 * length + 4 / 3 * math.pi * radius**3


@pytest.mark.parametrize(
    "domain, radius, length", [("cheetah", 0.046, 1.0), ("hopper", 0.0653, 0.25)]
)
def test_torso_mass_follows_the_edited_geometry(domain, radius, length):
    """The torso body's mass changes by density × the capsule's volume change, with one density
    for every radius and length scale: MuJoCo recomputed mass (and inertia) from the geometry."""
    dmc._prepare()
    from dm_control.suite import cheetah, hopper

    module = {"cheetah": cheetah, "hopper": hopper}[domain]
    xml, assets = module.get_model_and_assets()
    xml = xml.decode() if isinstance(xml, bytes) else xml

    def compile_xml(text: str):
        return module.Physics.from_xml_string(text, assets)

    def torso(scale_r: float, scale_l: float):
        physics = compile_xml(scaled_model_xml(xml, scale_r, scale_l, compile_xml))
        body = physics.model.name2id("torso", "body")
        return float(physics.model.body_mass[body]), physics.model.body_inertia[body].copy()

    base_mass, base_inertia = torso(1.0, 1.0)
    densities = []
    for scale_r, scale_l in [(1.2, 1.0), (0.8, 1.0), (1.0, 1.3), (1.1, 0.7)]:
        mass, inertia = torso(scale_r, scale_l)
        dv = _capsule_volume(radius * scale_r, length * scale_l) - _capsule_volume(radius, length)
        densities.append((mass - base_mass) / dv)
        assert not np.allclose(inertia, base_inertia)
    assert np.allclose(densities, densities[0], rtol=1e-6) and densities[0] > 0
    others = compile_xml(scaled_model_xml(xml, 1.3, 1.2, compile_xml)).model.body_mass
    unscaled = compile_xml(scaled_model_xml(xml, 1.0, 1.0, compile_xml)).model.body_mass
    torso_id = int(np.argmax(others != unscaled))
    assert np.allclose(np.delete(others, torso_id), np.delete(unscaled, torso_id))  # only the torso


def test_a_lower_target_speed_pays_at_least_as_much_on_the_same_motion():
    slow = make_env("dmc-cheetah-run@speed=0.25")
    fast = make_env("dmc-cheetah-run")
    slow.reset(seed=2)
    fast.reset(seed=2)
    rewards = []
    for action in np.random.default_rng(3).uniform(-1, 1, (200, 6)).astype(np.float32):
        (o1, r1, *_), (o2, r2, *_) = slow.step(action), fast.step(action)
        np.testing.assert_array_equal(o1, o2)  # the body is the same: the same motion
        rewards.append((r1, r2))
    r = np.array(rewards)
    assert np.all(r[:, 0] >= r[:, 1]) and np.any(r[:, 0] > r[:, 1])


def test_scenario_names_resolve_like_task_envs_and_bad_ones_are_one_line():
    spec = get_env_spec("dmc-walker-walk@torso=1.2,length=0.9,speed=0.6")
    assert (spec.obs_dim, spec.act_dim, spec.name) == (
        24,
        6,
        "dmc-walker-walk@torso=1.2,length=0.9,speed=0.6",
    )
    assert parse_scenario("dmc-walker-walk@torso=1.2").name == "dmc-walker-walk@torso=1.2"
    bad = {
        "dmc-walker-walk@wings=2": "torso=<x>,length=<x>,speed=<x>",
        "dmc-walker-walk@torso=3": r"torso must be in \[0.5, 1.5\]",
        "dmc-hopper-stand@speed=0.5": "no target speed",
        "dmc-fish-swim@torso=1.1": "scenarios exist for dmc-cheetah-run",
    }
    for name, message in bad.items():
        with pytest.raises(GenworldError, match=message) as err:
            get_env_spec(name)
        assert "\n" not in str(err.value)


def test_scenario_splits_are_seeded_and_ood_lies_outside_the_training_ranges():
    train, ood = scenario_split("dmc-cheetah-run", 20, 20, seed=0)
    assert (train, ood) == scenario_split("dmc-cheetah-run", 20, 20, seed=0)
    assert train != scenario_split("dmc-cheetah-run", 20, 20, seed=1)[0]
    ranges = ScenarioRanges().train
    for name in train:
        s = parse_scenario(name)
        assert all(ranges[k][0] <= getattr(s, k) <= ranges[k][1] for k in ALLOWED)
    for name in ood:
        s = parse_scenario(name)
        assert all(not ranges[k][0] <= getattr(s, k) <= ranges[k][1] for k in ALLOWED)
    stand_train, _ = scenario_split("dmc-walker-stand", 5, 5)
    assert all("speed" not in name for name in stand_train)  # no speed to vary
