"""CaDM (world_models/cadm.py): its forward and backward terms by hand, what its context reads
(another scenario's history changes predictions, padding does not), "context helps" on two
scenarios of one body, save → load, and its place in the world-model loop and MrCoM's studies."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from genworld.data.normalization import Normalizer
from genworld.world_models.cadm import CaDMConfig, CaDMWorldModel, backward_nll, forward_nll

from .test_mrcom import HOPPER, two_bodies, two_scenarios
from .world_model_fit import fit

TINY = CaDMConfig(history=4, context_dim=4, hidden=32, layers=2, env_embed=4)


@pytest.fixture(scope="module")
def suite():
    return two_bodies()


@pytest.fixture(scope="module")
def scenarios():
    return two_scenarios()


def _model(data, cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return CaDMWorldModel(data.specs, cfg, Normalizer.fit(data))


def test_forward_and_backward_terms_match_a_hand_computation():
    mean, logvar = torch.tensor([0.5, -1.0, 0.2]), torch.tensor([0.0, 0.4, -0.2])
    delta, reward, mask = torch.tensor([1.0, 3.0]), torch.tensor(0.0), torch.tensor([1.0, 0.0])

    def nll(m, lv, x):
        return 0.5 * ((m - x) ** 2 * torch.exp(-lv) + lv)

    hand = nll(mean[0], logvar[0], delta[0]) + nll(mean[2], logvar[2], reward)  # dim 1 padded
    torch.testing.assert_close(forward_nll(mean, logvar, delta, reward, mask), hand)
    # backward: the model predicts s_t − s_{t+1} = −delta
    back = nll(mean[0], logvar[0], -delta[0])
    torch.testing.assert_close(backward_nll(mean[:2], logvar[:2], delta, mask), back)


def _step(model, data, env, index, generator_seed=0):
    memory = model.encode(data, torch.tensor(env), torch.tensor(index))
    actions = torch.zeros(len(env), model.act_max)
    g = torch.Generator().manual_seed(generator_seed)
    return model.next(memory, None, actions, generator=g, deterministic=True)


def test_context_from_another_scenario_changes_predictions_and_padding_does_not(scenarios, suite):
    model = _model(scenarios)
    fit(model, scenarios, 20)
    model.eval()
    own = model.encode(scenarios, torch.tensor([0]), torch.tensor([10]))
    other = model.encode(scenarios, torch.tensor([1]), torch.tensor([10]))
    assert own.count.tolist() == other.count.tolist() == [5]
    mixed = dataclasses.replace(  # the same env and current state, the other scenario's history
        own,
        observations=torch.cat([other.observations[:, :-1], own.observations[:, -1:]], 1),
        actions=other.actions.clone(),
        prev_rewards=torch.cat([other.prev_rewards[:, :-1], own.prev_rewards[:, -1:]], 1),
    )
    act = torch.zeros(1, model.act_max)
    a = model.next(own, None, act, deterministic=True).next_observations
    b = model.next(mixed, None, act, deterministic=True).next_observations
    assert not torch.allclose(a, b)
    # padding: hopper's rows are the same alone or beside halfcheetah's wider ones
    wide = _model(suite)
    wide.eval()
    both = _step(wide, suite, [0, 1], [5, 7])
    alone = _step(wide, suite, [0], [5])
    torch.testing.assert_close(both.next_observations[:1], alone.next_observations)
    torch.testing.assert_close(both.extrinsic[:1], alone.extrinsic)
    assert torch.all(both.next_observations[0, HOPPER.obs_dim :] == 0)


def test_a_longer_history_fits_two_scenarios_better_than_one_step(scenarios):
    with_context = _model(scenarios)
    without = _model(scenarios, dataclasses.replace(TINY, history=1))  # one past step at most
    a = fit(with_context, scenarios, 150)
    b = fit(without, scenarios, 150)
    assert sum(a[-20:]) / 20 < sum(b[-20:]) / 20


def test_loss_is_finite_and_decreases_and_save_load_gives_identical_predictions(suite, tmp_path):
    model = _model(suite)
    losses = fit(model, suite, 40)
    assert all(torch.isfinite(torch.tensor(losses))) and sum(losses[-5:]) < sum(losses[:5])
    torch.save(model.state_dict(), tmp_path / "cadm.pt")
    again = _model(suite, seed=1)
    again.load_state_dict(torch.load(tmp_path / "cadm.pt"))
    model.eval(), again.eval()
    a, b = _step(model, suite, [0, 1], [3, 9]), _step(again, suite, [0, 1], [3, 9])
    torch.testing.assert_close(a.next_observations, b.next_observations)
    torch.testing.assert_close(a.extrinsic, b.extrinsic)
    assert a.state.count.tolist() == [5, 5]  # full memories: the oldest step dropped


def test_scenario_studies_take_cadm_as_a_method():
    from genworld.api import scenarios_config
    from genworld.train.scenarios import world_model_config

    cfg = scenarios_config("tiny", methods=("mrcom", "cadm"))
    wm = world_model_config(cfg, "cadm")
    assert wm.model == "cadm" and wm.cadm.history == 3
