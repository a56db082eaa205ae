"""MrCoM's world model (world_models/mrcom.py): its KL terms by hand, the meta-value term's
gradient isolation, context and padding, "context helps" on two scenarios of one body, save →
load, a tiny fit, and its registration as a trainable world model that MBPO can roll out."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs import get_env_spec
from genworld.errors import GenworldError
from genworld.world_models.mrcom import (
    MrCoMConfig,
    MrCoMWorldModel,
    Normal,
    bellman_loss,
    body_groups,
    kl_loss,
    kl_nats,
    observation_nll,
)

from .test_world_models import _linear_episodes
from .world_model_fit import fit as _fit

TINY = MrCoMConfig(
    context_len=4, d_model=24, n_heads=3, stoch_dim=8, aux_dim=8, hidden=32, mlp_layers=3
)
HOPPER, CHEETAH = get_env_spec("hopper"), get_env_spec("halfcheetah")  # obs 11/17, act 3/6
TOY = dataclasses.replace(HOPPER, name="toy", obs_dim=3, act_dim=1, termination=None)


def two_bodies() -> MultiEnvDataset:
    """Hopper and halfcheetah (obs 11/17, act 3/6): padding between two bodies."""
    return MultiEnvDataset(
        [
            (HOPPER, _linear_episodes(HOPPER, 6, 40, 0)),
            (CHEETAH, _linear_episodes(CHEETAH, 6, 40, 1)),
        ]
    )


@pytest.fixture(scope="module")
def suite():
    return two_bodies()


def _rotation_episodes(angle: float, n_episodes: int, steps: int, seed: int) -> list[Episode]:
    """o' = R(angle) o (first two dims) + 0.5 a; the third dim is a; r = o[0]. Two angles of
    opposite sign have the same state statistics: only the history tells them apart."""
    rng = np.random.default_rng(seed)
    c, s = math.cos(angle), math.sin(angle)
    rot = np.array([[c, -s], [s, c]])
    episodes = []
    for _ in range(n_episodes):
        obs = [np.concatenate([rng.normal(size=2), [0.0]])]
        actions = rng.uniform(-1, 1, (steps, 1))
        for t in range(steps):
            xy = rot @ obs[-1][:2] + 0.5 * actions[t, 0]
            obs.append(np.concatenate([0.97 * xy, actions[t]]))
        obs = np.array(obs, dtype=np.float32)
        ends = np.zeros(steps, bool)
        ends[-1] = True
        episodes.append(
            Episode.from_arrays(obs, actions.astype(np.float32), obs[:-1, 0], ends & False, ends)
        )
    return episodes


def two_scenarios() -> MultiEnvDataset:
    """Two scenarios of one body with opposite rotations."""
    return MultiEnvDataset(
        [
            (dataclasses.replace(TOY, name="toy@spin=1"), _rotation_episodes(1.2, 12, 40, 0)),
            (dataclasses.replace(TOY, name="toy@spin=-1"), _rotation_episodes(-1.2, 12, 40, 1)),
        ]
    )


@pytest.fixture(scope="module")
def scenarios():
    return two_scenarios()


def _model(data, cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return MrCoMWorldModel(data.specs, cfg, Normalizer.fit(data))


# ------------------------------------------------------------------ KL terms by hand
def test_kl_and_its_balanced_loss_match_a_hand_computation():
    q = Normal(torch.tensor([0.5, -1.0]), torch.tensor([1.0, 0.5]))
    p = Normal(torch.tensor([0.0, 0.0]), torch.tensor([2.0, 1.0]))
    hand = sum(
        0.5 * (sq**2 / sp**2 + (mq - mp) ** 2 / sp**2 - 1 - math.log(sq**2 / sp**2))
        for mq, sq, mp, sp in ((0.5, 1.0, 0.0, 2.0), (-1.0, 0.5, 0.0, 1.0))
    )
    assert float(kl_nats(q, p)) == pytest.approx(hand, rel=1e-6)
    # DreamerV3's balancing: value (dyn + rep) · max(free, KL); the prior's gradient at dyn and
    # the posterior's at rep of the plain KL's; no gradient below the free nats
    for free in (0.0, 10.0):
        cfg = MrCoMConfig(kl_dyn=0.5, kl_rep=0.1, free_nats=free)
        leaves = [t.clone().requires_grad_() for t in (q.mean, q.std, p.mean, p.std)]
        value = kl_loss(Normal(*leaves[:2]), Normal(*leaves[2:]), cfg)
        assert float(value.detach()) == pytest.approx(0.6 * max(free, hand), rel=1e-6)
        grads = torch.autograd.grad(value, leaves)
        plain = [t.clone().requires_grad_() for t in (q.mean, q.std, p.mean, p.std)]
        plain_grads = torch.autograd.grad(kl_nats(Normal(*plain[:2]), Normal(*plain[2:])), plain)
        scales = (0.1, 0.1, 0.5, 0.5) if free < hand else (0.0,) * 4
        for grad, plain_grad, scale in zip(grads, plain_grads, scales, strict=True):
            torch.testing.assert_close(grad, scale * plain_grad)


def test_the_loss_kl_terms_equal_a_step_by_step_hand_computation(suite):
    model = _model(suite)
    batch = suite.sample_windows(5, 4, torch.Generator().manual_seed(3))
    with torch.no_grad():
        terms, metrics = model.loss_terms(batch, torch.Generator().manual_seed(0))
        w = model.forward_window(batch, torch.Generator().manual_seed(0))
    free, cfg = model.cfg.free_nats, model.cfg
    dist = torch.distributions

    def kl(q: Normal, p: Normal, i: int, t: int) -> float:
        qn, pn = dist.Normal(q.mean[i, t], q.std[i, t]), dist.Normal(p.mean[i, t], p.std[i, t])
        return float(dist.kl_divergence(qn, pn).sum().detach())

    sums = {"kl_u": [], "kl_x": [], "meta_state": []}
    for i in range(5):
        sums["kl_u"].append(kl(w.q_u, w.p_u, i, 0))  # u_0 of the window's first observation
        for t in range(4):
            if batch.step_mask[i, t]:
                sums["kl_u"].append(kl(w.q_u, w.p_u, i, t + 1))
                sums["kl_x"].append(kl(w.q_x, w.p_x, i, t))
                sums["meta_state"].append(kl(w.q_u, Normal(*_pad_first(w.r_u)), i, t + 1))
    for name, values in sums.items():
        hand = np.mean([(cfg.kl_dyn + cfg.kl_rep) * max(free, v) for v in values])
        if name == "meta_state":  # eq. 12's KL, its two sides two terms (both sides equal here)
            term = terms["meta_state"] + terms["meta_prior"]
            side = np.mean([max(free, v) for v in values])
            assert float(terms["meta_state"]) == pytest.approx(cfg.kl_rep * side, rel=1e-5)
        else:
            term = terms[name]
        assert float(term) == pytest.approx(hand, rel=1e-5), name
    assert float(metrics["wm/kl_u_nats"]) == pytest.approx(np.mean(sums["kl_u"]), rel=1e-5)


def _pad_first(normal: Normal) -> tuple[torch.Tensor, torch.Tensor]:
    """The meta-state prior ``(B, L, S)`` aligned with u_0 … u_L (nothing for u_0)."""
    pad = lambda x: torch.nn.functional.pad(x, (0, 0, 1, 0), value=1.0)  # noqa: E731
    return pad(normal.mean), pad(normal.std)


# ------------------------------------------------------------------ meta value
def test_meta_value_gradient_reaches_the_world_model_not_the_value(suite):
    model = _model(suite)
    batch = suite.sample_windows(6, 4, torch.Generator().manual_seed(1))
    terms, _ = model.loss_terms(batch, torch.Generator().manual_seed(0))
    value_params = dict(model.meta_value.named_parameters())
    world_params = {n: p for n, p in model.named_parameters() if not n.startswith("meta_value.")}

    def grads(term, params):
        out = torch.autograd.grad(term, list(params.values()), retain_graph=True, allow_unused=True)
        return {
            n: (0.0 if g is None else float(g.abs().sum()))
            for n, g in zip(params, out, strict=True)
        }

    # eq. 15: moves the world model (its imagination priors and transformers), never V_m
    on_world = grads(terms["meta_value"], world_params)
    assert all(g == 0 for g in grads(terms["meta_value"], value_params).values())
    for prefix in ("u_meta_prior.", "x_prior.", "latent_transformer.", "context_transformer."):
        assert sum(g for n, g in on_world.items() if n.startswith(prefix)) > 0, prefix
    # eq. 14: V_m's Bellman loss trains V_m only
    assert all(g == 0 for g in grads(terms["value"], world_params).values())
    assert sum(grads(terms["value"], value_params).values()) > 0


def test_observation_nll_is_half_the_squared_error_on_real_dims():
    mean, target = torch.tensor([[0.5, -1.0, 3.0]]), torch.tensor([[0.0, 1.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])  # the third dim is padding
    torch.testing.assert_close(observation_nll(mean, target, mask), torch.tensor([2.125]))


def test_spread_head_learns_from_the_detached_error_only(suite):
    """The decoder's mean learns from the unit-variance NLL alone; the spread term moves the
    spread head and nothing else, and the NLL terms never reach it."""
    model = _model(suite)
    batch = suite.sample_windows(6, 4, torch.Generator().manual_seed(1))
    terms, _ = model.loss_terms(batch, torch.Generator().manual_seed(0))
    params = dict(model.named_parameters())

    def moved(term) -> set[str]:
        out = torch.autograd.grad(term, list(params.values()), retain_graph=True, allow_unused=True)
        return {n for n, g in zip(params, out, strict=True) if g is not None and g.abs().sum() > 0}

    assert moved(terms["obs_spread"]) == {n for n in params if n.startswith("spread_head.")}
    assert not any(n.startswith("spread_head.") for n in moved(terms["obs_nll"]))
    assert any(n.startswith("decoder.") for n in moved(terms["obs_nll"]))


def test_bellman_target_is_detached():
    value = torch.tensor([1.0, 2.0], requires_grad=True)
    next_value = torch.tensor([3.0, 4.0], requires_grad=True)
    reward, terminal = torch.tensor([0.5, -1.0]), torch.tensor([0.0, 1.0])
    loss = bellman_loss(value, reward, next_value, terminal, 0.9).sum()
    g_value, g_next = torch.autograd.grad(loss, [value, next_value], allow_unused=True)
    target = torch.tensor([0.5 + 0.9 * 3.0, -1.0])  # the terminal row does not bootstrap
    torch.testing.assert_close(g_value, 2 * (value.detach() - target))
    assert g_next is None


def test_meta_value_warmup_switches_the_term_on_after_its_updates(suite):
    model = _model(suite, dataclasses.replace(TINY, meta_value_warmup=2)).train()
    batch = suite.sample_windows(4, 4, torch.Generator().manual_seed(2))
    for update in range(3):
        total, metrics = model.loss(batch, torch.Generator().manual_seed(0))
        weights = model.loss_weights(meta_value_on=update >= 2)
        assert weights["meta_value"] == (1.0 if update >= 2 else 0.0)
        expected = sum(w * float(metrics[f"wm/{name}"]) for name, w in weights.items())
        assert float(total.detach()) == pytest.approx(expected, rel=1e-5)
    assert int(model.updates) == 3
    with torch.no_grad():  # evaluation counts no update
        model.loss(batch)
    assert int(model.updates) == 3


# ------------------------------------------------------------------ context and padding
def test_context_from_another_scenario_changes_predictions(scenarios):
    model = _model(scenarios)
    memory = model.encode(scenarios, torch.tensor([0]), torch.tensor([10]))  # 3 history steps
    other = model.encode(scenarios, torch.tensor([1]), torch.tensor([10]))
    swapped = dataclasses.replace(memory)
    last = int(memory.count[0]) - 1
    for name in ("observations", "actions", "prev_rewards"):
        mixed = getattr(other, name).clone()
        mixed[0, last] = getattr(memory, name)[0, last]  # the same current step, other history
        setattr(swapped, name, mixed)
    action = torch.full((1, 1), 0.3)
    a = model.next(memory, None, action, deterministic=True)
    b = model.next(swapped, None, action, deterministic=True)
    assert not torch.allclose(a.next_observations, b.next_observations)


def test_padding_changes_no_prediction(suite):
    model = _model(suite)
    env_idx, index = torch.tensor([0, 0, 1]), torch.tensor([1, 20, 2])
    memory = model.encode(suite, env_idx, index)
    actions = torch.tensor([[0.1, -0.2, 0.3, 0, 0, 0], [0.5] * 3 + [0] * 3, [0.2] * 6])
    garbage = dataclasses.replace(memory)
    obs, act = memory.observations.clone(), memory.actions.clone()
    obs[:2, :, 11:] = 1e3 * torch.randn_like(obs[:2, :, 11:])  # hopper's padded dims
    act[:2, :, 3:] = 1e3 * torch.randn_like(act[:2, :, 3:])
    obs[0, 2:] = act[0, 2:] = 1e3  # slots past the first row's two filled ones
    garbage.observations, garbage.actions = obs, act
    bad_actions = actions.clone()
    bad_actions[:2, 3:] = 1e3
    for deterministic in (True, False):
        g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
        a = model.next(memory, None, actions, generator=g(), deterministic=deterministic)
        b = model.next(garbage, None, bad_actions, generator=g(), deterministic=deterministic)
        torch.testing.assert_close(a.next_observations, b.next_observations)
        torch.testing.assert_close(a.extrinsic, b.extrinsic)
    assert (a.next_observations[:2, 11:] == 0).all()


@pytest.mark.integration  # trains two models: a "does it learn" test, CI runs it
def test_context_fits_two_scenarios_better_than_no_context(scenarios):
    from genworld.eval.wm_metrics import k_step_errors

    errors = {}
    for context in (1, 4):
        cfg = dataclasses.replace(TINY, context_len=context, d_model=32, hidden=64)
        model = _model(scenarios, cfg)
        _fit(model, scenarios, steps=200, lr=5e-3)
        found = k_step_errors(model.eval(), scenarios, model.normalizer, (1,), per_env=128)
        errors[context] = np.mean([e["obs_h1"] for e in found.values()])
    assert errors[4] < 0.5 * errors[1], errors


# ------------------------------------------------------------------ fitting, saving, registering
def test_loss_is_finite_and_decreases_on_a_tiny_fit(suite):
    losses = _fit(_model(suite), suite, steps=60)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-10:]) < np.mean(losses[:10]) - 1.0


def test_save_load_gives_identical_predictions(suite, tmp_path):
    from genworld.train.checkpoint import load_checkpoint, save_checkpoint

    model = _model(suite)
    _fit(model, suite, steps=3)
    path = save_checkpoint(tmp_path, 1, {"model": model.state_dict()})
    _, state = load_checkpoint(path)
    other = MrCoMWorldModel(suite.specs, TINY, Normalizer(2, 17))
    other.load_state_dict(state["model"])
    memory = model.encode(suite, torch.tensor([0, 1]), torch.tensor([9, 2]))
    for deterministic in (True, False):
        runs = [
            m.next(
                memory,
                None,
                torch.ones(2, 6) * 0.3,
                None,
                torch.Generator().manual_seed(1),
                deterministic,
            )
            for m in (model, other)
        ]
        assert torch.equal(runs[0].next_observations, runs[1].next_observations)
        assert torch.equal(runs[0].extrinsic, runs[1].extrinsic)
    assert int(other.updates) == 3


def test_scenarios_of_one_task_share_a_body():
    specs = [dataclasses.replace(TOY, name=n) for n in ("toy@spin=1", "toy@spin=-1")] + [HOPPER]
    assert body_groups(specs, share_scenarios=True)[1] == [0, 0, 1]
    assert body_groups(specs, share_scenarios=False)[1] == [0, 1, 2]
    odd = [specs[0], dataclasses.replace(TOY, name="toy@x=2", obs_dim=4)]
    with pytest.raises(GenworldError, match="share_scenarios=False"):
        body_groups(odd, share_scenarios=True)
    with pytest.raises(GenworldError, match="MrCoMConfig.discount"):
        MrCoMConfig(discount=1.0).validate()
    with pytest.raises(GenworldError, match="MrCoMConfig.meta_state_scale"):
        MrCoMConfig(meta_state_scale=-1.0).validate()


def test_trained_through_the_world_model_source_and_rolled_out_by_mbpo(suite, tmp_path):
    """``--model mrcom`` at the tiny scale: fitted by the runner's world-model source, then
    imagined in by MBPO (the path every model-based agent takes)."""
    from genworld.algos.mbpo import MBPOAgent, MBPOConfig
    from genworld.algos.registry import AlgoContext
    from genworld.train.world_model import config_for_scale, world_model_steps
    from genworld.train.world_model_source import provide_world_model

    cfg = config_for_scale("tiny", check_ids=False, model="mrcom")
    assert cfg.model == "mrcom" and cfg.mrcom.context_len < 20
    ctx = AlgoContext(
        dataset=suite,
        normalizer=Normalizer.fit(suite),
        device=torch.device("cpu"),
        scale="tiny",
        seed=0,
        out=tmp_path,
        world_models=provide_world_model,
    )
    model = ctx.world_model("mrcom")
    assert isinstance(model, MrCoMWorldModel) and int(model.updates) == world_model_steps(
        "tiny", "mrcom"
    )
    agent = MBPOAgent(model, suite, MBPOConfig(rollout_batch=32, horizon=3), torch.device("cpu"))
    stats = agent.rollout(torch.Generator().manual_seed(0))
    assert stats["rollout/transitions"] > 0 and math.isfinite(stats["rollout/extrinsic_mean"])


@pytest.mark.integration
def test_cli_trains_and_evaluates_mrcom_on_two_datasets(tmp_path):
    """`genworld train world-model --model mrcom --scale tiny`, then `genworld eval world-model`."""
    import json

    from genworld.cli import main

    for env in ("hopper", "halfcheetah"):
        assert main(["data", "build", f"{env}-random", "--steps", "1500", "--quiet"]) == 0
    out = tmp_path / "mrcom"
    argv = ["train", "world-model", "--model", "mrcom", "--scale", "tiny", "--quiet"]
    argv += ["--datasets", "hopper-random,halfcheetah-random", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 30
    assert main(["eval", "world-model", str(out), "--episodes-per-env", "16"]) == 0
    (evaluation,) = (out / "eval").iterdir()
    errors = json.loads((evaluation / "k_step_errors.json").read_text())
    assert set(errors["mrcom:mrcom"]) == {"hopper", "halfcheetah"}


def test_without_the_meta_state_term_the_imagination_prior_still_learns(suite):
    """λ_ms = 0 removes the regulariser on the posterior, not the fit of r(u | a, c), which
    imagination draws u from."""
    model = _model(suite, dataclasses.replace(TINY, meta_state_scale=0.0, free_nats=0.0))
    batch = suite.sample_windows(6, 4, torch.Generator().manual_seed(1))
    loss, _ = model.loss(batch, torch.Generator().manual_seed(0))
    grads = torch.autograd.grad(loss, list(model.u_meta_prior.parameters()))
    assert sum(float(g.abs().sum()) for g in grads) > 0
    terms, _ = model.loss_terms(batch, torch.Generator().manual_seed(0))
    posterior = list(model.u_posterior.parameters())
    on_posterior = torch.autograd.grad(terms["meta_prior"], posterior, allow_unused=True)
    assert all(g is None or float(g.abs().sum()) == 0 for g in on_posterior)
