"""The RSSM world model (world_models/rssm.py), WPT's reward-free pre-training
(train/pretrain.py, ``genworld pretrain world-model``) and eq. 5's retrieval (data/retrieval.py):
KL balancing and free nats by hand, padded action dims, what the posterior and the prior see,
nearest neighbours with and without faiss, save → load, a tiny pre-training fit, a held-out
embodiment reconstructed better after pre-training than before, and ``--model rssm`` in the
world-model loop and MBPO."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import torch

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.retrieval import RetrievalConfig, nearest, retrieve, segments
from genworld.envs import get_env_spec
from genworld.world_models.rssm import RSSMConfig, RSSMWorldModel, encoder_group
from genworld.world_models.terms import balanced_kl, categorical_kl, gaussian_kl

from .test_world_models import _linear_episodes
from .world_model_fit import fit as _fit

TINY = RSSMConfig(deter_dim=32, stoch_dim=8, classes=4, hidden=32, seq_len=8, burn_in=3)
HOPPER, CHEETAH = get_env_spec("hopper"), get_env_spec("halfcheetah")  # obs 11/17, act 3/6
TOY = dataclasses.replace(HOPPER, name="toy", obs_dim=3, act_dim=1, termination=None)


@pytest.fixture(scope="module")
def suite():
    return MultiEnvDataset(
        [
            (HOPPER, _linear_episodes(HOPPER, 6, 40, 0)),
            (CHEETAH, _linear_episodes(CHEETAH, 6, 40, 1)),
        ]
    )


def _model(data, cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return RSSMWorldModel(data.specs, cfg, Normalizer.fit(data))


# ------------------------------------------------------------------ KL balancing and free nats
def test_balanced_kl_and_free_nats_match_a_hand_computation():
    # Gaussians: KL = Σ log(σp/σq) + (σq² + (μq − μp)²) / (2σp²) − ½
    mq, sq, mp, sp = [0.5, -1.0], [1.0, 0.5], [0.0, 0.0], [2.0, 1.0]
    hand = sum(
        math.log(b / a) + (a**2 + (m - n) ** 2) / (2 * b**2) - 0.5
        for m, a, n, b in zip(mq, sq, mp, sp, strict=True)
    )
    post = (torch.tensor(mq), torch.tensor(sq).log())
    prior = (torch.tensor(mp), torch.tensor(sp).log())
    assert float(gaussian_kl(*post, *prior)) == pytest.approx(hand, rel=1e-6)
    # categoricals: Σ_variables Σ_classes q (log q − log p)
    q = torch.tensor([[0.7, 0.2, 0.1], [0.25, 0.25, 0.5]])
    p = torch.tensor([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    cat_hand = sum(
        float(a * math.log(a / b)) for a, b in zip(q.flatten(), p.flatten(), strict=True)
    )
    assert float(categorical_kl(q.log(), p.log())) == pytest.approx(cat_hand, rel=1e-6)
    # the scales: dynamics 1 trains the prior, representation 0.1 the posterior; the value
    # is (1 + 0.1) · max(free, KL), and no gradient flows below the free nats
    cfg = RSSMConfig()
    assert (cfg.kl_dyn, cfg.kl_rep, cfg.free_nats, cfg.unimix) == (1.0, 0.1, 1.0, 0.01)
    for kind, (a, b, value) in {
        "gaussian": (post, prior, hand),
        "categorical": ((q.log(),), (p.log(),), cat_hand),
    }.items():
        kl = gaussian_kl if kind == "gaussian" else categorical_kl
        for free in (0.0, 10.0):
            leaves_q = [t.clone().requires_grad_() for t in a]
            leaves_p = [t.clone().requires_grad_() for t in b]
            loss, raw = balanced_kl(leaves_q, leaves_p, cfg.kl_dyn, cfg.kl_rep, free, kl=kl)
            assert float(loss.detach()) == pytest.approx(1.1 * max(free, value), rel=1e-6), kind
            assert float(raw) == pytest.approx(value, rel=1e-6)
            grads = torch.autograd.grad(loss, leaves_q + leaves_p)
            plain_q = [t.clone().requires_grad_() for t in a]
            plain_p = [t.clone().requires_grad_() for t in b]
            plain = torch.autograd.grad(kl(*plain_q, *plain_p), plain_q + plain_p)
            scales = [0.1] * len(a) + [1.0] * len(b) if free < value else [0.0] * (2 * len(a))
            for grad, plain_grad, scale in zip(grads, plain, scales, strict=True):
                torch.testing.assert_close(grad, scale * plain_grad)


@pytest.mark.parametrize("latent", ["gaussian", "categorical"])
def test_the_loss_kl_is_the_step_by_step_hand_computation(suite, latent):
    cfg = dataclasses.replace(TINY, latent=latent)
    model = _model(suite, cfg)
    batch = suite.sample_windows(5, 6, torch.Generator().manual_seed(3))
    with torch.no_grad():
        terms, metrics = model.loss_terms(batch, torch.Generator().manual_seed(0))
        observed = torch.cat([batch.observations[:, :1], batch.next_observations], 1)
        w = model.observe(observed, batch.actions, batch.env_idx, torch.Generator().manual_seed(0))
    dist = torch.distributions
    values = []
    for i in range(5):
        for t in range(7):  # o_0 always, o_{t} when step t − 1 exists
            if t > 0 and not batch.step_mask[i, t - 1]:
                continue
            if latent == "gaussian":
                q = dist.Normal(w.posterior[0][i, t], w.posterior[1][i, t].exp())
                p = dist.Normal(w.prior[0][i, t], w.prior[1][i, t].exp())
            else:
                q = dist.Categorical(logits=w.posterior[0][i, t])
                p = dist.Categorical(logits=w.prior[0][i, t])
            values.append(float(dist.kl_divergence(q, p).sum()))
    hand = np.mean([1.1 * max(1.0, v) for v in values])
    assert float(terms["kl"]) == pytest.approx(hand, rel=1e-5)
    assert float(metrics["wm/kl_nats"]) == pytest.approx(np.mean(values), rel=1e-5)


def test_categorical_latents_mix_in_one_percent_uniform(suite):
    model = _model(suite, dataclasses.replace(TINY, latent="categorical", classes=4))
    (logprobs,) = model._params(torch.tensor([[1e4, 0.0, 0.0, 0.0] * 8]))
    probs = logprobs.exp()[0, 0]
    torch.testing.assert_close(probs, torch.tensor([0.99 + 0.0025, 0.0025, 0.0025, 0.0025]))
    z = model._sample((logprobs,), model._noise((1,), torch.Generator().manual_seed(0), "cpu"))
    assert z.shape == (1, 32) and set(z.unique().tolist()) <= {0.0, 1.0}


# ------------------------------------------------------------------ padding, posterior and prior
def test_zero_padded_action_dims_change_no_prediction(suite):
    model = _model(suite)
    _fit(model, suite, steps=5)
    env_idx, index = torch.tensor([0, 0, 1]), torch.tensor([1, 20, 2])
    state = model.encode(suite, env_idx, index)
    actions = torch.tensor([[0.1, -0.2, 0.3, 0, 0, 0], [0.5] * 3 + [0] * 3, [0.2] * 6])
    garbage = actions.clone()
    garbage[:2, 3:] = 1e3 * torch.randn(2, 3)  # hopper's padded action dims
    for deterministic in (True, False):
        g = lambda: torch.Generator().manual_seed(4)  # noqa: E731
        a = model.next(state, None, actions, generator=g(), deterministic=deterministic)
        b = model.next(state, None, garbage, generator=g(), deterministic=deterministic)
        torch.testing.assert_close(a.next_observations, b.next_observations)
        torch.testing.assert_close(a.extrinsic, b.extrinsic)
        torch.testing.assert_close(a.state.deter, b.state.deter)
    assert (a.next_observations[:2, 11:] == 0).all()
    # in training too: padded action and observation columns leave the loss as it is
    batch = suite.sample_windows(6, 8, torch.Generator().manual_seed(1))
    noisy = dataclasses.replace(
        batch,
        actions=batch.actions + 1e3 * (~batch.act_mask[:, None]),
        observations=batch.observations + 1e3 * (~batch.obs_mask[:, None]),
    )
    first = model.loss(batch, torch.Generator().manual_seed(0))[0].detach()
    second = model.loss(noisy, torch.Generator().manual_seed(0))[0].detach()
    assert float(first) == pytest.approx(float(second), rel=1e-6)


def test_the_posterior_uses_the_observation_and_the_prior_does_not(suite):
    model = _model(suite)
    _fit(model, suite, steps=5)
    batch = suite.sample_windows(4, 6, torch.Generator().manual_seed(2))
    observed = torch.cat([batch.observations[:, :1], batch.next_observations], 1)
    changed = observed.clone()
    changed[:, 3, :11] += 2.0  # o_3, real dims of both bodies
    a, b = (
        model.observe(o, batch.actions, batch.env_idx, deterministic=True)
        for o in (observed, changed)
    )
    # the prior of step 3 sees h_3 only, built from o_0 … o_2: unchanged; the posterior moves
    torch.testing.assert_close(a.prior[0][:, :4], b.prior[0][:, :4])
    torch.testing.assert_close(a.deter[:, :4], b.deter[:, :4])
    assert not torch.allclose(a.posterior[0][:, 3], b.posterior[0][:, 3])
    # from step 4 on, h carries the observation forward
    assert not torch.allclose(a.deter[:, 4], b.deter[:, 4])
    # a gradient check of the same: ∂prior_3/∂o_3 = 0, ∂posterior_3/∂o_3 ≠ 0
    leaf = observed.clone().requires_grad_()
    w = model.observe(leaf, batch.actions, batch.env_idx, deterministic=True)
    (g_prior,) = torch.autograd.grad(w.prior[0][:, 3].sum(), leaf, retain_graph=True)
    (g_post,) = torch.autograd.grad(w.posterior[0][:, 3].sum(), leaf)
    assert float(g_prior[:, 3].abs().sum()) == 0 and float(g_prior[:, :3].abs().sum()) > 0
    assert float(g_post[:, 3].abs().sum()) > 0


# ------------------------------------------------------------------ retrieval (eq. 5)
def _toy_keys(n=200, d=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d, generator=g), torch.randn(3, d, generator=g)


def _brute_force(keys, queries, k):
    distance = torch.tensor(
        [min(float(np.linalg.norm(key - q)) for q in queries.numpy()) for key in keys.numpy()]
    )
    order = sorted(range(len(keys)), key=lambda i: (float(distance[i]), i))[:k]
    return torch.tensor(order), distance[order]


def test_retrieval_returns_the_true_nearest_neighbours_with_torch():
    keys, queries = _toy_keys()
    idx, dist = nearest(keys, queries, 17, backend="torch")
    true_idx, true_dist = _brute_force(keys, queries, 17)
    assert idx.tolist() == true_idx.tolist()
    torch.testing.assert_close(dist, true_dist, rtol=1e-5, atol=1e-5)
    assert len(nearest(keys, queries, 10_000, backend="torch")[0]) == len(keys)


def test_retrieval_with_faiss_returns_the_same_neighbours():
    pytest.importorskip("faiss")
    keys, queries = _toy_keys(seed=1)
    for k in (1, 17, 200):
        faiss_found = nearest(keys, queries, k, backend="faiss")
        torch_found = nearest(keys, queries, k, backend="torch")
        assert (
            faiss_found[0].tolist()
            == torch_found[0].tolist()
            == _brute_force(keys, queries, k)[0].tolist()
        )
        assert torch.equal(faiss_found[1], torch_found[1])


def test_retrieve_keeps_the_target_action_size_and_keys_first_observations():
    """Three envs: two with 1-dim actions; the query is one trajectory's first observation."""
    rng = np.random.default_rng(0)

    def episodes(n, obs_dim, act_dim, offset):
        out = []
        for i in range(n):
            obs = rng.normal(size=(11, obs_dim)).astype(np.float32)
            obs[0] = offset + i  # each episode's first observation is distinct
            ends = np.zeros(10, bool)
            ends[-1] = True
            act = rng.uniform(-1, 1, (10, act_dim)).astype(np.float32)
            out.append(Episode.from_arrays(obs, act, np.zeros(10, np.float32), ends & False, ends))
        return out

    wide = dataclasses.replace(TOY, name="wide", act_dim=2)
    data = MultiEnvDataset(
        [
            (TOY, episodes(4, 3, 1, 0.0)),
            (wide, episodes(4, 3, 2, 0.5)),
            (dataclasses.replace(TOY, name="toy2"), episodes(3, 3, 1, 10.0)),
        ]
    )
    features = lambda obs, env: obs  # noqa: E731  (identity: raw first observations)
    query = torch.full((1, 3), 2.1)  # nearest: toy's episode 2 (value 2), then 3 and 1
    found = retrieve(data, features, query, act_dim=1, cfg=RetrievalConfig(k=3, backend="torch"))
    assert found.env_idx.tolist() == [0, 0, 0] and found.start.tolist() == [20, 30, 10]
    assert found.length.tolist() == [10, 10, 10]
    torch.testing.assert_close(found.distance, torch.tensor([0.1, 0.9, 1.1]) * math.sqrt(3))
    every = retrieve(data, features, query, act_dim=1, cfg=RetrievalConfig(k=500, backend="torch"))
    assert len(every) == 7 and set(every.env_idx.tolist()) == {0, 2}  # never the 2-dim env
    cut = segments(data, segment_len=4)  # 10 steps → 4, 4, 2
    assert cut.length[:3].tolist() == [4, 4, 2] and cut.start[:3].tolist() == [0, 4, 8]


def test_retrieval_in_the_rssm_feature_space(suite):
    model = _model(suite)
    start = suite.envs[1].observations[40:41]  # halfcheetah's second episode's first observation
    padded = torch.zeros(1, suite.obs_max)
    padded[:, :17] = start
    queries = model.features(padded, torch.tensor([1]))
    found = retrieve(suite, model.features, queries, act_dim=6, cfg=RetrievalConfig(k=2))
    assert found.env_idx.tolist() == [1, 1] and int(found.start[0]) == 40
    assert float(found.distance[0]) == pytest.approx(0.0, abs=1e-4)


# ------------------------------------------------------------------ rollouts, saving, fitting
def test_encode_next_and_with_observations_meet_the_contract(suite):
    from genworld.eval.wm_metrics import k_step_errors

    model = _model(suite)
    _fit(model, suite, steps=20)
    state = model.encode(suite, torch.tensor([0, 1, 1]), torch.tensor([0, 5, 45]))
    step = model.next(state, None, torch.rand(3, 6), generator=torch.Generator().manual_seed(0))
    assert step.next_observations.shape == (3, 17) and step.extrinsic.shape == (3,)
    assert (step.uncertainty > 0).all() and step.terminations.dtype == torch.bool
    clipped = step.next_observations.clamp(-0.1, 0.1)
    moved = model.with_observations(step.state, clipped)
    assert torch.equal(moved.deter, step.state.deter) and not torch.equal(
        moved.stoch, step.state.stoch
    )
    errors = k_step_errors(model.eval(), suite, model.normalizer, (1, 5), per_env=16)
    assert all(math.isfinite(v) for env in errors.values() for v in env.values())
    reward_free = _model(suite, dataclasses.replace(TINY, reward_head=False))
    assert (
        reward_free.reward_net is None
        and "wm/reward"
        not in reward_free.loss(reward_free.sample_batch(suite, 4, torch.Generator()), None)[1]
    )
    quiet = reward_free.next(
        reward_free.encode(suite, torch.tensor([0]), torch.tensor([3])), None, torch.zeros(1, 6)
    )
    assert float(quiet.extrinsic) == 0.0


def test_save_load_gives_identical_predictions(suite, tmp_path):
    from genworld.train.checkpoint import load_checkpoint, save_checkpoint

    for latent in ("gaussian", "categorical"):
        cfg = dataclasses.replace(TINY, latent=latent)
        model = _model(suite, cfg)
        _fit(model, suite, steps=3)
        path = save_checkpoint(tmp_path / latent, 1, {"model": model.state_dict()})
        _, state = load_checkpoint(path)
        other = RSSMWorldModel(suite.specs, cfg, Normalizer(2, 17))
        other.load_state_dict(state["model"])
        start = (torch.tensor([0, 1]), torch.tensor([9, 2]))
        for deterministic in (True, False):
            runs = [
                m.next(
                    m.encode(suite, *start),
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


def test_a_tiny_reward_free_pretraining_fit_lowers_the_loss(suite):
    model = _model(suite, dataclasses.replace(TINY, reward_head=False))
    losses = _fit(model, suite, steps=80)
    assert all(math.isfinite(x) for x in losses)
    assert np.mean(losses[-10:]) < 0.7 * np.mean(losses[:10])


def _rotation_episodes(angle: float, n_episodes: int, steps: int, seed: int) -> list[Episode]:
    """o' = 0.95 R(angle) o + 0.5 a on the first two dims; the third is the action."""
    rng = np.random.default_rng(seed)
    c, s = math.cos(angle), math.sin(angle)
    rot = 0.95 * np.array([[c, -s], [s, c]])
    episodes = []
    for _ in range(n_episodes):
        obs = [np.concatenate([rng.normal(size=2), [0.0]])]
        actions = rng.uniform(-1, 1, (steps, 1))
        for t in range(steps):
            obs.append(np.concatenate([rot @ obs[-1][:2] + 0.5 * actions[t, 0], actions[t]]))
        obs = np.array(obs, dtype=np.float32)
        ends = np.zeros(steps, bool)
        ends[-1] = True
        episodes.append(
            Episode.from_arrays(
                obs, actions.astype(np.float32), np.zeros(steps), ends & False, ends
            )
        )
    return episodes


def test_pretraining_lowers_reconstruction_error_on_a_held_out_embodiment():
    """Pre-trained on two scenarios of a toy body (rotation speeds 0.4 and 1.2), moved to a held-out
    one (0.8) with :meth:`transferred`: its reconstruction error there is below an untrained
    model's."""
    spec = lambda angle: dataclasses.replace(TOY, name=f"toy@spin={angle}")  # noqa: E731
    train = MultiEnvDataset(
        [(spec(a), _rotation_episodes(a, 8, 40, i)) for i, a in enumerate((0.4, 1.2))]
    )
    held = MultiEnvDataset([(spec(0.8), _rotation_episodes(0.8, 8, 40, 7))])
    assert len({encoder_group(s, "body") for s in (*train.specs, *held.specs)}) == 1
    cfg = dataclasses.replace(TINY, reward_head=False)
    pretrained = _model(train, cfg)
    _fit(pretrained, train, steps=150)
    errors = {}
    for name, model in (
        ("pretrained", pretrained.transferred(held.specs, Normalizer.fit(held))),
        ("untrained", _model(held, cfg, seed=1)),
    ):
        batch = held.sample_windows(64, 8, torch.Generator().manual_seed(5))
        with torch.no_grad():
            _, metrics = model.eval().loss(batch, torch.Generator().manual_seed(0))
        errors[name] = float(metrics["wm/obs_mse"])
    assert errors["pretrained"] < 0.5 * errors["untrained"], errors


def test_transferred_keeps_shared_weights_and_known_bodies(suite):
    model = _model(suite)
    _fit(model, suite, steps=3)
    walker = get_env_spec("walker2d")  # obs 17, act 6: a body the model has not seen
    target = MultiEnvDataset(
        [
            (CHEETAH, _linear_episodes(CHEETAH, 2, 20, 3)),
            (walker, _linear_episodes(walker, 2, 20, 4)),
        ]
    )
    moved = model.transferred(target.specs, Normalizer.fit(target))
    torch.testing.assert_close(moved.gru.linear.weight, model.gru.linear.weight)
    k_old, k_new = model.groups.index("halfcheetah:17"), moved.groups.index("halfcheetah:17")
    torch.testing.assert_close(moved.obs_in.weight[k_new], model.obs_in.weight[k_old])
    assert moved.act_max == 6 and moved.groups == ["halfcheetah:17", "walker2d:17"]


def test_encoder_groups_follow_the_robot():
    names = ["dmc-walker-run", "dmc-walker-walk", "mw-reach-v3", "mw-push-v3", "dmc-cheetah-run"]
    groups = [encoder_group(get_env_spec(n), "body") for n in names]
    assert groups == ["dmc-walker:24", "dmc-walker:24", "mw:39", "mw:39", "dmc-cheetah:17"]
    assert encoder_group(get_env_spec("mw-reach-v3"), "env") == "mw-reach-v3"
    # a hard variant is the same robot: it shares the pre-trained layers of its task
    assert encoder_group(get_env_spec("dmc-cheetah-run-hard"), "body") == "dmc-cheetah:17"


def test_reward_gradient_off_trains_the_reward_head_only(suite):
    model = _model(suite, dataclasses.replace(TINY, reward_gradient=False))
    batch = model.sample_batch(suite, 4, torch.Generator().manual_seed(0))
    terms, _ = model.loss_terms(batch, torch.Generator().manual_seed(1))
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(terms["reward"], list(params.values()), allow_unused=True)
    moved = {n for n, g in zip(params, grads, strict=True) if g is not None and g.abs().sum() > 0}
    assert moved and all(n.startswith("reward_net.") for n in moved)


# ------------------------------------------------------------------ registration and pre-training
def test_pretraining_config_is_the_reward_free_rssm_on_the_scale_datasets():
    from genworld.errors import GenworldError
    from genworld.train.pretrain import PRETRAIN_DATASETS, check_reward_free, config_for_scale

    for scale in ("tiny", "mini", "full"):
        cfg = config_for_scale(scale)
        assert cfg.model == "rssm" and not cfg.rssm.reward_head
        assert cfg.datasets == PRETRAIN_DATASETS[scale]
    tiny = config_for_scale("tiny", datasets=("mw-reach-v3-scripted-noise",), seed=3)
    assert tiny.datasets == ("mw-reach-v3-scripted-noise",) and tiny.seed == 3
    assert tiny.rssm.seq_len == 8  # the RSSM's tiny preset underneath
    assert "dmc-cheetah-run-exploration" in PRETRAIN_DATASETS["tiny"]
    assert sum(d.startswith("mw-") for d in PRETRAIN_DATASETS["full"]) == 50
    with pytest.raises(GenworldError, match="reward-free"):
        config_for_scale("tiny", rssm={"reward_head": True})
    with pytest.raises(GenworldError, match="trains the RSSM"):
        check_reward_free(dataclasses.replace(tiny, model="tgw"))


def test_pretrain_command_prints_its_config_and_has_no_model_option(capsys):
    import json

    from genworld.cli import main

    argv = ["pretrain", "world-model", "--scale", "tiny", "--print-config", "--seed", "2"]
    assert main([*argv, "--rssm.latent", "categorical"]) == 0
    cfg = json.loads(capsys.readouterr().out)
    assert cfg["model"] == "rssm" and cfg["seed"] == 2 and cfg["rssm"]["latent"] == "categorical"
    assert (
        cfg["rssm"]["reward_head"] is False and cfg["datasets"][0] == "dmc-cheetah-run-exploration"
    )
    with pytest.raises(SystemExit):
        main([*argv, "--model", "tgw"])


def test_model_rssm_trains_and_resumes_in_the_world_model_loop_and_mbpo_rolls_it_out(
    suite, tmp_path
):
    """``--model rssm`` (reward head on: MrCoM's context-free baseline) through the runner's
    world-model source, then imagined in by MBPO (the path every model-based agent takes)."""
    import json

    from genworld.algos.mbpo import MBPOAgent, MBPOConfig
    from genworld.algos.registry import AlgoContext
    from genworld.train.world_model import config_for_scale, fit_world_model
    from genworld.train.world_model_source import provide_world_model

    ctx = AlgoContext(
        dataset=suite,
        normalizer=Normalizer.fit(suite),
        device=torch.device("cpu"),
        scale="tiny",
        seed=0,
        out=tmp_path,
        world_models=provide_world_model,
    )
    model = ctx.world_model("rssm")
    assert isinstance(model, RSSMWorldModel) and model.cfg.reward_head
    records = (tmp_path / "world_model" / "metrics.jsonl").read_text().splitlines()
    assert json.loads(records[-1])["step"] == 30
    cfg = config_for_scale("tiny", check_ids=False, model="rssm", device="cpu")
    again = fit_world_model(cfg, suite, tmp_path / "world_model", show_progress=False)
    for name, value in model.state_dict().items():  # finished: resumed, nothing trained
        assert torch.equal(value, again.state_dict()[name]), name
    agent = MBPOAgent(model, suite, MBPOConfig(rollout_batch=32, horizon=3), torch.device("cpu"))
    stats = agent.rollout(torch.Generator().manual_seed(0))
    assert stats["rollout/transitions"] > 0 and math.isfinite(stats["rollout/extrinsic_mean"])


@pytest.mark.integration
def test_cli_pretrains_on_the_tiny_reward_free_datasets_and_evaluates(tmp_path):
    """`genworld pretrain world-model --scale tiny` builds its datasets, trains, resumes as
    finished, and `genworld eval world-model` reads the run."""
    import json

    from genworld.cli import main

    out = tmp_path / "pretrain"
    argv = ["pretrain", "world-model", "--scale", "tiny", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    assert json.loads((out / "metrics.jsonl").read_text().splitlines()[-1])["step"] == 30
    assert json.loads((out / "config.json").read_text())["rssm"]["reward_head"] is False
    assert main(argv) == 0  # rerun: resumes a finished run
    assert main(["eval", "world-model", str(out), "--episodes-per-env", "8"]) == 0
    (evaluation,) = (out / "eval").iterdir()  # one folder per evaluation
    errors = json.loads((evaluation / "k_step_errors.json").read_text())
    assert set(errors["rssm:pretrain"]) == {"dmc-cheetah-run", "mw-reach-v3", "mw-push-v3"}
