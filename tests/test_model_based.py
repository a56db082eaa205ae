"""MOPO, MOReL and the offline-MBPO machinery they share with TGW, with values.

The contract (update/act/state, resume, frozen model) is in test_algos.py; here: MOPO's penalised
reward, MOReL's USAD / HALT, gradient isolation from the world model, TGW's β wiring after the
MBPO split, and "it learns" on a toy problem whose true reward is known in closed form.
"""

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch

from genworld.algos import mopo, morel
from genworld.algos.mbpo import MBPOAgent, MBPOConfig
from genworld.algos.registry import AlgoContext, build_agent, resolve_variant
from genworld.algos.tgw import TGWAgent, TGWAgentConfig
from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs import get_env_spec
from genworld.errors import GenworldError
from genworld.train.world_model import SCALES
from genworld.train.world_model_source import provide_world_model
from genworld.world_models.base import WMStep
from genworld.world_models.tgw import TGWConfig, TGWWorldModel

from .test_algos import toy_dataset

KAPPA = 7.5


@pytest.fixture(scope="module")
def data():
    return toy_dataset()  # hopper (obs 11, act 3) + halfcheetah (obs 17, act 6)


@pytest.fixture(scope="module")
def wm_dir(tmp_path_factory):
    """One folder for the tiny MLP ensemble: the first build trains it, later builds load it."""
    return tmp_path_factory.mktemp("model_based")


def _ctx(data, out: Path, seed=0, **overrides) -> AlgoContext:
    return AlgoContext(
        dataset=data,
        normalizer=Normalizer.fit(data),
        device=torch.device("cpu"),
        scale="tiny",
        seed=seed,
        out=out,
        overrides=overrides,
        world_models=provide_world_model,
    )


def _build(name, data, out, **overrides):
    torch.manual_seed(0)
    return build_agent(name, _ctx(data, out, **overrides))


def _padded(data, n_per_env=40, seed=0):
    """Dataset states with random actions (partly outside the data's support), both envs."""
    batch = data.sample_transitions(2 * n_per_env, torch.Generator().manual_seed(seed))
    actions = (
        torch.rand(batch.actions.shape, generator=torch.Generator().manual_seed(seed + 1)) * 4 - 2
    ) * batch.act_mask  # (B, A), in [-2, 2] on real dims
    return batch.observations, actions, batch.env_idx


def _hand_uncertainty(model, obs, act, env_idx) -> torch.Tensor:
    """MOPO's u(s, a) = max over every member of ||std||, from the raw networks, row by row
    (MOPO's code and OfflineRL-Kit take all members, not only the elites)."""
    out = torch.zeros(len(obs))
    norm = model.normalizer
    for row in range(len(obs)):
        k = int(env_idx[row])
        spec = model.specs[k]
        d, a = spec.obs_dim, spec.act_dim
        x = (obs[row, :d] - norm.obs_mean[k, :d]) / norm.obs_std[k, :d]
        _, logvar = model.nets[k](torch.cat([x, act[row, :a]])[None])  # (E, 1, d+1)
        stds = torch.exp(0.5 * logvar[:, 0])  # (members, d+1)
        out[row] = max(float(torch.sqrt((s**2).sum())) for s in stds)
    return out


def _hand_disagreement(model, obs, act, env_idx, members="all") -> torch.Tensor:
    """MOReL's max over member pairs of ||next_obs_i − next_obs_j||, raw units, by loops."""
    out = torch.zeros(len(obs))
    norm = model.normalizer
    for row in range(len(obs)):
        k = int(env_idx[row])
        d, a = model.specs[k].obs_dim, model.specs[k].act_dim
        x = (obs[row, :d] - norm.obs_mean[k, :d]) / norm.obs_std[k, :d]
        mean, _ = model.nets[k](torch.cat([x, act[row, :a]])[None])  # (E, 1, d+1)
        ids = range(len(mean)) if members == "all" else model.elite_idx[k].tolist()
        nxt = {i: obs[row, :d] + mean[i, 0, :d] * norm.obs_std[k, :d] for i in ids}
        out[row] = max(float(torch.linalg.norm(nxt[i] - nxt[j])) for i in ids for j in ids if i < j)
    return out


# ------------------------------------------------------------------ MOPO


def test_mopo_reward_is_model_reward_minus_lambda_u_on_a_fixed_batch(data, wm_dir):
    agent = _build("mopo", data, wm_dir, mbpo={"beta": 0.7})
    model = agent.world_model
    assert agent.cfg.beta == 0.7 and not hasattr(model.cfg, "penalty")  # λ is the agent's alone
    obs, act, env_idx = _padded(data)
    out, rewards, terminations = agent.imagine_step(
        None, obs, act, env_idx, torch.Generator().manual_seed(3)
    )
    again = model.next(None, obs, act, env_idx, torch.Generator().manual_seed(3))
    u = _hand_uncertainty(model, obs, act, env_idx)
    assert (u > 0.05).all()  # a penalty that is visibly there
    torch.testing.assert_close(out.uncertainty, u, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(rewards, again.extrinsic - 0.7 * u, rtol=1e-5, atol=1e-5)
    assert torch.equal(terminations, again.terminations)


def test_mopo_rollouts_store_the_penalised_reward(data, wm_dir):
    """Same seeds, λ = 0 vs λ = 0.7: identical imagined transitions, rewards apart by 0.7·u."""
    buffers = []
    for beta in (0.0, 0.7):
        agent = _build("mopo", data, wm_dir, mbpo={"beta": beta})
        torch.manual_seed(2)
        agent.rollout(torch.Generator().manual_seed(1))
        buffers.append((agent.model_buffer, agent.world_model))
    (a, model), (b, _) = buffers
    n = a.size
    assert n == b.size and n >= 64  # tiny preset: 64 start states, horizon 2
    for name in ("obs", "act", "next_obs", "term", "env"):
        assert torch.equal(getattr(a, name)[:n], getattr(b, name)[:n]), name
    u = _hand_uncertainty(model, a.obs[:n], a.act[:n], a.env[:n])
    torch.testing.assert_close(b.rew[:n], a.rew[:n] - 0.7 * u, rtol=1e-5, atol=1e-5)


def test_rollout_stats_are_logged_and_survive_a_checkpoint(data, wm_dir):
    """The last rollout's statistics ride along with the losses; a resumed agent logs the same
    ones before its next rollout (they are part of its state)."""
    agent = _build("mopo", data, wm_dir)
    metrics = agent.update(torch.Generator().manual_seed(0))  # update 0 rolls out first
    stats = {k: v for k, v in metrics.items() if k.startswith("rollout/")}
    assert stats and float(stats["rollout/transitions"]) >= 64
    assert "batch/reward_mean" in metrics
    resumed = _build("mopo", data, wm_dir)
    resumed.load_state_dict(agent.state_dict())
    assert resumed.rollout_stats == agent.rollout_stats


def test_mopo_beta_variant_sets_lambda(data, wm_dir):
    algo, overrides = resolve_variant("mopo-beta=2.5")
    agent = _build(algo, data, wm_dir, **overrides)
    assert agent.cfg.beta == 2.5
    with pytest.raises(GenworldError, match="beta"):
        mopo.MOPOConfig(mbpo=MBPOConfig(beta=-1.0)).validate()


# ------------------------------------------------------------------ MOReL


def test_disagreement_matches_pairwise_hand_computation(data, wm_dir):
    model = _build("morel", data, wm_dir).world_model
    obs, act, env_idx = _padded(data, n_per_env=10)
    for members in ("all", "elites"):
        got = model.disagreement(obs, act, env_idx, members)
        want = _hand_disagreement(model, obs, act, env_idx, members)
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
    assert (model.disagreement(obs, act, env_idx) > 0).all()
    with pytest.raises(GenworldError, match="members"):
        model.disagreement(obs, act, env_idx, "best")


def test_usad_threshold_is_pessimism_times_max_or_quantile_over_the_data(data, wm_dir):
    agent = _build("morel", data, wm_dir)
    model = agent.world_model
    for k, env in enumerate(data.envs):
        d, a = env.spec.obs_dim, env.spec.act_dim
        obs = torch.zeros(len(env), data.obs_max)
        act = torch.zeros(len(env), data.act_max)
        obs[:, :d], act[:, :a] = env.observations, env.actions
        values = _hand_disagreement(model, obs, act, torch.full((len(env),), k))
        # default config: 3.0 × max (mjrl pessimism_coef, max over the data)
        torch.testing.assert_close(
            agent.step_hook.thresholds[k], 3.0 * values.max(), rtol=1e-4, atol=1e-6
        )
    median = morel.usad_thresholds(model, data, 1.0, 0.5, "all")
    for k, env in enumerate(data.envs):
        obs = torch.zeros(len(env), data.obs_max)
        act = torch.zeros(len(env), data.act_max)
        obs[:, : env.spec.obs_dim], act[:, : env.spec.act_dim] = env.observations, env.actions
        values = model.disagreement(obs, act, torch.full((len(env),), k))
        assert (values > median[k]).float().mean() == pytest.approx(0.5, abs=0.02)


def test_halt_exactly_when_disagreement_exceeds_threshold(data, wm_dir):
    model = _build("morel", data, wm_dir).world_model
    obs, act, env_idx = _padded(data)
    value = model.disagreement(obs, act, env_idx)
    thresholds = torch.stack([value[env_idx == k].median() for k in range(2)])  # (K,)
    hook = morel.HaltOnUnknown(model, thresholds, KAPPA)
    rewards = torch.linspace(-1, 1, len(obs))
    terminal = torch.zeros(len(obs), dtype=torch.bool)
    terminal[::7] = True  # the model's own terminals survive the hook
    step = WMStep(obs, rewards, torch.zeros(len(obs)), terminal, None)
    new_rewards, new_terminal = hook(obs, act, env_idx, step, rewards)
    halt = value > thresholds[env_idx]
    assert 0 < int(halt.sum()) < len(obs)  # both cases occur
    assert torch.equal(new_terminal, terminal | halt)
    assert torch.equal(new_rewards[halt], torch.full((int(halt.sum()),), -KAPPA))
    assert torch.equal(new_rewards[~halt], rewards[~halt])


def test_halt_ends_the_rollout_with_minus_kappa(data, wm_dir):
    agent = _build("morel", data, wm_dir, kappa=KAPPA)
    hook = agent.step_hook
    # a threshold inside the range the rollouts see: the per-env median over the data
    hook.thresholds = morel.usad_thresholds(agent.world_model, data, 1.0, 0.5, "all")
    torch.manual_seed(0)
    agent.rollout(torch.Generator().manual_seed(0))
    buf, n = agent.model_buffer, agent.cfg.rollout_batch
    step1 = slice(0, n)
    halt1 = hook.unknown(buf.obs[step1], buf.act[step1], buf.env[step1])
    assert 0 < int(halt1.sum()) < n
    assert (buf.term[step1][halt1] == 1).all()
    assert (buf.rew[step1][halt1] == -KAPPA).all()
    assert not (buf.rew[step1][~halt1] == -KAPPA).any()
    # step 2 holds exactly the rows that neither halted nor terminated, continuing from their
    # imagined next states
    alive = buf.term[step1] == 0
    assert buf.size == n + int(alive.sum())
    assert torch.equal(buf.obs[n : buf.size], buf.next_obs[step1][alive])
    halt2 = hook.unknown(buf.obs[n : buf.size], buf.act[n : buf.size], buf.env[n : buf.size])
    assert torch.equal(buf.rew[n : buf.size][halt2], torch.full((int(halt2.sum()),), -KAPPA))

    # threshold 0: every transition is unknown, every rollout halts at its first step
    hook.thresholds = torch.zeros(2)
    agent.model_buffer.size = agent.model_buffer.pos = 0
    agent.rollout(torch.Generator().manual_seed(1))
    assert agent.model_buffer.size == n
    assert (agent.model_buffer.term[:n] == 1).all()
    assert (agent.model_buffer.rew[:n] == -KAPPA).all()


def test_morel_config_is_validated():
    for bad in ({"kappa": -1.0}, {"threshold_quantile": 0.0}, {"usad_members": "some"}):
        with pytest.raises(GenworldError):
            morel.MOReLConfig(**bad).validate()
    with pytest.raises(GenworldError, match="mbpo.beta must be 0"):
        morel.MOReLConfig(mbpo=MBPOConfig(beta=1.0)).validate()


# ------------------------------------------------------------------ frozen world model


@pytest.mark.parametrize("name", ["mopo", "morel"])
def test_world_model_is_frozen_and_gets_no_gradient(name, data, wm_dir):
    agent = _build(name, data, wm_dir)
    model = agent.world_model
    assert not any(p.requires_grad for p in model.parameters())
    assert not model.training
    # even with requires_grad switched back on, no policy / critic loss reaches the model:
    # rollouts run under no_grad, so the buffer carries no graph back to it
    model.requires_grad_(True)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(25):  # > rollout_every (20): two rollouts
        agent.update(generator)
    assert all(p.grad is None for p in model.parameters())
    assert not agent.model_buffer.rew.requires_grad
    assert not agent.model_buffer.next_obs.requires_grad
    for key, value in model.state_dict().items():
        assert torch.equal(value, before[key]), key
    # the check is live: a loss that does go through the model leaves gradients
    obs, act, env_idx = _padded(data, n_per_env=4)
    mean, _ = model._predict(0, obs[env_idx == 0, :11], act[env_idx == 0, :3])
    mean.sum().backward()
    assert any(p.grad is not None for p in model.parameters())


# ------------------------------------------------------------------ TGW after the MBPO split


def test_tgw_beta_is_the_agents_and_keeps_checkpoint_keys(data):
    torch.manual_seed(0)
    tgw_cfg = TGWConfig(**SCALES["tiny"]["tgw"])
    model = TGWWorldModel(data.specs, tgw_cfg, Normalizer.fit(data))
    preset = {k: v for k, v in mopo.PRESETS["tiny"]["mbpo"].items() if k != "sac"}
    cfg = TGWAgentConfig(MBPOConfig(**preset, beta=0.3))
    agent = TGWAgent(model, data, cfg, torch.device("cpu"))
    assert agent.mbpo.cfg.beta == 0.3 and not hasattr(tgw_cfg, "beta")  # one owner: the agent
    assert TGWAgentConfig().mbpo.beta == 1.0  # the paper's default β
    state = agent.state_dict()
    assert set(state) == {"policy", "updates", "model_buffer", "rollout_stats"}
    old = {k: v for k, v in state.items() if k != "policy"}  # checkpoints before "policy"
    agent.load_state_dict({**old, "agents": state["policy"]})  # per_env: a list of SACs
    shared_cfg = TGWAgentConfig(MBPOConfig(**preset, policy="shared"))
    shared = TGWAgent(model, data, shared_cfg, torch.device("cpu"))
    shared.load_state_dict({**old, "agents": [shared.state_dict()["policy"]]})
    batched = TGWAgent(
        model,
        data,
        TGWAgentConfig(MBPOConfig(**preset, policy="per_env_batched")),
        torch.device("cpu"),
    )
    with pytest.raises(GenworldError, match="resume it with policy per_env"):
        batched.load_state_dict({**old, "agents": state["policy"]})
    g = torch.Generator().manual_seed(0)
    for _ in range(3):  # the batched per-env policies train and act inside MBPO
        metrics = batched.update(g)
    assert torch.isfinite(metrics["losses/critic"])
    obs, act, env_idx = _padded(data, n_per_env=4)
    assert batched.act(obs, env_idx).shape == act.shape
    assert agent.world_model is model
    assert isinstance(agent.mbpo, MBPOAgent) and isinstance(agent.mbpo.cfg, MBPOConfig)


# ------------------------------------------------------------------ it learns


def _bilinear_dataset(episodes=20, steps=50, seed=0) -> MultiEnvDataset:
    """halfcheetah dims (no termination), o' = 0.8 o + noise, r = Σ_{j<6} a_j · o_j: the best
    action is sign(o[:6]) (state-dependent), a random policy earns 0 on average."""
    spec = get_env_spec("halfcheetah")
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(episodes):
        obs = np.zeros((steps + 1, spec.obs_dim), np.float32)
        obs[0] = rng.normal(size=spec.obs_dim)
        for t in range(steps):
            obs[t + 1] = 0.8 * obs[t] + 0.6 * rng.normal(size=spec.obs_dim)
        actions = rng.uniform(-1, 1, (steps, spec.act_dim)).astype(np.float32)
        rewards = (actions * obs[:-1, : spec.act_dim]).sum(-1)
        ends = np.zeros(steps, bool)
        ends[-1] = True
        out.append(Episode.from_arrays(obs, actions, rewards, np.zeros(steps, bool), ends))
    return MultiEnvDataset([(spec, out)])


@pytest.mark.learns
@pytest.mark.parametrize("name", ["mopo", "morel"])
def test_learns_from_imagined_data_alone(name, tmp_path):
    """real_ratio = 0: every SAC batch is imagined, so any progress comes through the world
    model. Scored with the known reward on 2000 dataset states, no simulator needed."""
    data = _bilinear_dataset()
    overrides = {
        "world_model": {"steps": 1_500, "batch_size": 64, "mlp": {"hidden": 64}},
        "mbpo": {
            "real_ratio": 0.0,
            "rollout_every": 50,
            "rollout_batch": 256,
            "horizon": 2,
            "sac": {
                "hidden": (64, 64),
                "batch_size": 128,
                "gamma": 0.9,
                "actor_lr": 1e-3,
                "critic_lr": 1e-3,
                "alpha_lr": 1e-3,
                "init_alpha": 0.1,
            },
        },
    }
    agent = _build(name, data, tmp_path, **overrides)
    states = data.sample_transitions(2_000, torch.Generator().manual_seed(5)).observations
    env_idx = torch.zeros(len(states), dtype=torch.int64)

    def score(actions):  # mean true reward of these actions in these states
        return float((actions[:, :6] * states[:, :6]).sum(-1).mean())

    random_score = score(
        torch.rand(len(states), 6, generator=torch.Generator().manual_seed(9)) * 2 - 1
    )
    best = float(states[:, :6].abs().sum(-1).mean())  # ≈ 4.7
    before = score(agent.act(states, env_idx))
    generator = torch.Generator().manual_seed(0)
    for _ in range(800):
        agent.update(generator)
    after = score(agent.act(states, env_idx))
    assert abs(random_score) < 0.3 and abs(before) < 0.5
    assert after > random_score + 2.0, (before, after, random_score, best)
    assert after > 0.4 * best


def test_imagined_observations_are_clipped_to_the_data_range_and_counted(tmp_path):
    from .test_algos import make

    agent, dataset = make("tgw", tmp_path)
    mbpo = agent.mbpo
    stats = mbpo.rollout(torch.Generator().manual_seed(0))
    buf = mbpo.model_buffer
    nxt, env = buf.next_obs[: buf.size], buf.env[: buf.size]
    assert torch.all(nxt >= mbpo.obs_low[env]) and torch.all(nxt <= mbpo.obs_high[env])
    assert 0.0 <= stats["rollout/outside_data_range_fraction"] <= 1.0
    # an untrained tiny model predicts out of range often: the counter sees it
    assert stats["rollout/outside_data_range_fraction"] > 0


def test_clipped_rollouts_continue_from_what_they_store(tmp_path):
    """With obs_bounds="clip" the model's prompt memory continues from the clipped observation
    that the buffer stores; with "none" nothing is clipped."""
    from dataclasses import replace

    from .test_algos import make

    agent, _ = make("tgw", tmp_path)
    mbpo, seen = agent.mbpo, []
    original = mbpo.world_model.with_observations

    def record(state, observations):
        new = original(state, observations)
        seen.append((observations.clone(), new.current_observations.clone()))
        return new

    mbpo.world_model.with_observations = record
    mbpo.rollout(torch.Generator().manual_seed(0))
    assert seen and all(torch.equal(stored, memory) for stored, memory in seen)
    mbpo.cfg = replace(mbpo.cfg, obs_bounds="none")
    mbpo.model_buffer.size, mbpo.model_buffer.pos, seen[:] = 0, 0, []
    stats = mbpo.rollout(torch.Generator().manual_seed(0))
    buf = mbpo.model_buffer
    nxt, env = buf.next_obs[: buf.size], buf.env[: buf.size]
    out = (nxt < mbpo.obs_low[env]) | (nxt > mbpo.obs_high[env])
    assert stats["rollout/outside_data_range_fraction"] > 0 and bool(out.any()) and not seen


@pytest.mark.parametrize("name", ["tgw", "mopo", "morel"])
def test_every_model_based_method_shares_the_mini_policy_learner(name):
    """Mini scale: one policy learner for TGW, MOPO and MOReL (half-real batches, the TD3+BC-form
    term, the same rollouts and learning rates: the table compares world models, not policy
    learners); full scale is plain offline MBPO with each method's reference settings."""
    from types import SimpleNamespace

    from genworld.algos import morel, tgw
    from genworld.algos.registry import resolve_config

    cls, presets = {
        "tgw": (TGWAgentConfig, tgw.AGENT_PRESETS),
        "mopo": (mopo.MOPOConfig, mopo.PRESETS),
        "morel": (morel.MOReLConfig, morel.PRESETS),
    }[name]
    mini = resolve_config(cls, presets, SimpleNamespace(scale="mini", overrides={}))
    full = resolve_config(cls, presets, SimpleNamespace(scale="full", overrides={}))
    assert (mini.mbpo.real_ratio, mini.mbpo.sac.bc_alpha) == (0.5, 1.0)
    assert full.mbpo.sac.bc_alpha == 0.0 and full.mbpo.real_ratio == cls().mbpo.real_ratio
    tgw_mini = resolve_config(
        TGWAgentConfig, tgw.AGENT_PRESETS, SimpleNamespace(scale="mini", overrides={})
    )
    assert dataclasses.replace(mini.mbpo, beta=0.0) == dataclasses.replace(tgw_mini.mbpo, beta=0.0)
    if name == "morel":
        assert full.mbpo.sac.actor_lr == morel.MOREL_SAC.actor_lr == 1e-4  # the reference's


def test_sac_group_updates_each_env_exactly_like_its_own_sac(monkeypatch):
    """The vectorised per-env SACs (MBPO's per_env policies) against one SAC per env with the
    same weights and the same (zero) sampling noise: equal parameters after 3 updates."""
    from genworld.algos.sac import SAC, SACConfig
    from genworld.algos.sac_group import SACGroup

    torch.manual_seed(0)
    cpu, cfg = torch.device("cpu"), SACConfig(hidden=(16, 16), bc_alpha=2.5)
    act_dims, obs_max, act_max, c = [3, 2, 3], 5, 3, cfg.num_critics
    mean, std = torch.randn(3, obs_max), torch.rand(3, obs_max) + 0.5
    group = SACGroup(obs_max, act_max, cfg, cpu, act_dims, (mean, std))
    singles = [
        SAC(obs_max, act_max, cfg, cpu, 1, [d], obs_stats=(mean[k : k + 1], std[k : k + 1]))
        for k, d in enumerate(act_dims)
    ]
    with torch.no_grad():
        for k, single in enumerate(singles):
            for i, layer in enumerate(group.actor.net.layers):
                single.actor.net[2 * i].weight.copy_(layer.weight[k].T)
                single.actor.net[2 * i].bias.copy_(layer.bias[k, 0])
            for mine, theirs in (
                (single.critic, group.critic),
                (single.critic_target, group.critic_target),
            ):
                for a, b in zip(mine.layers, theirs.layers, strict=True):
                    a.weight.copy_(b.weight[k * c : (k + 1) * c])
                    a.bias.copy_(b.bias[k * c : (k + 1) * c])
    monkeypatch.setattr(torch, "randn_like", torch.zeros_like)  # the same "noise" for both
    g = torch.Generator().manual_seed(1)
    for _ in range(3):
        n = 30
        env = torch.randint(0, 3, (n,), generator=g)
        dims = torch.tensor(act_dims)[env]
        obs = torch.randn(n, obs_max, generator=g)
        act = (torch.rand(n, act_max, generator=g) * 2 - 1) * (
            torch.arange(act_max) < dims[:, None]
        )
        rew, nxt = torch.randn(n, generator=g), torch.randn(n, obs_max, generator=g)
        term = (torch.rand(n, generator=g) < 0.2).float()
        real = (torch.rand(n, generator=g) < 0.3) & (env != 1)  # env 1: no data rows
        got = group.update(obs, act, rew, nxt, term, env, real)
        want = [
            s.update(
                obs[env == k],
                act[env == k],
                rew[env == k],
                nxt[env == k],
                term[env == k],
                None,
                real[env == k],
            )
            for k, s in enumerate(singles)
        ]
        assert torch.allclose(
            got["losses/critic"], torch.stack([w["losses/critic"] for w in want]).mean()
        )
    for k, single in enumerate(singles):
        for i, layer in enumerate(group.actor.net.layers):
            assert torch.allclose(single.actor.net[2 * i].weight, layer.weight[k].T, atol=1e-6)
        for a, b in zip(single.critic.layers, group.critic.layers, strict=True):
            assert torch.allclose(a.weight, b.weight[k * c : (k + 1) * c], atol=1e-6)
        for a, b in zip(single.critic_target.layers, group.critic_target.layers, strict=True):
            assert torch.allclose(a.bias, b.bias[k * c : (k + 1) * c], atol=1e-6)
        assert torch.allclose(single.log_alpha, group.log_alpha[k : k + 1], atol=1e-6)
    obs, env = torch.randn(9, obs_max), torch.tensor([2, 0, 0, 1, 2, 2, 0, 1, 0])
    want = torch.zeros(9, act_max)
    for k, s in enumerate(singles):
        want[env == k] = s.act(obs[env == k])
    assert torch.allclose(group.act(obs, env), want, atol=1e-6)


@pytest.mark.slow
def test_sac_group_tracks_the_loop_of_sacs_over_many_updates(monkeypatch):
    """MBPO's two per-env forms over 300 updates of a 3-env stream, with noise drawn as a
    function of the policy mean (so both draw the same): they stay within float drift."""
    from genworld.algos.mbpo import PerEnvSACs
    from genworld.algos.sac import SACConfig
    from genworld.algos.sac_group import SACGroup

    torch.manual_seed(0)
    cpu, cfg = torch.device("cpu"), SACConfig(hidden=(32, 32), bc_alpha=1.0)
    act_dims, obs_max, act_max, c = [3, 6, 6], 17, 6, cfg.num_critics
    mean, std = torch.randn(3, obs_max), torch.rand(3, obs_max) + 0.5
    group = SACGroup(obs_max, act_max, cfg, cpu, act_dims, (mean, std))
    loop = PerEnvSACs(obs_max, act_max, cfg, cpu, act_dims, (mean, std))
    with torch.no_grad():
        for k, single in enumerate(loop.agents):
            for i, layer in enumerate(group.actor.net.layers):
                single.actor.net[2 * i].weight.copy_(layer.weight[k].T)
                single.actor.net[2 * i].bias.copy_(layer.bias[k, 0])
            pairs = ((single.critic, group.critic), (single.critic_target, group.critic_target))
            for mine, theirs in pairs:
                for a, b in zip(mine.layers, theirs.layers, strict=True):
                    a.weight.copy_(b.weight[k * c : (k + 1) * c])
                    a.bias.copy_(b.bias[k * c : (k + 1) * c])
    monkeypatch.setattr(torch, "randn_like", lambda t: torch.sin(t * 97.0 + 1.0) * 1.5)
    g = torch.Generator().manual_seed(1)
    dynamics = torch.randn(obs_max, obs_max, generator=g) * 0.3
    for _ in range(300):
        env = torch.randint(0, 3, (256,), generator=g)
        obs = torch.randn(256, obs_max, generator=g)
        act = torch.rand(256, act_max, generator=g) * 2 - 1
        act = act * (torch.arange(act_max) < torch.tensor(act_dims)[env][:, None])
        batch = (obs, act, obs[:, 0] + act[:, 0], torch.tanh(obs @ dynamics), torch.zeros(256))
        real = torch.arange(256) >= 128
        got = group.update(*batch, env, real)
        want = loop.update(*batch, env, real)
    assert torch.allclose(got["losses/q"], want["losses/q"], rtol=0.02)
    for k, single in enumerate(loop.agents):
        assert torch.allclose(single.log_alpha, group.log_alpha[k : k + 1], atol=1e-3)
        for i, layer in enumerate(group.actor.net.layers):
            assert torch.allclose(single.actor.net[2 * i].weight, layer.weight[k].T, atol=2e-2)


@pytest.mark.parametrize("beta", [-5.0, float("nan"), float("inf")])
def test_beta_must_be_finite_and_non_negative_everywhere(beta):
    """`run --beta` and table variants are checked by the same field (one owner of β)."""
    from genworld.api import run_config

    with pytest.raises(GenworldError, match="finite number ≥ 0"):
        run_config("tiny", beta=beta)
    with pytest.raises(GenworldError, match="finite number ≥ 0"):
        MBPOConfig(beta=beta).validate()


@pytest.mark.parametrize(
    ("policy", "per_env", "rows"),
    [("per_env", True, (16, 16)), ("per_env", False, None), ("shared", True, None)],
)
def test_each_per_env_sac_gets_a_full_batch_of_its_own_env(tmp_path, policy, per_env, rows):
    """batch_per_env: each env's SAC learns from ``sac.batch_size`` rows of its env (a K×
    batch, balanced); else the envs share one batch. The shared policy always takes one."""
    from dataclasses import replace

    from .test_algos import make

    agent, _ = make("tgw", tmp_path)
    mbpo = agent.mbpo
    cfg = replace(
        mbpo.cfg,
        policy=policy,
        batch_per_env=per_env,
        real_ratio=0.25,
        sac=replace(mbpo.cfg.sac, batch_size=16),
    )
    mbpo = MBPOAgent(mbpo.world_model, mbpo.dataset, cfg, torch.device("cpu"))
    seen = []
    mbpo.policy.update = lambda obs, act, rew, nobs, term, env, real: (
        seen.append((env.clone(), real.clone())) or {}
    )
    mbpo.update(torch.Generator().manual_seed(0))
    env, real = seen[0]
    counts = tuple(int((env == k).sum()) for k in range(2))
    if rows is None:
        assert len(env) == 16
    else:
        assert counts == rows and int(real.sum()) == 8  # a quarter real, balanced over envs
        assert tuple(int((env[real] == k).sum()) for k in range(2)) == (4, 4)


def test_all_real_batches_and_runs_saved_before_batch_per_env(tmp_path):
    """real_ratio 1 draws nothing imagined; a saved config without ``batch_per_env`` means the
    shared batch of the code that saved it, so it resumes only as False."""
    from dataclasses import asdict, replace

    from genworld.utils.io import config_differences, field_defaults

    from .test_algos import make

    agent, _ = make("tgw", tmp_path)
    mbpo = agent.mbpo
    cfg = replace(mbpo.cfg, real_ratio=1.0, sac=replace(mbpo.cfg.sac, batch_size=8))
    metrics = MBPOAgent(mbpo.world_model, mbpo.dataset, cfg, torch.device("cpu")).update(
        torch.Generator().manual_seed(0)
    )
    assert metrics
    saved = asdict(cfg)
    del saved["batch_per_env"]
    defaults = field_defaults(cfg)
    assert config_differences(saved, asdict(cfg), defaults) == ["batch_per_env"]
    old = asdict(replace(cfg, batch_per_env=False))
    assert config_differences(saved, old, defaults) == []
