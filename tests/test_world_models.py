"""TGW and the reference MLP ensemble on a synthetic 2-env suite with different dims."""

import copy

import numpy as np
import pytest
import torch

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs import get_env_spec
from genworld.errors import GenworldError
from genworld.world_models.ensemble_mlp import EnsembleMLPConfig, EnsembleMLPWorldModel
from genworld.world_models.prompt_memory import PromptMemory, push
from genworld.world_models.tgw import TGWConfig, TGWWorldModel

TINY = TGWConfig(ensemble_size=3, context_len=4, d_model=16, n_heads=2, stoch_dim=8, hidden=32)
HOPPER, CHEETAH = get_env_spec("hopper"), get_env_spec("halfcheetah")  # obs 11/17, act 3/6


def _linear_episodes(spec, n_episodes, steps, seed):
    """o' = A o + B a (small, stable), r = sum(o); truncated episodes (no terminals)."""
    rng = np.random.default_rng(seed)
    a_mat = 0.9 * np.eye(spec.obs_dim) + 0.01 * rng.normal(size=(spec.obs_dim, spec.obs_dim))
    b_mat = 0.3 * rng.normal(size=(spec.act_dim, spec.obs_dim))
    episodes = []
    for _ in range(n_episodes):
        obs = [rng.normal(size=spec.obs_dim)]
        actions = rng.uniform(-1, 1, (steps, spec.act_dim))
        for t in range(steps):
            obs.append(obs[-1] @ a_mat + actions[t] @ b_mat)
        obs = np.array(obs)
        ends = np.zeros(steps, bool)
        ends[-1] = True
        episodes.append(
            Episode.from_arrays(obs, actions, obs[:-1].sum(1), np.zeros(steps, bool), ends)
        )
    return episodes


@pytest.fixture(scope="module")
def suite():
    return MultiEnvDataset(
        [
            (HOPPER, _linear_episodes(HOPPER, 6, 40, 0)),
            (CHEETAH, _linear_episodes(CHEETAH, 6, 40, 1)),
        ]
    )


def _model(suite, cfg=TINY, seed=0):
    torch.manual_seed(seed)
    return TGWWorldModel(suite.specs, cfg, Normalizer.fit(suite))


def test_forward_shapes_and_padding_zero(suite):
    model = _model(suite)
    batch = suite.sample_windows(6, 4, torch.Generator().manual_seed(0))
    out = model.forward_sequence(
        batch.observations, batch.actions, batch.rewards, batch.env_idx, batch.step_mask
    )
    assert out["s"].shape == (3, 6, 4, 16) and out["u"].shape == (3, 6, 4, 8)
    assert out["obs_mean"].shape == (3, 6, 4, 17) and out["rew_mean"].shape == (3, 6, 4)
    hop = batch.env_idx == 0
    assert (out["obs_mean"][:, hop, :, 11:] == 0).all()


def test_garbage_in_padded_inputs_changes_no_output(suite):
    model = _model(suite)
    batch = suite.sample_windows(8, 4, torch.Generator().manual_seed(0))
    obs, act = batch.observations.clone(), batch.actions.clone()
    hop = batch.env_idx == 0
    obs[hop, :, 11:] = 1e3 * torch.randn_like(obs[hop, :, 11:])
    act[hop, :, 3:] = 1e3 * torch.randn_like(act[hop, :, 3:])
    a = model.forward_sequence(
        batch.observations,
        batch.actions,
        batch.rewards,
        batch.env_idx,
        batch.step_mask,
        deterministic=True,
    )
    b = model.forward_sequence(
        obs, act, batch.rewards, batch.env_idx, batch.step_mask, deterministic=True
    )
    for key in ("s", "obs_mean", "rew_mean"):
        torch.testing.assert_close(a[key], b[key])


def test_padded_columns_get_zero_gradient(suite):
    model = _model(suite)
    batch = suite.sample_windows(8, 4, torch.Generator().manual_seed(0))
    only_hopper = type(batch)(**{**batch.__dict__})
    hop = batch.env_idx == 0
    sub = type(batch)(
        **{k: (v[hop] if v.shape[0] == len(hop) else v) for k, v in only_hopper.__dict__.items()}
    )
    loss, _ = model.loss(sub)
    loss.backward()
    # hopper's projection rows beyond its 11 obs / 3 act dims receive no gradient
    assert model.obs_token.weight.grad[0, 11:].abs().sum() == 0
    assert model.act_token.weight.grad[0, 3:].abs().sum() == 0
    assert model.obs_token.weight.grad[0, :11].abs().sum() > 0
    # halfcheetah's own tokenizer gets nothing from a hopper-only batch
    assert model.obs_token.weight.grad[1].abs().sum() == 0


@pytest.mark.parametrize("intrinsic", ["state", "observation", "reward"])
def test_members_differ_and_variance_zero_when_identical(suite, intrinsic):
    model = _model(suite, TGWConfig(**{**TINY.__dict__, "intrinsic": intrinsic}))
    env_idx, index = torch.tensor([0, 1, 0]), torch.tensor([5, 7, 30])
    memory = model.encode(suite, env_idx, index)
    actions = torch.zeros(3, 6)
    out = model.next(memory, None, actions, generator=torch.Generator().manual_seed(0))
    assert (out.uncertainty > 0).all()
    same = copy.deepcopy(model)
    member_specific = ("transformer", "stoch_head", "obs_net", "rew_net", "term_net")
    with torch.no_grad():
        for name, p in same.named_parameters():
            if name.startswith(member_specific):
                p.copy_(p[:1].expand_as(p))
    # deterministic: the members' stochastic states are their means (sampled ones differ)
    out = same.next(memory, None, actions, deterministic=True)
    torch.testing.assert_close(out.uncertainty, torch.zeros(3))


def test_members_own_their_decoder_and_reward_module(suite):
    """θ_o per member (Algorithm 1): changing member 0's observation model or reward module
    changes member 0's predictions only."""
    model = _model(suite)
    batch = suite.sample_windows(4, 4, torch.Generator().manual_seed(2))
    args = (batch.observations, batch.actions, batch.rewards, batch.env_idx, batch.step_mask)
    before = model.forward_sequence(*args, deterministic=True)
    with torch.no_grad():
        for net in (model.obs_net, model.rew_net):
            for layer in net.mlp.layers:
                layer.weight[0] += 0.5
    after = model.forward_sequence(*args, deterministic=True)
    for key in ("obs_mean", "rew_mean"):
        assert not torch.allclose(before[key][0], after[key][0])
        torch.testing.assert_close(before[key][1:], after[key][1:])


def test_reward_intrinsic_is_in_reward_units(suite):
    """intrinsic="reward": the members' reward spread scales with the env's reward std."""
    cfg = TGWConfig(**{**TINY.__dict__, "intrinsic": "reward"})
    model = _model(suite, cfg)
    wide = copy.deepcopy(model)
    with torch.no_grad():
        wide.normalizer.reward_std.mul_(3.0)
    # episode starts: a one-step prompt, so no (rescaled) previous reward enters the tokens
    memory = model.encode(suite, torch.tensor([0, 1]), torch.tensor([0, 40]))
    run = lambda m: m.next(memory, None, torch.zeros(2, 6), deterministic=True)  # noqa: E731
    torch.testing.assert_close(run(wide).uncertainty, 3.0 * run(model).uncertainty)


def test_the_penalised_reward_is_extrinsic_minus_beta_intrinsic(suite):
    """eq. 6: the agent penalises the model's reward with its own β (the model has none)."""
    from genworld.algos.mbpo import penalised_reward

    model = _model(suite, TINY)
    assert not hasattr(TINY, "beta")
    memory = model.encode(suite, torch.tensor([0, 1]), torch.tensor([3, 3]))
    out = model.next(memory, None, torch.zeros(2, 6), generator=torch.Generator().manual_seed(0))
    reward = penalised_reward(out.extrinsic, out.uncertainty, 2.5)
    torch.testing.assert_close(reward, out.extrinsic - 2.5 * out.uncertainty)


def test_nll_matches_hand_computation(suite):
    model = _model(suite, TGWConfig(**{**TINY.__dict__, "ensemble_size": 1}))
    batch = suite.sample_windows(4, 4, torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(5)
    loss, _ = model.loss(batch, g)
    norm = model.normalizer
    next_n = (batch.next_observations - norm.obs_mean[batch.env_idx][:, None]) / norm.obs_std[
        batch.env_idx
    ][:, None]
    with torch.no_grad():
        out = model.forward_sequence(
            batch.observations,
            batch.actions,
            torch.nn.functional.pad(batch.rewards[:, :-1], (1, 0)),
            batch.env_idx,
            batch.step_mask,
            torch.Generator().manual_seed(5),
            next_obs_n=next_n * model.obs_masks[batch.env_idx][:, None],
        )
    total_obs, n_obs, total_rew, n_rew, total_kl = 0.0, 0, 0.0, 0, 0.0
    for i in range(4):
        k = int(batch.env_idx[i])
        d = suite.specs[k].obs_dim
        for t in range(4):
            if not batch.step_mask[i, t]:
                continue
            target = (batch.next_observations[i, t, :d] - norm.obs_mean[k, :d]) / norm.obs_std[
                k, :d
            ]
            mu, lv = out["obs_mean"][0, i, t, :d], out["obs_logvar"][0, i, t, :d]
            total_obs += float((0.5 * ((mu - target) ** 2 / lv.exp() + lv)).sum())
            n_obs += d
            r_t = (batch.rewards[i, t] - norm.reward_mean[k]) / norm.reward_std[k]
            mu, lv = out["rew_mean"][0, i, t], out["rew_logvar"][0, i, t]
            total_rew += float(0.5 * ((mu - r_t) ** 2 / lv.exp() + lv))
            n_rew += 1
            # KL(q || p) of diagonal Gaussians, by its closed form, per position
            (mq, sq), (mp, sp) = (
                (x[0, i, t] for x in out["post"]),
                (x[0, i, t] for x in out["prior"]),
            )
            kl = float(
                (sp - sq + ((2 * sq).exp() + (mq - mp) ** 2) / (2 * (2 * sp).exp()) - 0.5).sum()
            )
            cfg = model.cfg
            total_kl += (cfg.kl_dyn + cfg.kl_rep) * max(kl, cfg.free_nats)
    expected = total_obs / n_obs + total_rew / n_rew + total_kl / n_rew
    assert loss.item() == pytest.approx(expected, rel=1e-4)


def test_save_load_identical_predictions(suite, tmp_path):
    from genworld.train.checkpoint import load_checkpoint, save_checkpoint

    model = _model(suite)
    path = save_checkpoint(tmp_path, 1, {"model": model.state_dict()})
    _, state = load_checkpoint(path)
    other = TGWWorldModel(suite.specs, TINY, Normalizer(2, 17))
    other.load_state_dict(state["model"])
    memory = model.encode(suite, torch.tensor([0, 1]), torch.tensor([9, 2]))
    a = model.next(memory, None, torch.ones(2, 6) * 0.3, deterministic=True)
    b = other.next(memory, None, torch.ones(2, 6) * 0.3, deterministic=True)
    assert torch.equal(a.next_observations, b.next_observations) and torch.equal(
        a.extrinsic, b.extrinsic
    )


def test_fifo_memory_replaces_oldest_first():
    m = 3
    memory = PromptMemory(
        observations=torch.arange(2 * m, dtype=torch.float32).view(2, m, 1),
        actions=torch.zeros(2, m, 1),
        prev_rewards=torch.zeros(2, m),
        count=torch.tensor([3, 1]),
        env_idx=torch.tensor([0, 0]),
    )
    new = push(
        memory, torch.ones(2, m, 1), torch.tensor([[100.0], [200.0]]), torch.tensor([7.0, 8.0])
    )
    # full row: oldest (0) dropped, 100 appended last
    assert new.observations[0, :, 0].tolist() == [1.0, 2.0, 100.0]
    assert new.prev_rewards[0].tolist() == [0.0, 0.0, 7.0]
    # row with one step: appended in slot 1
    assert new.observations[1, :, 0].tolist() == [3.0, 200.0, 5.0]
    assert new.count.tolist() == [3, 2]


def test_memory_from_dataset_uses_own_episode_history(suite):
    model = _model(suite)
    data = suite.envs[0]
    # transition 2 of hopper's first episode: two history steps, then the start observation
    memory = model.memory_from_dataset(suite, torch.tensor([0]), torch.tensor([2]))
    assert memory.count.item() == 3
    torch.testing.assert_close(memory.observations[0, :3, :11], data.observations[:3])
    torch.testing.assert_close(memory.actions[0, :2, :3], data.actions[:2])
    assert (memory.actions[0, 2:] == 0).all() and (memory.observations[0, 3:] == 0).all()
    torch.testing.assert_close(memory.prev_rewards[0, 1:3], data.rewards[:2])


@pytest.mark.learns
@pytest.mark.parametrize("model_kind", ["tgw", "mlp"])
def test_learns_linear_dynamics(suite, model_kind):
    torch.manual_seed(0)
    norm = Normalizer.fit(suite)
    if model_kind == "tgw":
        model = TGWWorldModel(
            suite.specs,
            TGWConfig(
                ensemble_size=2,
                context_len=2,
                d_model=32,
                n_heads=2,
                stoch_dim=8,
                hidden=64,
                loss="mse",
            ),
            norm,
        )
        lr, batch = 3e-3, 16
    else:
        model = EnsembleMLPWorldModel(
            suite.specs, EnsembleMLPConfig(members=2, elites=2, hidden=64, layers=2), norm
        )
        lr, batch = 3e-3, 128
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(0)
    from genworld.eval.wm_metrics import k_step_errors

    before = k_step_errors(model, suite, norm, horizons=(1,), per_env=64)
    for _ in range(400):
        loss, _ = model.loss(model.sample_batch(suite, batch, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = k_step_errors(model, suite, norm, horizons=(1,), per_env=64)
    mean = k_step_errors(None, suite, norm, horizons=(1,), per_env=64)
    for env in ("hopper", "halfcheetah"):
        assert after[env]["obs_h1"] < 0.05 * mean[env]["obs_h1"], (env, before[env], after[env])


def test_bad_inputs_are_clear(suite):
    model = _model(suite)
    swapped = MultiEnvDataset(
        [(CHEETAH, _linear_episodes(CHEETAH, 2, 5, 0)), (HOPPER, _linear_episodes(HOPPER, 2, 5, 0))]
    )
    with pytest.raises(GenworldError, match="dataset env #0 is 'halfcheetah'"):
        model.encode(swapped, torch.tensor([0]), torch.tensor([0]))
    memory = model.encode(suite, torch.tensor([0]), torch.tensor([0]))
    short = PromptMemory(
        memory.observations[:, :2],
        memory.actions[:, :2],
        memory.prev_rewards[:, :2],
        memory.count,
        memory.env_idx,
    )
    with pytest.raises(GenworldError, match="prompt memory has 2 slots.*M=4"):
        model.next(short, None, torch.zeros(1, 6))
    batch = suite.sample_windows(4, 4, torch.Generator().manual_seed(0))
    from genworld.world_models.base import check_finite

    with pytest.raises(GenworldError, match="non-finite values.*observations"):
        check_finite(observations=batch.observations.clone().fill_(float("nan")))
    with pytest.raises(GenworldError, match="TGWConfig.termination='learnt'"):
        TGWConfig(termination="learnt").validate()


def test_mlp_ensemble_step_and_uncertainty(suite):
    torch.manual_seed(0)
    model = EnsembleMLPWorldModel(
        suite.specs,
        EnsembleMLPConfig(members=3, elites=2, hidden=16, layers=2),
        Normalizer.fit(suite),
    )
    batch = suite.sample_transitions(10, torch.Generator().manual_seed(0))
    out = model.next(
        None, batch.observations, batch.actions, batch.env_idx, torch.Generator().manual_seed(0)
    )
    assert out.next_observations.shape == (10, 17)
    assert (out.next_observations[batch.env_idx == 0, 11:] == 0).all()
    assert (out.uncertainty > 0).all()
    train, held = model.split_holdout(suite, seed=0)
    assert [len(e) for e in held.envs] == [
        min(1_000, int(0.2 * len(e))) for e in suite.envs
    ]  # OfflineRL-Kit's split
    assert [len(a) + len(b) for a, b in zip(train.envs, held.envs, strict=True)] == [
        len(e) for e in suite.envs
    ]
    model.select_elites(held)
    assert model.elite_idx.shape == (2, 2)


def test_mlp_ensemble_members_train_on_their_own_minibatches(suite):
    """Each member learns from its own rows of the batch (MBPO draws each member's data
    independently): changing the rows of member 1 changes member 1's gradient only."""
    from dataclasses import replace

    torch.manual_seed(0)
    cfg = EnsembleMLPConfig(members=3, elites=2, hidden=16, layers=2)
    model = EnsembleMLPWorldModel(suite.specs, cfg, Normalizer.fit(suite))
    batch = model.sample_batch(suite, 8, torch.Generator().manual_seed(0))
    assert len(batch.rewards) == 3 * 8

    def grads(b):
        model.zero_grad()
        model.loss(b)[0].backward()
        return [net.out.weight.grad.clone() for net in model.nets]  # (E, hidden, out) each

    before = grads(batch)
    rows = [torch.nonzero(batch.env_idx == k).flatten() for k in range(len(suite.specs))]
    member_1 = torch.cat([r[len(r) // 3 : 2 * (len(r) // 3)] for r in rows])
    rewards = batch.rewards.clone()
    rewards[member_1] += 5.0
    after = grads(replace(batch, rewards=rewards))
    for k in range(len(suite.specs)):
        assert torch.equal(before[k][0], after[k][0]) and torch.equal(before[k][2], after[k][2])
        assert not torch.equal(before[k][1], after[k][1])


def test_elites_are_chosen_on_held_out_transitions_only(suite):
    """A member that is wrong only on the held-out rows loses its elite place."""
    torch.manual_seed(0)
    cfg = EnsembleMLPConfig(members=3, elites=2, hidden=16, layers=2)
    model = EnsembleMLPWorldModel(suite.specs, cfg, Normalizer.fit(suite))
    _, held = model.split_holdout(suite, seed=0)
    with torch.no_grad():
        for net in model.nets:
            net.out.bias[1] += 100.0  # member 1 predicts nonsense everywhere
    model.select_elites(held)
    assert all(1 not in model.elite_idx[k].tolist() for k in range(len(suite.specs)))


def test_rollout_fast_path_equals_full_forward(suite):
    """Computing only the query position gives the same outputs as the full sequence."""
    model = _model(suite, TGWConfig(**{**TINY.__dict__, "n_layers": 2}))
    batch = suite.sample_windows(6, 4, torch.Generator().manual_seed(0))
    prev = torch.nn.functional.pad(batch.rewards[:, :-1], (1, 0))
    full = model.forward_sequence(
        batch.observations, batch.actions, prev, batch.env_idx, batch.step_mask, deterministic=True
    )
    last = batch.step_mask.sum(1) - 1
    fast = model.forward_sequence(
        batch.observations,
        batch.actions,
        prev,
        batch.env_idx,
        batch.step_mask,
        deterministic=True,
        query_index=last,
    )
    rows = torch.arange(6)
    for key in ("s", "obs_mean", "rew_mean", "obs_logvar"):
        torch.testing.assert_close(
            fast[key][:, :, 0], full[key][:, rows, last], atol=1e-5, rtol=1e-5
        )


@pytest.mark.parametrize("layers", [1, 2])
def test_transformer_query_path_equals_the_full_pass_with_trained_looking_weights(layers):
    """The rollout path (LayerNorm affine folded into K/V, key bias dropped, value bias after
    attention, attention as reductions) against the full causal pass, with non-trivial LN
    scales/shifts and biases, shared tokens (1 layer) and per-member ones (2), padding, and
    queries at any position."""
    from genworld.nn.transformer import EnsembleCausalTransformer

    torch.manual_seed(0)
    net = EnsembleCausalTransformer(members=3, dim=24, layers=layers, heads=3)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if "ln" in name or "bias" in name:
                p.copy_(torch.randn_like(p) * 0.5 + (1.0 if name.endswith("weight") else 0.0))
    tokens = torch.randn(7, 6, 24)
    valid = torch.arange(6)[None] < torch.tensor([6, 6, 4, 1, 3, 6, 5])[:, None]
    query = torch.tensor([5, 2, 3, 0, 2, 0, 4])
    full = net(tokens, valid)  # (E, B, L, D)
    fast = net(tokens, valid, query_index=query)  # (E, B, 1, D)
    torch.testing.assert_close(fast[:, :, 0], full[:, torch.arange(7), query], atol=2e-5, rtol=1e-5)
    assert (full[:, 0, 5] - full[:, 0, 4]).abs().max() > 1e-2  # the positions differ


def test_spearman_by_hand():
    from genworld.eval.wm_metrics import spearman

    a = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert spearman(a, a**3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, torch.tensor([2.0, 1.0, 4.0, 3.0])) == pytest.approx(0.6)
    assert spearman(a, torch.full((4,), 3.0)) == 0.0  # constant: no ranking information


def test_penalty_calibration_sees_an_uncertainty_that_tracks_the_error(suite):
    """A fake model whose uncertainty is exactly its (observation) error: Spearman 1, reward
    bias its known offset in reward stds; the real TGW model gives finite numbers per env."""
    from genworld.eval.wm_metrics import penalty_calibration
    from genworld.world_models.base import WMStep

    norm = Normalizer.fit(suite)

    class Oracle:
        def encode(self, data, env_idx, index):
            nxt = torch.zeros(len(env_idx), data.obs_max)
            rew = torch.zeros(len(env_idx))
            for k, d in enumerate(data.envs):
                sel = env_idx == k
                nxt[sel, : d.spec.obs_dim] = d.next_observations[index[sel]]
                rew[sel] = d.rewards[index[sel]]
            return nxt, rew, env_idx

        def next(self, state, obs, actions, env_idx, deterministic=False):
            nxt, rew, env = state
            noise = torch.linspace(0.0, 2.0, len(env))[:, None] * norm.obs_std[env]
            pred = (nxt + noise) * suite.obs_masks()[env]
            shifted = rew + 0.5 * norm.reward_std[env]
            return WMStep(pred, shifted, torch.linspace(0.0, 2.0, len(env)), None, None)

    result = penalty_calibration(Oracle(), suite, norm, per_env=64)
    for env in ("hopper", "halfcheetah"):
        assert result[env]["spearman"] == pytest.approx(1.0)
        assert result[env]["reward_bias"] == pytest.approx(0.5, abs=1e-4)
    real = penalty_calibration(_model(suite), suite, norm, per_env=16)
    assert all(np.isfinite(v) for row in real.values() for v in row.values())


def test_termination_head_runs_only_when_learned(suite):
    """Registry terminations skip the learned head (its FLOPs); a learned model uses it in step."""
    batch = suite.sample_windows(6, 4, torch.Generator().manual_seed(0))
    args = (batch.observations, batch.actions, batch.rewards, batch.env_idx, batch.step_mask)
    registry = _model(suite)
    assert "term_logit" not in registry.forward_sequence(*args)
    learned = _model(suite, TGWConfig(**{**TINY.__dict__, "termination": "learned"}))
    assert learned.forward_sequence(*args)["term_logit"].shape == (3, 6, 4)
    env_idx, index = torch.tensor([0, 1]), torch.tensor([5, 7])
    with torch.no_grad():  # a head that says "done" everywhere ends every rollout
        for p in learned.term_net.parameters():
            p.zero_()
        list(learned.term_net.parameters())[-1].fill_(50.0)  # the output layer's bias
    memory = learned.encode(suite, env_idx, index)
    step = learned.next(memory, None, torch.zeros(2, memory.actions.shape[-1]), deterministic=True)
    assert step.terminations.all()
    step = registry.next(
        registry.encode(suite, env_idx, index), None, torch.zeros(2, 6), deterministic=True
    )
    assert step.terminations.shape == (2,)


@pytest.mark.parametrize("termination", ["registry", "learned"])
def test_rollout_chunks_change_no_number(suite, monkeypatch, termination):
    """Rollout steps run in row chunks with the randomness drawn up front: any chunk size gives
    the same numbers as one chunk."""
    import genworld.world_models.tgw as tgw

    model = _model(suite, TGWConfig(**{**TINY.__dict__, "termination": termination}))
    env_idx, index = torch.tensor([0, 1, 1, 0, 1, 0, 0]), torch.tensor([3, 5, 9, 2, 30, 7, 11])
    actions = torch.rand(7, 6, generator=torch.Generator().manual_seed(1)) * 2 - 1

    def rollout(chunk):
        monkeypatch.setattr(tgw, "ROLLOUT_CHUNK", chunk)
        g = torch.Generator().manual_seed(0)
        state, outs = model.encode(suite, env_idx, index), []
        for det in (False, False, True):
            step = model.next(state, None, actions, generator=g, deterministic=det)
            state = step.state
            outs += [step.next_observations, step.extrinsic, step.uncertainty, step.terminations]
        return outs + [state.observations, state.prev_rewards]

    whole, chunked = rollout(10_000), rollout(3)
    for a, b in zip(whole, chunked, strict=True):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=1e-6)
    assert not torch.equal(whole[0], whole[4])  # the steps moved


def test_kl_balancing_trains_the_prior_and_posterior_by_their_own_weights():
    """DreamerV3's balancing: KL(sg(q) || p) reaches only the prior, KL(q || sg(p)) only the
    posterior, each clipped below at the free nats."""
    from genworld.world_models.terms import balanced_kl, gaussian_kl

    torch.manual_seed(0)
    mq, sq, mp, sp = (torch.randn(3, 4, requires_grad=True) for _ in range(4))
    kl = gaussian_kl(mq, sq, mp, sp)
    var_q, var_p = (2 * sq).exp(), (2 * sp).exp()
    by_hand = (torch.log(var_p / var_q) / 2 + (var_q + (mq - mp) ** 2) / (2 * var_p) - 0.5).sum(-1)
    torch.testing.assert_close(kl, by_hand)
    loss, raw = balanced_kl((mq, sq), (mp, sp), dyn_scale=0.5, rep_scale=0.0, free_nats=0.0)
    loss.sum().backward()
    assert mq.grad is None or float(mq.grad.abs().sum()) == 0  # the prior's term only
    assert float(mp.grad.abs().sum()) > 0
    clipped, _ = balanced_kl((mp, sp), (mp, sp), dyn_scale=0.5, rep_scale=0.1, free_nats=1.0)
    torch.testing.assert_close(clipped, torch.full((3,), 0.6))  # KL 0, clipped to 1 nat each
    torch.testing.assert_close(raw, kl.detach())


def test_without_rssm_there_is_no_posterior_and_no_kl(suite):
    model = _model(suite, TGWConfig(**{**TINY.__dict__, "use_stochastic": False}))
    batch = suite.sample_windows(4, 4, torch.Generator().manual_seed(1))
    _, metrics = model.loss(batch, torch.Generator().manual_seed(0))
    assert "wm/kl" not in metrics
    with_rssm = _model(suite, TINY)
    _, metrics = with_rssm.loss(batch, torch.Generator().manual_seed(0))
    assert float(metrics["wm/kl"]) >= 0


def test_observation_noise_and_the_stochastic_state_are_separate_switches(suite):
    """`use_stochastic` draws u in imagination, `sample_obs_noise` the observation head's
    noise: each switch turns off its own draws only."""
    g = torch.Generator().manual_seed(0)
    for stochastic, noise in ((True, True), (True, False), (False, True), (False, False)):
        cfg = TGWConfig(
            **{**TINY.__dict__, "use_stochastic": stochastic, "sample_obs_noise": noise}
        )
        draws = _model(suite, cfg)._draws(3, g, False, torch.device("cpu"))
        assert ("stoch" in draws, "obs" in draws) == (stochastic, noise and cfg.loss == "nll")
        assert "member" in draws


def test_rows_from_takes_the_given_rows_of_a_rollout_state():
    """MBPO re-encodes only the clipped rows of an imagined state; the others keep theirs."""
    from genworld.world_models.base import rows_from
    from genworld.world_models.rssm import RSSMState

    old = RSSMState(torch.zeros(3, 2), torch.zeros(3, 4), torch.tensor([0, 1, 0]))
    new = RSSMState(torch.ones(3, 2), torch.ones(3, 4), torch.tensor([0, 1, 0]))
    mixed = rows_from(torch.tensor([True, False, True]), new, old)
    assert mixed.deter[:, 0].tolist() == [1.0, 0.0, 1.0] and mixed.stoch[1].sum() == 0
    assert rows_from(torch.tensor([True]), None, None) is None  # a stateless model
