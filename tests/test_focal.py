"""FOCAL: its losses by hand, the context encoder's invariances, gradient isolation between the
encoder and the actor-critic, checkpoints (also from a 3-task agent into a 1-task one), and that
the encoder learns to tell two tasks apart.

The shared contract (update/act/checkpoint/resume) is covered by tests/test_algos.py.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from genworld.algos import focal
from genworld.algos.registry import AlgoContext, build_agent
from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs import get_env_spec
from genworld.train.checkpoint import load_checkpoint, save_checkpoint

from .conftest import random_episode


def make_agent(dataset, seed=0, prompts=None, normalizer=None, **overrides) -> focal.FOCAL:
    torch.manual_seed(seed)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=normalizer or Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        seed=seed,
        overrides=overrides,
        prompts=prompts,
    )
    return build_agent("focal", ctx)


def robots_dataset() -> MultiEnvDataset:
    """hopper (obs 11, act 3) and halfcheetah (obs 17, act 6): padding in both."""
    rng = np.random.default_rng(0)
    data = []
    for env in ("hopper", "halfcheetah"):
        spec = get_env_spec(env)
        eps = [random_episode(rng, 20, spec.obs_dim, spec.act_dim, i % 2 == 0) for i in range(3)]
        data.append((spec, eps))
    return MultiEnvDataset(data)


def family_dataset(tasks=(0, 1, 2), episodes=3, steps=20, seed=0) -> MultiEnvDataset:
    """Tasks of one toy robot (obs 3, act 2) differing in reward: task k rewards
    ``(-1)^k sum(a) + k``."""
    rng = np.random.default_rng(seed)
    base = get_env_spec("hopper")
    data = []
    for k in tasks:
        spec = dataclasses.replace(base, name=f"toy-task{k}", obs_dim=3, act_dim=2)
        eps = []
        for _ in range(episodes):
            act = rng.uniform(-1, 1, size=(steps, 2))
            ends = np.zeros(steps, bool)
            ends[-1] = True
            eps.append(
                Episode.from_arrays(
                    rng.normal(size=(steps + 1, 3)),
                    act,
                    (-1) ** k * act.sum(1) + k,
                    np.zeros(steps, bool),
                    ends,
                )
            )
        data.append((spec, eps))
    return MultiEnvDataset(data)


# ---------------------------------------------------------------- losses by hand


def test_dml_loss_matches_a_hand_computation():
    z = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0]])
    labels = torch.tensor([0, 0, 1])
    # pairs: (0, 1) same task, d^2 = 1; (0, 2) and (1, 2) different, d^2 = 4 and 5
    loss, intra, inter = focal.dml_loss(z, labels, beta=0.5, power=2.0, epsilon=0.1)
    expected = 1.0 + (0.5 / 4.1 + 0.5 / 5.1) / 2
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    assert intra.item() == pytest.approx(1.0)
    assert inter.item() == pytest.approx((2.0 + math.sqrt(5.0)) / 2, rel=1e-6)
    loss, _, _ = focal.dml_loss(z, labels, beta=1.0, power=1.0, epsilon=0.1)
    assert loss.item() == pytest.approx(1.0 + (1 / 2.1 + 1 / (math.sqrt(5) + 0.1)) / 2, rel=1e-6)
    # one task only: no different-task pairs, the second term is 0
    loss, _, inter = focal.dml_loss(z[:2], labels[:2], 1.0, 2.0, 0.1)
    assert loss.item() == pytest.approx(1.0) and inter.item() == 0.0


def test_kl_and_behaviour_log_density_match_torch_distributions():
    from torch.distributions import Normal, TransformedDistribution, kl_divergence
    from torch.distributions.transforms import TanhTransform

    torch.manual_seed(0)
    mean_p, mean_b, log_std_p, log_std_b = torch.randn(4, 5, 3).unbind(0)
    mask = torch.tensor([1.0, 1.0, 0.0]).expand(5, 3)  # the last action dim is padding
    p, b = Normal(mean_p, log_std_p.exp()), Normal(mean_b, log_std_b.exp())
    expected = (kl_divergence(p, b) * mask).sum(-1)
    torch.testing.assert_close(
        focal.gaussian_kl(mean_p, log_std_p, mean_b, log_std_b, mask), expected
    )
    actions = torch.rand(5, 3) * 1.8 - 0.9
    squashed = TransformedDistribution(b, [TanhTransform()])
    expected = (squashed.log_prob(actions) * mask).sum(-1)
    got = focal.tanh_gaussian_log_prob(actions, mean_b, log_std_b, mask)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- encoder invariances


def test_encoder_is_permutation_invariant_and_padding_does_not_leak():
    dataset = robots_dataset()
    agent = make_agent(dataset)
    envs = torch.tensor([0, 1])
    rows = agent.table.draw(envs, (8,), torch.Generator().manual_seed(0))
    context = agent.table.gather(envs, rows)  # (2, 8, ...)
    codes = agent.encode(context, envs)  # (2, Z)
    perm = torch.randperm(8)
    permuted = focal.Transitions(*(t[:, perm] for t in context))
    torch.testing.assert_close(agent.encode(permuted, envs), codes)
    # garbage in hopper's padded observation (11:) and action (3:) columns changes nothing
    obs, act, rew, next_obs, term = (t.clone() for t in context)
    obs[0, :, 11:], next_obs[0, :, 11:], act[0, :, 3:] = 1e3, -1e3, 5.0
    garbage = focal.Transitions(obs, act, rew, next_obs, term)
    torch.testing.assert_close(agent.encode(garbage, envs), codes)
    # acting: the same for padded observation columns, and padded action dims are 0
    states = context.observations[:, 0]  # (2, O)
    actions = agent.act(states, envs)
    noisy = states.clone()
    noisy[0, 11:] = 7.0
    torch.testing.assert_close(agent.act(noisy, envs), actions)
    assert torch.all(actions[0, 3:] == 0)


def test_actor_critic_and_behaviour_do_not_reach_the_encoder():
    agent = make_agent(family_dataset())
    losses, _ = agent.losses(agent.sample(torch.Generator().manual_seed(0)))
    nets = {n: agent.modules()[n] for n in ("encoder", "actor", "critic", "behavior")}

    def grads(loss):
        agent.opt.zero_grad(set_to_none=True)
        loss.backward(retain_graph=True)
        return {
            n: any(p.grad is not None and p.grad.abs().sum() > 0 for p in m.parameters())
            for n, m in nets.items()
        }

    assert grads(losses["dml"]) == {
        "encoder": True,
        "actor": False,
        "critic": False,
        "behavior": False,
    }
    for name, owner in (("critic", "critic"), ("actor", "actor"), ("behavior_nll", "behavior")):
        reached = grads(losses[name])
        assert reached == {n: n == owner for n in nets}, name


# ---------------------------------------------------------------- checkpoints


def test_checkpoint_round_trip_restores_codes_and_actions(tmp_path):
    dataset = family_dataset()
    agent = make_agent(dataset)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        agent.update(generator)
    obs = dataset.envs[0].observations[:6]
    env_idx = torch.tensor([0, 1, 2, 0, 1, 2])
    actions = agent.act(obs, env_idx)
    save_checkpoint(tmp_path, 2, {"agent": agent.state_dict()})
    _, state = load_checkpoint(tmp_path / "step_000000002")
    other = make_agent(dataset, seed=7)  # other weights and other evaluation context sets
    assert not torch.equal(other.context_rows, agent.context_rows)
    other.load_state_dict(state["agent"])
    assert other.step == 2 and torch.equal(other.context_rows, agent.context_rows)
    torch.testing.assert_close(other.context_codes(), agent.context_codes())
    torch.testing.assert_close(other.act(obs, env_idx), actions)


def test_three_task_weights_load_into_a_one_task_agent(tmp_path):
    train = family_dataset((0, 1, 2))
    trained = make_agent(train)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        trained.update(generator)
    save_checkpoint(tmp_path, 2, {"agent": trained.state_dict()})
    _, state = load_checkpoint(tmp_path / "step_000000002")
    unseen = family_dataset((3,), episodes=2, seed=1)  # a new task's (small) data
    agent = make_agent(unseen, prompts=unseen)
    own_rows = agent.context_rows.clone()
    agent.load_state_dict(state["agent"])
    for name in ("encoder", "actor", "critic", "behavior"):
        for key, value in trained.modules()[name].state_dict().items():
            torch.testing.assert_close(agent.modules()[name].state_dict()[key], value)
    torch.testing.assert_close(agent.normalizer.obs_mean[0], trained.normalizer.obs_mean[0])
    assert torch.equal(agent.context_rows, own_rows)  # the eval context is the new task's
    obs = unseen.envs[0].observations[:4]
    actions = agent.act(obs, torch.zeros(4, dtype=torch.int64))
    assert actions.shape == (4, 2) and actions.abs().max() <= 1.0
    # the same network, given the new task's context, acts as the trained one would with it
    trained.set_prompts(family_dataset((3, 3, 3), episodes=2, seed=1), seed=0)
    torch.testing.assert_close(trained.context_codes()[0], agent.context_codes()[0])
    agent.update(generator)  # and it trains on from there


def test_prompts_must_match_the_envs():
    from genworld.errors import GenworldError

    with pytest.raises(GenworldError, match="one env per training env"):
        make_agent(family_dataset((0, 1)), prompts=family_dataset((0,)))


# ---------------------------------------------------------------- it learns


def _separation(agent, generator, sets=6) -> float:
    """Mean distance between the two tasks' codes over mean distance within a task."""
    envs = torch.tensor([0, 1]).repeat_interleave(sets)
    with torch.no_grad():
        codes = agent.encode(
            agent.table.gather(envs, agent.table.draw(envs, (16,), generator)), envs
        )
    _, intra, inter = focal.dml_loss(codes, envs, 1.0, 2.0, 0.1)
    return float(inter / intra)


@pytest.mark.learns
def test_the_encoder_learns_to_separate_two_tasks():
    agent = make_agent(family_dataset((0, 1), episodes=4), encoder_lr=3e-3)
    before = _separation(agent, torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(0)
    for _ in range(150):
        metrics = agent.update(generator)
    after = _separation(agent, torch.Generator().manual_seed(1))
    assert after > 3.0 and after > before, (before, after)
    assert all(np.isfinite(float(v)) for v in metrics.values())
