"""The agnostic networks (nn/agnostic.py), AgnosticIQL (algos/agnostic_iql.py) and PPO
(algos/ppo.py): padding never matters, any size in and out, the agent contract holds."""

import dataclasses

import numpy as np
import pytest
import torch

from genworld.algos.registry import AlgoContext
from genworld.data.normalization import Normalizer
from genworld.nn.agnostic import (
    MAX_ACT_DIMS,
    AgnosticActor,
    AgnosticConfig,
    AgnosticCritic,
    Rows,
    RunningObsNorm,
    StateEncoder,
    TransformerLayer,
)
from genworld.nn.dim_tokens import DimTokenizer, Layout, masked_mean, pack_tokens
from genworld.nn.s4d import (
    TOEPLITZ_MAX_LENGTH,
    S4DBlock,
    S4DKernel,
    causal_conv,
    causal_conv_segments,
)
from genworld.train.algo_check import padded_rows

from .test_algos import toy_dataset

TINY = AgnosticConfig(
    d_model=16,
    d_state=8,
    s4_layers=1,
    transformer_layers=1,
    dim_feedforward=32,
    mlp_hidden=32,
    mlp_depth=1,
    num_tasks=4,
)


def prefix_mask(dims, width):
    return torch.arange(width)[None] < torch.tensor(dims)[:, None]


def test_encoder_rows_do_not_depend_on_the_other_envs_in_the_batch():
    torch.manual_seed(0)
    encoder = StateEncoder(TINY).eval()
    alone = torch.randn(3, 11)  # hopper-sized rows, padded to their own width
    with torch.no_grad():
        _, _, h_alone = encoder(alone, prefix_mask([11] * 3, 11), torch.zeros(3, dtype=torch.long))
        # the same rows inside a batch with a 376-dim env and a 1-dim env, padded to 376
        mixed = torch.randn(5, 376)
        mixed[1:4] = 0.0
        mixed[1:4, :11] = alone
        mask = prefix_mask([376, 11, 11, 11, 1], 376)
        env = torch.tensor([2, 0, 0, 0, 3])
        _, _, h_mixed = encoder(mixed, mask, env)
    torch.testing.assert_close(h_mixed[1:4], h_alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", ["s4d", "bigru"])
def test_padding_values_never_reach_the_outputs(layer):
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, sequence_layer=layer)
    actor, q = AgnosticActor(cfg), AgnosticCritic(cfg, with_actions=True)
    obs, actions = torch.randn(4, 20), torch.randn(4, 6)
    obs_mask, act_mask = prefix_mask([3, 11, 17, 20], 20), prefix_mask([1, 3, 6, 2], 6)
    env = torch.tensor([0, 1, 2, 0])
    garbage_obs = obs.masked_fill(~obs_mask, 1e3)
    garbage_act = actions.masked_fill(~act_mask, -1e3)
    mean, log_std = actor.gaussian(obs, obs_mask, env, act_mask)
    mean2, log_std2 = actor.gaussian(garbage_obs, obs_mask, env, act_mask)
    assert torch.equal(mean, mean2) and torch.equal(log_std, log_std2)
    torch.testing.assert_close(
        q(obs, obs_mask, env, actions, act_mask),
        q(garbage_obs, obs_mask, env, garbage_act, act_mask),
    )
    # padded inputs get exactly zero gradient
    obs.requires_grad_(True)
    q(obs, obs_mask, env, actions, act_mask).sum().backward()
    assert torch.all(obs.grad[~obs_mask] == 0) and obs.grad[obs_mask].abs().sum() > 0


def test_action_decoder_emits_exactly_each_envs_action_dims():
    torch.manual_seed(0)
    actor = AgnosticActor(TINY, discrete=True)
    dims = [1, 3, 6, 17]
    obs, obs_mask = torch.randn(4, 376), prefix_mask([376, 11, 17, 1], 376)
    act_mask = prefix_mask(dims, 17)
    mean, log_std = actor.gaussian(obs, obs_mask, torch.arange(4), act_mask)
    assert mean.shape == (4, 17)
    for row, d in enumerate(dims):
        assert torch.all(mean[row, d:] == 0) and torch.all(log_std[row, d:] == 0)
        assert torch.all(mean[row, :d] != 0)
    # a wider padded width changes nothing for the true dims and stays zero beyond
    wide_mask = torch.cat([act_mask, torch.zeros(4, 10, dtype=torch.bool)], 1)
    wide, _ = actor.gaussian(obs, obs_mask, torch.arange(4), wide_mask)
    torch.testing.assert_close(wide[:, :17], mean, atol=1e-5, rtol=1e-5)
    assert torch.all(wide[:, 17:] == 0)
    # categorical head: padded choices have zero probability
    probs = actor.logits(obs, obs_mask, torch.arange(4), act_mask).softmax(-1)
    assert torch.all(probs[~act_mask] == 0)
    torch.testing.assert_close(probs.sum(-1), torch.ones(4))
    with pytest.raises(ValueError, match="exceed"):
        actor.gaussian(obs, obs_mask, torch.arange(4), prefix_mask(dims, MAX_ACT_DIMS + 1))


@pytest.mark.parametrize("obs_dim", [1, 2, 11, 17, 27, 111, 376])
def test_every_observation_size_from_1_to_376(obs_dim):
    torch.manual_seed(0)
    actor, value = AgnosticActor(TINY), AgnosticCritic(TINY)
    obs = torch.randn(2, obs_dim)
    mask = torch.ones(2, obs_dim, dtype=torch.bool)
    mean, _ = actor.gaussian(obs, mask, torch.zeros(2, dtype=torch.long), prefix_mask([1, 17], 17))
    v = value(obs, mask, torch.zeros(2, dtype=torch.long))
    assert torch.isfinite(mean).all() and torch.isfinite(v).all() and v.shape == (2,)


def test_masked_pooling_ignores_padding_values():
    tokens = torch.randn(2, 5, 3)
    mask = prefix_mask([2, 5], 5)
    garbage = tokens.clone()
    garbage[0, 2:] = 1e6
    expected = torch.stack([tokens[0, :2].mean(0), tokens[1].mean(0)])
    torch.testing.assert_close(masked_mean(tokens, mask), expected)
    torch.testing.assert_close(masked_mean(garbage, mask), expected)


def test_pack_tokens_puts_true_action_tokens_right_after_true_state_tokens():
    obs = torch.tensor([[1.0, 2.0, 0.0], [4.0, 5.0, 6.0]])[..., None]
    act = torch.tensor([[7.0, 0.0], [8.0, 9.0]])[..., None]
    packed, mask = pack_tokens(obs, prefix_mask([2, 3], 3), act, prefix_mask([1, 2], 2))
    assert packed[0, :3, 0].tolist() == [1.0, 2.0, 7.0]
    assert packed[1, :, 0].tolist() == [4.0, 5.0, 6.0, 8.0, 9.0]
    assert mask.tolist() == [[True] * 3 + [False] * 2, [True] * 5]


def test_s4d_kernel_is_the_s4d_lin_initialisation():
    torch.manual_seed(0)
    kernel = S4DKernel(4, 8)
    assert torch.allclose(kernel.log_A_real.exp(), torch.full((4, 4), 0.5))
    assert torch.allclose(kernel.A_imag[0], torch.pi * torch.arange(4).float())
    dt = kernel.log_dt.exp()
    assert bool((dt >= 1e-3).all() and (dt <= 1e-1).all())
    # K[l] = 2 Re(sum_n C_n (exp(dt A_n) - 1) / A_n * exp(dt A_n l)) (ZOH), checked by hand
    A = -0.5 + 1j * kernel.A_imag[0].double()
    C = torch.view_as_complex(kernel.C[0].double())
    dtA = A * dt[0].double()
    by_hand = [2 * (C * (dtA.exp() - 1) / A * (dtA * ell).exp()).sum().real for ell in range(5)]
    torch.testing.assert_close(kernel(5)[0].double(), torch.stack(by_hand), rtol=1e-4, atol=1e-6)


def test_running_obs_norm_matches_numpy_per_env():
    norm = RunningObsNorm(2, 3)
    rng = np.random.default_rng(0)
    a, b = rng.normal(2.0, 3.0, size=(50, 3)), rng.normal(-1.0, 0.5, size=(30, 2))
    norm.update(torch.tensor(a[:20], dtype=torch.float32), torch.zeros(20, dtype=torch.long))
    norm.update(torch.tensor(a[20:], dtype=torch.float32), torch.zeros(30, dtype=torch.long))
    norm.update(torch.tensor(b, dtype=torch.float32), torch.ones(30, dtype=torch.long))
    np.testing.assert_allclose(norm.mean[0].numpy(), a.mean(0), rtol=1e-4)
    np.testing.assert_allclose(norm.var[0].numpy(), a.var(0), rtol=1e-3)
    np.testing.assert_allclose(norm.mean[1, :2].numpy(), b.mean(0), rtol=1e-4)
    assert norm.mean[1, 2] == 0 and norm.var[1, 2] == 1  # env 1 has no third dim


def _iql(tmp_path, dataset=None, seed=0, **overrides):
    """A tiny agnostic-IQL agent (``overrides``: AgnosticIQLConfig fields) and its data."""
    from genworld.algos.agnostic_iql import build

    dataset = dataset or toy_dataset()
    torch.manual_seed(seed)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        updates=1_000,  # a short run's schedules
        out=tmp_path,
        overrides=overrides,
    )
    return build(ctx), dataset


def test_agnostic_iql_contract_update_act_and_round_trip(tmp_path):
    from genworld.train.checkpoint import load_checkpoint, save_checkpoint

    agent, dataset = _iql(tmp_path)
    before = {k: v.clone() for k, v in agent.nets.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        metrics = agent.update(generator)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    changed = [k for k, v in agent.nets.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    obs, env_idx = padded_rows(dataset)
    actions = agent.act(obs, env_idx)
    assert actions.shape == (len(obs), dataset.act_max) and actions.abs().max() <= 1
    assert torch.all(actions[env_idx == 0, 3:] == 0)  # hopper: 3 of halfcheetah's 6 dims
    # narrower padding (hopper rows alone, padded to hopper's 11 dims) gives the same actions
    hopper = env_idx == 0
    torch.testing.assert_close(agent.act(obs[hopper, :11], env_idx[hopper]), actions[hopper])
    save_checkpoint(tmp_path / "ckpt", 3, {"agent": agent.state_dict()})
    _, state = load_checkpoint(tmp_path / "ckpt" / "step_000000003")
    other, _ = _iql(tmp_path, dataset)
    other.load_state_dict(state["agent"])
    torch.testing.assert_close(other.act(obs, env_idx), actions)


def test_agnostic_iql_batches_are_balanced_and_shard_independent():
    from genworld.algos.agnostic_iql import sample_rows

    dataset = toy_dataset(envs=("hopper", "halfcheetah", "walker2d"))
    both = sample_rows(dataset.envs, [0, 1, 2], 4, seed=7, obs_max=17, act_max=6)
    assert torch.bincount(both.env_idx).tolist() == [4, 4, 4]
    only = sample_rows(dataset.envs[1:2], [1], 4, seed=7, obs_max=17, act_max=6)
    torch.testing.assert_close(only.observations, both.observations[4:8])
    assert torch.all(both.observations[:4, 11:] == 0) and torch.all(both.actions[:4, 3:] == 0)


def test_ppo_mixed_box_and_discrete_envs_run_one_iteration():
    from genworld.algos.ppo import PPO, PRESETS, PPOConfig
    from genworld.algos.registry import resolve_config

    class Ctx:
        scale = "tiny"
        overrides = {
            "envs": ("Pendulum-v1", "CartPole-v1", "hopper"),
            "num_steps": 16,
            "total_timesteps": 16 * 2 * 3,
        }

    torch.manual_seed(0)
    ppo = PPO(resolve_config(PPOConfig, PRESETS, Ctx()), torch.device("cpu"))
    before = [p.clone() for p in ppo.nets.parameters()]
    metrics = ppo.iterate()
    assert ppo.iteration == 1 and np.isfinite(metrics["losses/value_loss"])
    assert any(not torch.equal(a, b) for a, b in zip(before, ppo.nets.parameters(), strict=True))
    obs = torch.zeros(3, ppo.obs_max)
    actions = ppo.act(obs, torch.arange(3))
    assert actions[1, 0] in (0.0, 1.0) and torch.all(actions[1, 1:] == 0)  # CartPole: a choice
    assert torch.all(actions[0, 1:] == 0) and torch.all(actions[2, 3:] == 0)
    assert actions.abs().max() <= 1
    ppo.close()


@pytest.mark.slow
def test_ppo_learns_pendulum():
    """Random Pendulum-v1 returns are about -1200; PPO must clearly beat that."""
    from genworld.algos.ppo import PPO, PRESETS, PPOConfig
    from genworld.algos.registry import resolve_config

    class Ctx:
        scale = "tiny"
        overrides = PENDULUM

    torch.manual_seed(0)
    ppo = PPO(resolve_config(PPOConfig, PRESETS, Ctx()), torch.device("cpu"))
    while ppo.iteration < ppo.num_iterations:
        ppo.iterate()
    returns = ppo.evaluate(5, 1000)["Pendulum-v1"]
    ppo.close()
    assert returns.mean() > PENDULUM_THRESHOLD, returns


PENDULUM = {
    "envs": ("Pendulum-v1",),
    "num_envs": 16,
    "num_steps": 256,
    "num_minibatches": 16,
    "update_epochs": 10,
    "gamma": 0.9,  # rl-baselines3-zoo's Pendulum-v1 PPO settings (gamma 0.9, lr 1e-3)
    "learning_rate": 1e-3,
    "total_timesteps": 163_840,  # 40 iterations, about 2 minutes on one CPU core
}
PENDULUM_THRESHOLD = -700.0
"""Measured: -497 (seed 0, 5 deterministic episodes); a random policy scores about -1200."""


@pytest.mark.parametrize("length", [1, 7, TOEPLITZ_MAX_LENGTH + 9])  # Toeplitz and FFT paths
def test_causal_conv_matches_the_definition(length):
    g = torch.Generator().manual_seed(length)
    u, k = torch.randn(3, length, 4, generator=g), torch.randn(4, length, generator=g)
    expected = torch.zeros(3, length, 4)
    for t in range(length):
        for s in range(t + 1):
            expected[:, t] += k[:, t - s] * u[:, s]
    torch.testing.assert_close(causal_conv(u, k), expected, rtol=1e-4, atol=1e-4)


def test_causal_conv_segments_match_causal_conv_per_segment():
    """Sequences of several lengths back to back (the FFT path for the longest) convolve as
    each segment alone does."""
    g = torch.Generator().manual_seed(0)
    layout = Layout((3, 2, 1), (7, 4, TOEPLITZ_MAX_LENGTH + 3))
    u = torch.randn(sum(layout.sizes), 5, generator=g)  # (T, H)
    k = torch.randn(5, max(layout.lengths), generator=g)
    parts = zip(layout.split(u), layout.lengths, strict=True)
    expected = layout.join([causal_conv(part, k[:, :length]) for part, length in parts])
    torch.testing.assert_close(causal_conv_segments(u, layout, k), expected)


def test_s4d_block_and_tokenizer_are_the_plain_maths():
    """The D skip folded into the kernel's lag 0 and the tokenizer's one rank-1 pass compute
    the layer as written plainly (the reference's conv + u * D; Linear(1, H) + embeddings)."""
    torch.manual_seed(0)
    block = S4DBlock(8, 4, 0.0)
    x, mask = torch.randn(2, 6, 8), prefix_mask([6, 3], 6)
    u = block.norm(x)
    y = torch.nn.functional.gelu(causal_conv(u, block.kernel(6)) + u * block.D)
    expected = (x + torch.nn.functional.glu(block.output_linear(y), -1)) * mask[..., None]
    out = block(x.flatten(0, 1), Layout((2,), (6,)), mask.flatten()).view(2, 6, 8)
    torch.testing.assert_close(out, expected)
    tokenizer = DimTokenizer(8, 10, token_type=1)
    values = torch.randn(2, 6)
    plain = (
        tokenizer.value(values[..., None])
        + tokenizer.dim_id(torch.arange(6))
        + tokenizer.type_embedding(torch.tensor(1))
    ) * mask[..., None]
    torch.testing.assert_close(tokenizer(values, mask), plain)


def _outputs_and_grads(actor, q, rows, reference: bool):
    """Q and the actor's Gaussians over ``rows`` (as segments, or one plain call per segment
    with all-true masks where a mask is None), and the gradients of their sum."""
    actor.zero_grad()
    q.zero_grad()
    if reference:
        values = torch.cat([q(*r) for r in rows])
        gaussians = []
        for obs, obs_mask, env, actions, act_mask in rows:
            full = torch.ones_like(actions, dtype=torch.bool) if act_mask is None else act_mask
            gaussians.append(actor.gaussian(obs, obs_mask, env, full))
    else:
        values, gaussians = q.segments(rows), actor.segment_gaussians(rows)
    outputs = [values, *(t for gauss in gaussians for t in gauss)]
    sum(o.sum() for o in outputs).backward()
    grads = [p.grad.clone() for net in (actor, q) for p in net.parameters() if p.grad is not None]
    return outputs, grads


@pytest.mark.parametrize("layer", ["s4d", "bigru"])
def test_width_groups_as_segments_equal_one_call_per_group(layer):
    """Rows of several widths run as segments of one token layout (every per-token layer once)
    give what one call per group gives, values and gradients; an unpadded group's masks of
    None (the masking passes skipped) equal all-true masks; a padded group stays padded."""
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, sequence_layer=layer)
    actor, q = AgnosticActor(cfg), AgnosticCritic(cfg, with_actions=True)
    rows = [
        Rows(torch.randn(3, 11), None, torch.tensor([0, 0, 1]), torch.randn(3, 3), None),
        Rows(
            torch.randn(2, 17),
            prefix_mask([17, 5], 17),
            torch.tensor([2, 3]),
            torch.randn(2, 6) * prefix_mask([6, 2], 6),
            prefix_mask([6, 2], 6),
        ),
        Rows(
            torch.randn(2, TOEPLITZ_MAX_LENGTH + 5), None, torch.tensor([1, 2]), torch.randn(2, 1)
        ),
    ]
    got, got_grads = _outputs_and_grads(actor, q, rows, reference=False)
    expected, expected_grads = _outputs_and_grads(actor, q, rows, reference=True)
    for a, b in zip([*got, *got_grads], [*expected, *expected_grads], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_transformer_layer_is_torchs_pre_norm_gelu_layer():
    """Our batch-first layer computes what nn.TransformerEncoderLayer(norm_first, gelu) does
    with the same weights and a key padding mask."""
    torch.manual_seed(0)
    cfg = AgnosticConfig(d_model=8, n_heads=2, dim_feedforward=16)
    ours = TransformerLayer(cfg)
    ref = torch.nn.TransformerEncoderLayer(
        8, 2, 16, 0.0, activation="gelu", batch_first=True, norm_first=True
    )
    with torch.no_grad():
        ref.self_attn.in_proj_weight.copy_(
            torch.cat([ours.self_attn.q.weight, ours.self_attn.kv.weight])
        )
        ref.self_attn.in_proj_bias.copy_(torch.cat([ours.self_attn.q.bias, ours.self_attn.kv.bias]))
        ref.self_attn.out_proj.load_state_dict(ours.self_attn.out.state_dict())
        ref.linear1.load_state_dict(ours.ff[0].state_dict())
        ref.linear2.load_state_dict(ours.ff[3].state_dict())
        ref.norm1.load_state_dict(ours.norm_self.state_dict())
        ref.norm2.load_state_dict(ours.norm_ff.state_dict())
    x = torch.randn(3, 5, 8)
    mask = torch.arange(5)[None] < torch.tensor([[5], [2], [1]])  # (B, L) true tokens
    expected = ref(x, src_key_padding_mask=~mask)
    layout = Layout((3,), (5,))  # one segment: a padded batch
    y = ours(x.flatten(0, 1), layout, mask.flatten()).view(3, 5, 8)
    torch.testing.assert_close(y[mask], expected[mask], rtol=1e-5, atol=1e-5)


def test_agnostic_iql_targets_are_read_without_dropout(tmp_path):
    """The TD target (target critics, V at s') runs in eval mode: with the full preset's
    dropout a target is an estimate, not a training pass."""
    agent, _ = _iql(tmp_path)
    modes = []
    sequence_encoder = agent.nets.value.encoder.encoder  # every pass of V runs it
    hook = sequence_encoder.register_forward_hook(lambda m, i, o: modes.append(m.training))
    agent.update(torch.Generator().manual_seed(0))
    hook.remove()
    assert not agent.critic_target.training
    assert modes[0] is False and True in modes[1:]  # V(s') for the target, then V(s) trains
    assert agent.nets.value.training


def test_agnostic_iql_rows_are_cut_to_their_own_envs_widths_with_the_same_loss(tmp_path):
    """Each width group is as wide as its envs need (hopper's rows: 11 observation and 3
    action tokens, not halfcheetah's 17 and 6), and the loss equals the all-padded batch's."""
    agent, _ = _iql(tmp_path)
    batch = agent.sample(torch.Generator().manual_seed(0))
    groups = agent.width_groups(batch.env_idx)
    assert sorted((o, a) for _, o, a in groups) == [(11, 3), (17, 6)]
    cut = agent._groups([batch.rows(rows, o, a) for rows, o, a in groups])
    padded = agent._groups([batch.rows(torch.arange(len(batch.env_idx)), 17, 6)])
    total, metrics = agent.nets(cut, 1.0)
    expected, expected_metrics = agent.nets(padded, 1.0)
    torch.testing.assert_close(total, expected, rtol=1e-5, atol=1e-5)
    for name, value in expected_metrics.items():
        torch.testing.assert_close(metrics[name], value, rtol=1e-5, atol=1e-5)


def test_transfer_starts_from_every_weight_but_the_task_embedding(tmp_path):
    source, _ = _iql(tmp_path)  # two envs: a 2-row task embedding
    target, _ = _iql(tmp_path, toy_dataset(envs=("walker2d",)), seed=1)  # other initial weights
    fresh = target.start_from(source.nets.state_dict())
    assert fresh and all("task" in name for name in fresh)
    for name, value in target.nets.state_dict().items():
        if name not in fresh:
            torch.testing.assert_close(value, source.nets.state_dict()[name])
    pairs = zip(target.critic_target.parameters(), target.nets.critics.parameters(), strict=True)
    for mine, theirs in pairs:
        torch.testing.assert_close(mine, theirs)  # the targets follow


def test_env_specific_transfer_starts_the_new_envs_layers_fresh_and_the_middle_shared(tmp_path):
    """The paper's Fig. 4 baseline: a new env gets new encoder and decoder layers, the shared
    middle comes from pretraining; networks of another kind are refused."""
    from genworld.errors import GenworldError

    def agent(envs, seed, **overrides):
        return _iql(tmp_path, toy_dataset(envs=envs), seed, **overrides)[0]

    source = agent(("hopper", "halfcheetah"), 0, networks="env-specific")
    target = agent(("walker2d",), 1, networks="env-specific")
    initial = {k: v.clone() for k, v in target.nets.state_dict().items()}
    fresh = target.start_from(source.nets.state_dict())
    assert fresh and all(".middle." not in name for name in fresh)
    assert any("obs_in" in name for name in fresh) and any("decoder_out" in name for name in fresh)
    for name, value in target.nets.state_dict().items():
        expected = initial[name] if name in fresh else source.nets.state_dict()[name]
        torch.testing.assert_close(value, expected)
    with pytest.raises(GenworldError, match="other networks"):
        agent(("walker2d",), 1).start_from(source.nets.state_dict())


def test_transfer_to_an_env_of_a_pretraining_envs_sizes_is_refused(capsys):
    from genworld.cli import main

    argv = ["train", "agnostic-transfer", "--scale", "tiny", "--print-config"]
    assert main([*argv, "--target", "walker2d-random"]) == 2  # halfcheetah's sizes: 17 / 6
    assert "choose another --target" in capsys.readouterr().err
    assert main([*argv, "--pretrain_steps", "0"]) == 2
    assert main([*argv, "--networks", "gato"]) == 2
    assert "--networks 'gato'" in capsys.readouterr().err


@pytest.mark.integration  # three tiny DD-IQL runs and their report (~20 s)
def test_agnostic_transfer_tiny_writes_its_report_and_resumes(tmp_path, capsys):
    import json

    from genworld.cli import main

    out = tmp_path / "transfer"
    argv = ["train", "agnostic-transfer", "--scale", "tiny", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["curves"]) == {"finetune", "scratch"} and report["target"] == "hopper"
    assert [p["step"] for p in report["curves"]["finetune"]] == [0, 10, 20]  # 0: before training
    assert (out / "transfer.png").stat().st_size > 1000 and "fine-tuned" in capsys.readouterr().out
    assert report["config"]["seeds"] == 1 and len(report["lead_per_seed"]) == 1
    assert set(report["summary"]["finetune"]["last_k"]) == {"mean", "std"}
    first = (out / "seed0" / "finetune" / "eval.jsonl").read_text()
    made = (out / "seed0" / "finetune" / "provenance.json").read_text()
    assert main(argv) == 0  # finished: resumes without training again
    assert (out / "seed0" / "finetune" / "eval.jsonl").read_text() == first
    assert (out / "seed0" / "finetune" / "provenance.json").read_text() == made  # not restamped

    # seed 1 run in another folder; its logs alone join seed 0's report, seed 2 is missing
    other = tmp_path / "seed1"
    assert main([*argv[:-3], "--out", str(other), "--quiet", "--seed", "1"]) == 0
    for log in (other / "seed1").glob("*/*.json*"):
        if log.name in ("eval.jsonl", "config.json", "provenance.json"):
            (out / log.relative_to(other)).parent.mkdir(parents=True, exist_ok=True)
            (out / log.relative_to(other)).write_bytes(log.read_bytes())
    assert main([*argv, "--seeds", "3", "--report-only"]) == 0
    merged = json.loads((out / "report.json").read_text())
    assert merged["seeds"] == [0, 1] and merged["unfinished_seeds"] == [2]
    assert merged["report_only"] and "report_only" not in report
    assert merged["wall_seconds"] is None and report["wall_seconds"] > 0  # a render times nothing
    assert len(merged["runs_provenance"]) == 6  # two seeds' three runs
    assert merged["per_seed"]["0"] == report["per_seed"]["0"] and len(merged["lead_per_seed"]) == 2
    assert not (out / "seed2").exists()  # nothing trained
    assert "left out: 2" in (out / "report.md").read_text()
    capsys.readouterr()
    assert main([*argv[:-3], "--out", str(tmp_path / "none"), "--quiet", "--report-only"]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_transfer_seeds_average_their_curves_and_summaries():
    from genworld.train.transfer import mean_curve, mean_std, transfer_config

    assert transfer_config(scale="mini").seeds == 3 and transfer_config(scale="full").seeds == 4
    a = [{"step": 10, "score": 1.0}, {"step": 20, "score": 3.0}]
    b = [{"step": 10, "score": 3.0}]  # a seed that has not reached step 20
    assert mean_curve([a, b]) == [{"step": 10, "score": 2.0}]
    assert mean_std([1.0, 3.0]) == {"mean": 2.0, "std": 1.0}


def test_ablation_runs_match_rows_per_env_and_swap_the_encoder():
    from genworld.algos.agnostic_iql import PRESETS
    from genworld.api import agnostic_ablations_config
    from genworld.train.agnostic_ablations import SingleEnvIQLRun, stage_configs
    from genworld.train.dd_iql import IQL_BUDGETS

    cfg = agnostic_ablations_config(scale="tiny", seeds=2)  # 3 datasets, a 24-row batch
    runs = stage_configs(cfg)
    folders = [
        "agnostic",
        "bigru",
        "env-specific",
        "iql/halfcheetah",
        "iql/hopper",
        "iql/walker2d",
    ]
    assert sorted(runs) == sorted(f"{f}/seed{s}" for f in folders for s in (0, 1))
    assert all(run.seed == int(name[-1]) for name, run in runs.items())
    assert runs["bigru/seed1"].agent == {"net": {"sequence_layer": "bigru"}}
    assert runs["env-specific/seed0"].datasets == runs["agnostic/seed0"].datasets
    assert runs["env-specific/seed0"].agent == {"networks": "env-specific"}
    assert {r.steps for r in runs.values()} == {cfg.steps}
    # single-env IQL: the agnostic agent's rows per env, clip, lr schedule and evaluations
    iql = runs["iql/hopper/seed1"]
    assert isinstance(iql, SingleEnvIQLRun) and iql.dataset == "hopper-random"
    assert iql.overrides == {
        "batch_size": PRESETS["tiny"]["batch_size"] // 3,
        "max_grad_norm": 0.5,
        "actor_lr_decay_steps": cfg.steps,  # the agnostic agent's: the run's updates
    }
    agnostic = runs["agnostic/seed1"]
    assert (iql.eval_every, iql.eval_episodes) == (agnostic.eval_every, agnostic.eval_episodes)
    assert iql.dataset_steps == agnostic.dataset_steps == IQL_BUDGETS["tiny"]["dataset_steps"]
    assert (
        stage_configs(agnostic_ablations_config(scale="tiny", steps=7))["iql/hopper/seed0"].steps
        == 7
    )


def test_ablation_seeds_start_at_the_first_seed():
    from genworld.api import agnostic_ablations_config
    from genworld.errors import GenworldError
    from genworld.train.agnostic_ablations import stage_configs

    runs = stage_configs(agnostic_ablations_config(scale="tiny", seed=2, variants=("bigru",)))
    assert list(runs) == ["bigru/seed2"] and runs["bigru/seed2"].seed == 2
    with pytest.raises(GenworldError, match="--seed must be a whole number"):
        agnostic_ablations_config(scale="tiny", seed=-1)


def test_ablations_seeds_are_checked():
    from genworld.api import agnostic_ablations_config
    from genworld.errors import GenworldError

    for bad in (0, 1001):
        with pytest.raises(GenworldError, match="--seeds"):
            agnostic_ablations_config(scale="tiny", seeds=bad)


def test_score_ratio_of_identical_arms_is_one_and_one_seed_has_no_spread():
    from genworld.train.agnostic_ablations import score_ratio

    arm = {"hopper": [40.0, 50.0, 60.0], "walker2d": [10.0, 30.0, 20.0]}
    same = score_ratio(arm, arm, reps=500)
    assert same["value"] == 1.0 and same["per_env"] == {"hopper": 1.0, "walker2d": 1.0}
    assert same["ci_low"] < 1.0 < same["ci_high"] and same["reps"] == 500
    assert score_ratio(arm, arm, reps=500) == same  # seeded: the same interval every time
    half = score_ratio({e: [v / 2 for v in s] for e, s in arm.items()}, arm)
    assert half["value"] == pytest.approx(0.5) and half["ci_low"] <= 0.5 <= half["ci_high"]
    one = score_ratio(
        {"hopper": [30.0], "walker2d": [10.0]}, {"hopper": [60.0], "walker2d": [20.0]}
    )
    assert one["value"] == pytest.approx(0.5)
    assert one["ci_low"] == pytest.approx(one["value"]) == pytest.approx(one["ci_high"])
    assert one["per_env"] == {"hopper": 0.5, "walker2d": 0.5}


@pytest.mark.integration  # 2 seeds × (one agnostic + three single-env IQL) tiny runs (~20 s)
def test_agnostic_ablations_tiny_writes_its_report(tmp_path, capsys):
    import json
    import math

    from genworld.cli import main

    out = tmp_path / "ablations"
    argv = ["train", "agnostic-ablations", "--scale", "tiny", "--seeds", "2"]
    argv += ["--variants", "agnostic,iql", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    envs = {"halfcheetah", "hopper", "walker2d"}
    assert set(report["summary"]) == {"agnostic", "iql"}
    assert all(set(v) == envs for v in report["summary"].values())
    assert all(len(seeds) == 2 for v in report["per_seed"].values() for seeds in v.values())
    hopper = report["per_seed"]["iql"]["hopper"]
    assert report["summary"]["iql"]["hopper"] == pytest.approx(sum(hopper) / 2)
    assert [p["step"] for p in report["curves"]["iql"]["hopper"]] == [10, 20]
    ratio = report["ratio"]
    assert math.isfinite(ratio["value"]) and ratio["ci_low"] <= ratio["value"] <= ratio["ci_high"]
    assert set(ratio["per_env"]) == envs and ratio["reps"] == 2000
    markdown = (out / "report.md").read_text()
    assert "single-env IQL (padded MLP)" in markdown and "(2 seeds)" in markdown
    assert "96.22 / IQL 107.54 = 0.89" in markdown and "One seed" not in markdown
    assert (out / "curves.png").stat().st_size > 1000
    first = {p: p.read_text() for p in out.glob("*/**/eval.jsonl")}
    assert len(first) == 8  # agnostic/seed{0,1} and iql/<env>/seed{0,1}
    assert main(argv) == 0  # finished: resumes without training again
    assert {p: p.read_text() for p in out.glob("*/**/eval.jsonl")} == first

    # a record holds the logs only: --report-only compares them and names what is missing
    record = tmp_path / "record"
    logs = [*out.glob("*/**/eval.jsonl"), *out.glob("*.json"), *out.glob("*/**/config.json")]
    for log in logs + list(out.glob("*/**/provenance.json")):
        (record / log.relative_to(out)).parent.mkdir(parents=True, exist_ok=True)
        (record / log.relative_to(out)).write_bytes(log.read_bytes())
    argv[argv.index(str(out))] = str(record)
    argv[argv.index("agnostic,iql")] = "agnostic,iql,bigru"
    assert main([*argv, "--report-only"]) == 0
    again = json.loads((record / "report.json").read_text())
    assert again["per_seed"] == report["per_seed"] and again["ratio"] == ratio
    assert again["unfinished"] == ["bigru/seed0", "bigru/seed1"] and again["report_only"]
    assert "report_only" not in report  # the study's own command trained its runs
    assert again["wall_seconds"] is None and "Wall time" not in (record / "report.md").read_text()
    assert len(again["runs_provenance"]) == 8  # each finished run names its code
    assert not (record / "bigru").exists()  # nothing trained
    assert "left out: bigru/seed0, bigru/seed1" in (record / "report.md").read_text()
    capsys.readouterr()
    assert main([*argv[:-3], "--out", str(tmp_path / "none"), "--quiet", "--report-only"]) == 2
    assert "holds no run" in capsys.readouterr().err
    # a run copied in from a study of other settings is refused, in one line
    run_config = record / "agnostic" / "seed0" / "config.json"
    run_config.write_text(json.dumps(json.loads(run_config.read_text()) | {"steps": 99}))
    assert main([*argv, "--report-only"]) == 2
    assert "agnostic/seed0 was run with other settings (steps)" in capsys.readouterr().err
    # a study with nothing finished has no report
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "config.json").write_bytes((record / "config.json").read_bytes())
    argv[argv.index(str(record))] = str(empty)
    assert main([*argv, "--report-only"]) == 2
    assert "no run of" in capsys.readouterr().err


def test_env_specific_agent_trains_reads_only_its_own_dims_and_grows_with_the_envs(tmp_path):
    """The paper's Multi-Env Specific Agent: per-env encoders and decoders around a shared
    middle, trained by the same DD-IQL update; padding never reaches an env's outputs, and
    its weights grow with the number of envs (the agnostic agent's do not)."""
    from genworld.algos.agnostic_iql import AgnosticIQLConfig
    from genworld.errors import GenworldError
    from genworld.nn.agnostic import parameter_count

    def specific(dataset=None):
        return _iql(tmp_path, dataset, networks="env-specific")

    agent, dataset = specific()
    generator = torch.Generator().manual_seed(0)
    before = {k: v.clone() for k, v in agent.nets.named_parameters()}
    for _ in range(3):
        metrics = agent.update(generator)
    assert all(np.isfinite(float(v)) for v in metrics.values())
    assert all(not torch.equal(v, before[k]) for k, v in agent.nets.named_parameters())
    obs, env_idx = padded_rows(dataset)
    actions = agent.act(obs, env_idx)
    assert torch.all(actions[env_idx == 0, 3:] == 0)  # hopper: 3 of halfcheetah's 6 dims
    hopper = env_idx == 0
    noisy = obs.clone()
    noisy[hopper, 11:] = 123.0  # whatever sits in hopper's padded columns
    torch.testing.assert_close(agent.act(noisy, env_idx), actions)
    torch.testing.assert_close(agent.act(obs[hopper, :11], env_idx[hopper]), actions[hopper])
    one, _ = specific(toy_dataset(envs=("hopper",)))
    assert parameter_count(agent.nets) > parameter_count(one.nets)
    with pytest.raises(GenworldError, match="networks"):
        AgnosticIQLConfig(networks="gato").validate()
