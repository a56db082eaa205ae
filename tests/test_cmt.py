"""CMT (seed 001): its losses by hand, the encoder's and generator's attention, segments and
masks in padded multi-env batches, the adaptor's identity start, the planner on a toy model,
and a two-stage update / act / checkpoint round trip.

The shared contract (update/act/checkpoint/resume) is covered by tests/test_algos.py.
"""

import dataclasses
import math

import numpy as np
import pytest
import torch

from genworld.algos import cmt
from genworld.algos.cmt_model import (
    CMTNet,
    discounted_returns_after,
    discounted_returns_to_go,
    gather_contexts,
    sample_pretraining,
)
from genworld.algos.cmt_planner import beam_search
from genworld.algos.registry import AlgoContext, build_agent, resolve_variant
from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.trajectory_windows import returns_to_go
from genworld.envs import get_env_spec
from genworld.errors import GenworldError
from genworld.nn.gpt import GPT
from genworld.train.checkpoint import load_checkpoint, save_checkpoint

ENVS = ("hopper", "halfcheetah")  # obs 11/17, actions 3/6
LENGTHS = (5, 9, 13)  # steps of each env's episodes


def labelled_dataset() -> MultiEnvDataset:
    """Observation dims 0 and 1 hold (100·env + episode, step); reward = step; actions random."""
    rng = np.random.default_rng(0)
    data = []
    for k, env in enumerate(ENVS):
        spec = get_env_spec(env)
        episodes = []
        for e, steps in enumerate(LENGTHS):
            obs = rng.normal(size=(steps + 1, spec.obs_dim))
            obs[:, 0], obs[:, 1] = 100 * k + e, np.arange(steps + 1)
            ends = np.zeros(steps, bool)
            ends[-1] = True
            episodes.append(
                Episode.from_arrays(
                    obs,
                    rng.uniform(-1, 1, size=(steps, spec.act_dim)),
                    np.arange(steps, dtype=float),
                    ends & (e % 2 == 0),
                    ends & (e % 2 == 1),
                )
            )
        data.append((spec, episodes))
    return MultiEnvDataset(data)


def make_agent(dataset, name="cmt", seed=0, normalizer=None, **overrides) -> cmt.CMT:
    torch.manual_seed(seed)
    algo, variant = resolve_variant(name)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=normalizer or Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        seed=seed,
        overrides={**variant, **overrides},
    )
    return build_agent(algo, ctx)


# ---------------------------------------------------------------- losses by hand


def test_info_nce_matches_a_hand_computation():
    anchors = torch.tensor([[1.0, 0.0], [0.0, 2.0], [1.0, 1.0]])
    positives = torch.tensor([[0.5, 0.5], [0.0, 1.0], [-1.0, 2.0]])
    alpha = 0.5
    expected = 0.0
    for i in range(3):
        logits = [float(anchors[i] @ positives[j]) / alpha for j in range(3)]
        expected -= math.log(math.exp(logits[i]) / sum(math.exp(v) for v in logits))
    loss = cmt.info_nce(anchors, positives, alpha)
    assert loss.item() == pytest.approx(expected / 3, rel=1e-6)
    # rows 0 and 2 share an episode: neither is the other's negative
    expected = 0.0
    for i, negatives in ((0, [1]), (1, [0, 2]), (2, [1])):
        logits = [float(anchors[i] @ positives[j]) / alpha for j in [i, *negatives]]
        expected -= math.log(math.exp(logits[0]) / sum(math.exp(v) for v in logits))
    loss = cmt.info_nce(anchors, positives, alpha, groups=torch.tensor([7, 3, 7]))
    assert loss.item() == pytest.approx(expected / 3, rel=1e-6)


def test_prompt_tuning_loss_matches_a_hand_computation():
    actions = torch.tensor([[0.5, 0.2, 9.0], [0.0, 0.0, 0.0]])
    relabeled = torch.tensor([[0.0, 0.0, 0.0], [1.0, -1.0, 0.0]])
    act_mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 1.0, 0.0]])  # dim 2 is padding
    z, tuned = torch.tensor([[1.0, 2.0], [0.0, 0.0]]), torch.tensor([[1.0, 0.0], [3.0, 0.0]])
    losses = cmt.prompt_tuning_loss(actions, relabeled, act_mask, z, tuned, beta=0.5)
    imitation = (0.25 + 0.04 + 1.0 + 1.0) / 4
    constraint = (4.0 + 9.0) / 2
    assert losses["imitation"].item() == pytest.approx(imitation)
    assert losses["constraint"].item() == pytest.approx(constraint)
    assert losses["total"].item() == pytest.approx(imitation + 0.5 * constraint)


def test_discounted_returns_to_go_stay_inside_episodes():
    env = labelled_dataset().envs[0]  # rewards 0..4, 0..8, 0..12
    values = discounted_returns_to_go(env, 0.5)
    by_hand = [sum(0.5**j * r for j, r in enumerate(range(t, 5))) for t in range(5)]
    torch.testing.assert_close(values[:5], torch.tensor(by_hand))
    torch.testing.assert_close(discounted_returns_to_go(env, 1.0), returns_to_go(env))


def test_value_targets_are_the_return_after_each_step():
    env = labelled_dataset().envs[0]  # rewards 0..4 in the first episode (5 steps), then 0..8
    values = discounted_returns_after(env, 0.5)
    by_hand = [sum(0.5**j * r for j, r in enumerate(range(t + 1, 5))) for t in range(5)]
    torch.testing.assert_close(values[:5], torch.tensor(by_hand))
    assert values[4] == 0 and values[5] > 0  # an episode's last step, the next one's first


# ---------------------------------------------------------------- attention


def test_bidirectional_encoder_sees_later_tokens_and_gpt_does_not():
    torch.manual_seed(0)
    tokens = torch.randn(2, 6, 16)
    changed = tokens.clone()
    changed[:, -1] = torch.randn(2, 16)  # (a shift of every dim would vanish in LayerNorm)
    for causal in (True, False):
        net = GPT(16, 2, 2, causal=causal).eval()
        difference = (net(changed) - net(tokens))[:, 0].abs().max()
        assert (difference == 0) if causal else (difference > 1e-4)


def changed_step(inputs: tuple, which: int, step: int) -> tuple:
    """``inputs`` with input ``which`` (0 observations, 1 actions) changed at window step ``step``."""
    changed = [x.clone() for x in inputs]
    changed[which][:, step, 2] += 1.0
    return tuple(changed)


def test_cmt_encoder_is_bidirectional_and_generator_causal():
    dataset = labelled_dataset()
    torch.manual_seed(0)
    net = CMTNet(dataset, cmt.CMTConfig(embed_dim=16, layers=2, prompt_dim=8)).eval()
    with torch.no_grad():  # weights far from the small initialisation: effects are visible
        for weight in net.parameters():
            if weight.dim() > 1:
                weight.normal_(0.0, 0.3)
    history, window = gather_contexts(dataset, torch.tensor([0, 1]), torch.tensor([23, 12]), 4, 4)
    assert history.step_mask.all() and window.step_mask.all()
    inputs = lambda b: (b.observations, b.actions, b.rewards, b.timesteps, b.step_mask)  # noqa: E731
    h, w, env_idx = inputs(history), inputs(window), window.env_idx
    z = net.encode(h, env_idx)
    for step in (0, 3):  # the earliest and the latest history step both shape the prompt
        assert (net.encode(changed_step(h, 0, step), env_idx) - z).abs().max() > 1e-4

    base = net.generate(z, w, env_idx)
    j = 2
    # a_t is read at s_t: it sees s_t, not a_t; r_t, s_{t+1} and the value at a_t see both
    for which, action_from in ((0, j), (1, j + 1)):
        out = net.generate(z, changed_step(w, which, j), env_idx)
        for name, first_changed in (
            ("actions", action_from),
            ("rewards", j),
            ("next_observations", j),
            ("values", j),
        ):
            new, old = getattr(out, name), getattr(base, name)
            torch.testing.assert_close(
                new[:, :first_changed], old[:, :first_changed], rtol=0, atol=0
            )
            assert (new[:, first_changed] - old[:, first_changed]).abs().max() > 1e-4


# ---------------------------------------------------------------- segments and masks


def test_pretraining_segments_follow_their_episodes():
    dataset = labelled_dataset()
    values = [torch.arange(len(env), dtype=torch.float32) for env in dataset.envs]
    batch = sample_pretraining(
        dataset, values, 64, 4, 3, torch.Generator().manual_seed(0), "balanced"
    )
    assert batch.window.env_idx.tolist() == [0] * 32 + [1] * 32
    for part in (batch.history, batch.window, batch.positive):
        assert torch.equal(part.env_idx, batch.window.env_idx)
        torch.testing.assert_close(part.obs_mask, dataset.obs_masks()[part.env_idx])
        torch.testing.assert_close(part.act_mask, dataset.act_masks()[part.env_idx])
        padded = ~part.step_mask
        assert torch.all(part.observations[padded] == 0) and torch.all(part.rewards[padded] == 0)
    for b in range(64):
        k = int(batch.window.env_idx[b])
        episode, t0 = batch.window.observations[b, 0, :2].tolist()
        for part in (batch.history, batch.window, batch.positive):
            real = part.step_mask[b]
            assert torch.all(part.observations[b, real, 0] == episode)  # one episode
            steps = part.observations[b, real, 1]
            assert torch.equal(steps, part.timesteps[b, real].float())
            assert torch.all(steps[1:] - steps[:-1] == 1)  # consecutive steps
        history_steps = batch.history.observations[b, batch.history.step_mask[b], 1]
        assert len(history_steps) == min(3, int(t0))  # all of the history there is, up to 3
        if len(history_steps):
            assert history_steps[-1] == t0 - 1  # ends just before the window
        assert torch.all(batch.window.observations[b, :, 1 + dataset.specs[k].obs_dim :] == 0)
    # one id per episode, shared by rows of the same episode only
    ids = {
        (int(k), float(e)): int(i)
        for k, e, i in zip(
            batch.window.env_idx, batch.window.observations[:, 0, 0], batch.episodes, strict=True
        )
    }
    assert len(set(ids.values())) == len(ids)


def test_acting_context_is_the_window_before_and_its_history():
    dataset = labelled_dataset()
    # hopper episode 2 (13 steps) starts at flat index 14; its step 9 is flat index 23
    history, window = gather_contexts(dataset, torch.tensor([0, 0]), torch.tensor([23, 15]), 4, 3)
    assert window.observations[0, :, 1].tolist() == [6, 7, 8, 9]
    assert history.observations[0, :, 1].tolist() == [3, 4, 5]
    assert window.step_mask[1].tolist() == [False, False, True, True]  # step 1: left-padded
    assert window.observations[1, 2:, 1].tolist() == [0, 1]
    assert not history.step_mask[1].any()  # nothing before the episode's start


def test_padding_and_masked_steps_do_not_change_prompts_or_actions():
    dataset = labelled_dataset()
    agent = make_agent(dataset)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        agent.update(generator)
    agent.net.eval()
    env_idx = torch.tensor([0, 1, 0, 1])
    history, window = gather_contexts(
        dataset, env_idx.sort().values, torch.tensor([1, 20, 6, 26]), 4, 4
    )
    base = agent.policy(agent.inputs(history), agent.inputs(window), window.env_idx)
    assert torch.all(base[window.env_idx == 0][..., 3:] == 0)  # hopper's padded action dims

    def garbage(batch):
        noisy = {}
        for name in ("observations", "actions", "rewards", "next_observations"):
            value = getattr(batch, name)
            noise = 1e3 * torch.randn_like(value)
            real = batch.step_mask.clone()
            if name != "rewards":
                mask = batch.obs_mask if "observations" in name else batch.act_mask
                real = real[..., None] & mask[:, None]
            noisy[name] = torch.where(real, value, noise)
        return type(batch)(**{**vars(batch), **noisy})

    torch.manual_seed(1)
    noisy = agent.policy(
        agent.inputs(garbage(history)), agent.inputs(garbage(window)), window.env_idx
    )
    real = window.step_mask
    torch.testing.assert_close(noisy[real], base[real], rtol=0, atol=0)
    # the contract's act: padded observation dims do not matter either
    obs = torch.zeros(2, dataset.obs_max)
    obs[:, :11] = torch.randn(2, 11)
    hopper = torch.zeros(2, dtype=torch.int64)
    filled = obs.clone()
    filled[:, 11:] = 1e3
    torch.testing.assert_close(agent.act(filled, hopper), agent.act(obs, hopper), rtol=0, atol=0)


# ---------------------------------------------------------------- prompt tuning


def test_adaptor_at_initialisation_reproduces_the_pretrained_policy():
    dataset = labelled_dataset()
    agent = make_agent(dataset)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        agent.update(generator)
    agent.net.eval()
    history, window = gather_contexts(dataset, torch.tensor([0, 1]), torch.tensor([9, 26]), 4, 4)
    h, w = agent.inputs(history), agent.inputs(window)
    pretrained = agent.net.generate(agent.net.encode(h, window.env_idx), w, window.env_idx)
    torch.testing.assert_close(
        agent.policy(h, w, window.env_idx), pretrained.actions, rtol=0, atol=0
    )


def test_beam_search_picks_the_best_known_candidate():
    class Toy:
        """State: (step, first action). Known candidates -1, 0, 1. Step 0 pays the action;
        step 1 pays 5 if the first action was -1; the value after step 1 is 10·(first == 0)."""

        def take(self, rows, index):
            return rows[index]

        def propose(self, rows, expand, generator):
            return torch.tensor([-1.0, 0.0, 1.0]).repeat(len(rows), 1)[..., None]  # (M, 3, 1)

        def step(self, rows, actions):
            a = actions[:, 0]
            first_step = rows[:, 0] == 0
            reward = torch.where(first_step, a, 5.0 * (rows[:, 1] == -1))
            first = torch.where(first_step, a, rows[:, 1])
            value = torch.where(first_step, torch.zeros_like(a), 10.0 * (first == 0))
            return torch.stack([rows[:, 0] + 1, first], dim=1), reward, value

    starts, g = torch.zeros(2, 2), torch.Generator()
    plan = lambda horizon, beam, discount=1.0: beam_search(  # noqa: E731
        Toy(), starts, 2, horizon, beam, expand=3, discount=discount, generator=g
    )[:, 0].tolist()
    assert plan(horizon=1, beam=3) == [1.0, 1.0]  # the best immediate reward
    assert plan(horizon=2, beam=3) == [0.0, 0.0]  # 0 + 0 + 10 beats -1 + 5 + 0 and 1 + 0 + 0
    assert plan(horizon=2, beam=3, discount=0.3) == [1.0, 1.0]  # 1 beats 0.09·10 and -1 + 1.5
    assert plan(horizon=2, beam=1) == [1.0, 1.0]  # a beam of one is greedy


def test_noise_free_planner_relabels_with_the_policys_own_actions():
    dataset = labelled_dataset()
    agent = make_agent(dataset, planner_noise_scale=0.0, pretrain_updates=2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        agent.update(generator)
    agent.relabel(generator)
    r = agent.relabeled
    data = agent.contexts(r["env_idx"], r["current"], r["actions"])
    policy = agent.net.generate(data.prompts, data.window, data.env_idx).actions[:, -1]
    torch.testing.assert_close(r["actions"], policy, rtol=0, atol=1e-6)
    assert r["env_idx"].tolist() == [0] * 4 + [1] * 4  # balanced over envs


def test_planner_candidates_spread_as_the_generators_residuals():
    """Candidates' noise is the generator's residual action std per env and dim (zero on
    padded dims), times ``planner_noise_scale``."""
    from genworld.algos.cmt_planner import residual_std

    residuals = torch.tensor([[1.0, 2.0], [3.0, 0.0], [0.5, 9.0]])
    masks = torch.tensor([[1.0, 0.0], [1.0, 1.0], [1.0, 1.0]])
    std = residual_std(residuals, torch.tensor([0, 0, 1]), masks)
    torch.testing.assert_close(std, torch.tensor([[5.0**0.5, 0.0], [0.5, 9.0], [0.0, 0.0]]))
    dataset = labelled_dataset()
    agent = make_agent(dataset, planner_noise_scale=2.0, pretrain_updates=2)
    generator = torch.Generator().manual_seed(0)
    for _ in range(2):
        agent.update(generator)
    metrics = agent.relabel(generator)
    r = agent.relabeled
    data = agent.contexts(r["env_idx"], r["current"], r["actions"])
    policy = agent.net.generate(data.prompts, data.window, data.env_idx).actions[:, -1]
    spread = residual_std(data.window[1][:, -1] - policy, data.env_idx, agent.act_masks)
    dims = agent.act_masks[data.env_idx].sum()
    expected = 2.0 * spread[data.env_idx].sum() / dims
    torch.testing.assert_close(metrics["relabel/noise_std"], expected)
    assert float(metrics["relabel/policy_change"]) > 0  # the planner chose other candidates
    # another row's prompt moves the policy's actions by this much; identical prompts: 0
    assert float(metrics["relabel/prompt_effect"]) > 0
    same = dataclasses.replace(data, prompts=data.prompts[:1].expand_as(data.prompts))
    assert float(agent.prompt_effect(same, policy_of(agent, same))) == 0.0
    # a zero prompt moves them too; prompts that are all one have no spread
    assert float(metrics["relabel/zero_prompt_effect"]) > 0
    assert 0 < float(metrics["relabel/prompt_spread"]) <= 1
    assert float(cmt.prompt_spread(same.prompts, same.env_idx)) == pytest.approx(0.0, abs=1e-6)
    logged = agent.update(generator)  # a tuning update reports the relabelling too
    assert all(torch.equal(logged[k], v) for k, v in metrics.items())


# ---------------------------------------------------------------- the agent


def flat(state, prefix=""):
    out = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        elif isinstance(value, torch.Tensor):
            out[f"{prefix}{key}"] = value
    return out


def test_two_stages_and_a_checkpoint_round_trip(tmp_path):
    dataset = labelled_dataset()
    agent = make_agent(dataset, pretrain_updates=2)
    generator = torch.Generator().manual_seed(0)
    pretrained = [agent.update(generator) for _ in range(2)]
    assert "losses/info_nce" in pretrained[-1]
    net_before = {k: v.clone() for k, v in agent.net.state_dict().items()}
    tuned = [agent.update(generator) for _ in range(3)]
    assert all("losses/tuning_imitation_mse" in m for m in tuned)
    assert all(
        torch.equal(m["relabel/action_change"], tuned[0]["relabel/action_change"]) for m in tuned
    )
    for k, v in agent.net.state_dict().items():  # the pretrained model is frozen
        torch.testing.assert_close(v, net_before[k], rtol=0, atol=0)
    assert agent.adaptor.out.weight.abs().sum() > 0  # the adaptor learned

    save_checkpoint(tmp_path / "ckpt", 5, {"agent": agent.state_dict()})
    _, state = load_checkpoint(tmp_path / "ckpt" / "step_000000005")
    other = make_agent(dataset, pretrain_updates=2, seed=1)
    other.load_state_dict(state["agent"])
    obs = torch.randn(4, dataset.obs_max) * dataset.obs_masks()[torch.tensor([0, 0, 1, 1])]
    env_idx = torch.tensor([0, 0, 1, 1])
    torch.testing.assert_close(other.act(obs, env_idx), agent.act(obs, env_idx))
    a, b = agent.episode_policy(1, 2), other.episode_policy(1, 2)
    for _ in range(6):  # past the window: the history segment is in use
        step = torch.randn(2, dataset.obs_max)
        torch.testing.assert_close(a.act(step, torch.arange(2)), b.act(step, torch.arange(2)))
        a.observe(torch.arange(2), torch.ones(2))
        b.observe(torch.arange(2), torch.ones(2))
    # resumed training continues exactly (the relabelled set comes back from the checkpoint)
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    agent.update(g1)
    other.update(g2)
    for key, value in flat(agent.state_dict()).items():
        torch.testing.assert_close(flat(other.state_dict())[key], value, rtol=0, atol=0)


def test_cmt_without_prompt_tuning_keeps_the_pretrained_model():
    """cmt-no-pt pretrains as CMT does, then its updates change nothing: it is scored on the
    model CMT tunes (no relabelling, no adaptor)."""
    dataset = labelled_dataset()
    agent = make_agent(dataset, name="cmt-no-pt", pretrain_updates=1)
    generator = torch.Generator().manual_seed(0)
    metrics = [agent.update(generator)]
    assert "losses/action_mse" in metrics[0]
    pretrained = {k: v.clone() for k, v in flat(agent.state_dict()).items()}
    metrics += [agent.update(generator) for _ in range(2)]
    assert metrics[1:] == [{}, {}]
    after = flat(agent.state_dict())
    for key, value in pretrained.items():  # weights and optimiser moments
        torch.testing.assert_close(after[key], value, rtol=0, atol=0)
    assert agent.relabeled is None
    assert agent.adaptor.out.weight.abs().sum() == 0


@pytest.mark.parametrize("name", ["cmt", "cmt-ae"])
def test_pretraining_encodes_the_history_or_the_window_itself(name, monkeypatch):
    """cmt: z of the steps before the window A_g reconstructs; cmt-ae (prompt_source
    trajectory): z of that very window, §4.1's auto-encoder."""
    agent = make_agent(labelled_dataset(), name=name)
    encode, generate, seen = agent.net.encode_prompts, agent.net.generate, {}

    def encoding(segment, env_idx, context=None):
        seen.setdefault("encoded", segment)  # the first call is the anchor's prompt
        return encode(segment, env_idx, context)

    def generating(prompt, window, env_idx):
        seen["window"] = window
        return generate(prompt, window, env_idx)

    monkeypatch.setattr(agent.net, "encode_prompts", encoding)
    monkeypatch.setattr(agent.net, "generate", generating)
    agent.pretrain_step(torch.Generator().manual_seed(0))
    same = [torch.equal(a, b) for a, b in zip(seen["encoded"], seen["window"], strict=True)]
    assert all(same) == (name == "cmt-ae")
    assert agent.cfg.prompt_source == ("trajectory" if name == "cmt-ae" else "history")


def test_trajectory_prompts_act_on_the_last_completed_steps():
    """prompt_source trajectory: the prompt's segment at acting time is the last H completed
    steps (inside the window), not the steps before the window; empty at an episode's start."""
    from genworld.algos.cmt_model import context_before

    current, t = torch.tensor([30, 30, 5]), torch.tensor([10, 2, 0])  # flat index, steps before
    _, _, h_index, h_valid = context_before(current, t, 4, 3, "trajectory")
    assert h_valid.sum(1).tolist() == [3, 2, 0]
    assert h_index[0].tolist() == [27, 28, 29] and h_index[1, :2].tolist() == [28, 29]
    _, _, h_index, h_valid = context_before(current, t, 4, 3)  # history: before the window
    assert h_valid.sum(1).tolist() == [3, 0, 0] and h_index[0].tolist() == [24, 25, 26]


def test_info_nce_pulls_segments_of_one_episode_together():
    """The contrastive term alone learns prompts that tell episodes apart."""
    dataset = labelled_dataset()
    agent = make_agent(
        dataset,
        contrastive_weight=1.0,
        lr=3e-3,
        warmup_steps=1,
        batch_size=32,
        pretrain_updates=100,
    )
    generator = torch.Generator().manual_seed(0)
    first = [float(agent.update(generator)["losses/info_nce"]) for _ in range(5)]
    for _ in range(60):
        last = float(agent.update(generator)["losses/info_nce"])
    assert last < np.mean(first)


# ---------------------------------------------------------------- task prompts (§4.2)

TASKS = ("cheetah-vel-0", "cheetah-vel-39")  # one robot, two goals


def task_dataset(tasks=TASKS) -> MultiEnvDataset:
    """Two tasks of one robot; observation dims 0 and 1 hold (100·task + episode, step) and the
    reward is the task's sign (a task is visible in its context's rewards)."""
    rng = np.random.default_rng(1)
    data = []
    for k, task in enumerate(tasks):
        spec = get_env_spec(task)
        episodes = []
        for e, steps in enumerate(LENGTHS):
            obs = rng.normal(size=(steps + 1, spec.obs_dim))
            obs[:, 0], obs[:, 1] = 100 * k + e, np.arange(steps + 1)
            episodes.append(
                Episode.from_arrays(
                    obs,
                    rng.uniform(-1, 1, size=(steps, spec.act_dim)),
                    np.full(steps, 1.0 if k else -1.0),
                    np.zeros(steps, bool),
                    np.arange(steps) == steps - 1,
                )
            )
        data.append((spec, episodes))
    return MultiEnvDataset(data)


META = {"shared_params": True, "task_prompt_len": 3}


def test_task_prompt_segments_come_from_the_rows_task():
    dataset = task_dataset()
    values = [torch.zeros(len(env)) for env in dataset.envs]
    generator = torch.Generator().manual_seed(0)
    batch = sample_pretraining(dataset, values, 16, 4, 3, generator, "balanced", 3)
    task = batch.window.observations[:, 0, 0] // 100  # (B,)
    for part in (batch.context, batch.positive_context, *batch.task_positive):
        assert torch.equal(part.env_idx, batch.window.env_idx)
        for b in range(16):
            real = part.step_mask[b]
            assert real[0] and torch.all(part.observations[b, real, 0] // 100 == task[b])
            steps = part.observations[b, real, 1]
            assert torch.all(steps[1:] - steps[:-1] == 1)  # one episode, consecutive steps


def test_task_prompt_contexts_are_drawn_apart_and_some_cut_short():
    dataset = task_dataset()
    values = [torch.zeros(len(env)) for env in dataset.envs]
    draw = lambda cut: sample_pretraining(  # noqa: E731
        dataset, values, 256, 4, 3, torch.Generator().manual_seed(0), "balanced", 3, cut
    )
    whole, half = draw(0.0), draw(0.5)
    # the positive's context is its own draw: it differs from the anchor's in most rows
    first = lambda part: part.observations[:, 0, :2]  # noqa: E731  (task·100 + episode, step)
    assert (first(whole.context) != first(whole.positive_context)).any(-1).float().mean() > 0.5
    full = whole.context.step_mask.sum(1)
    lengths = half.context.step_mask.sum(1)
    assert int((lengths == 0).sum()) > 0 and int((lengths < full.max()).sum()) > 20
    assert float((lengths == 3).float().mean()) > 0.4  # about half are left whole


def test_separator_joins_context_and_history_and_padding_does_not_leak():
    dataset = task_dataset()
    agent = make_agent(dataset, **META)
    agent.net.eval()
    generator = torch.Generator().manual_seed(0)
    env_idx = torch.tensor([0, 1])
    history, window = gather_contexts(dataset, env_idx, torch.tensor([4, 22]), 4, 3)
    history = agent.inputs(history)
    context = agent.offline_contexts(env_idx, generator)
    z, t = agent.net.encode_prompts(history, env_idx, context)
    assert z.shape == t.shape == (2, agent.cfg.prompt_dim)
    # a different context changes both prompts; the padded part of a context changes neither
    other = agent.offline_contexts(env_idx.flip(0), generator)
    assert not torch.allclose(agent.net.encode_prompts(history, env_idx, other)[1], t)
    obs, act, rew, timesteps, mask = context
    mask = mask.clone()
    mask[:, 1:] = False  # one real step
    junk = torch.randn_like(obs) * 1e3
    keep = mask[..., None]
    noisy = (torch.where(keep, obs, junk), torch.where(keep, act, junk[..., : act.shape[-1]]))
    a = agent.net.encode_prompts(history, env_idx, (obs, act, rew, timesteps, mask))
    b = agent.net.encode_prompts(
        history, env_idx, (*noisy, torch.where(mask, rew, 1e3), timesteps, mask)
    )
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    # shared parameters: the env index does not matter, only the prompts do
    torch.testing.assert_close(
        agent.net.encode_prompts(history, env_idx.flip(0), context), (z, t), rtol=0, atol=0
    )


def test_meta_cmt_trains_both_contrastive_terms_and_moves_to_a_new_task(tmp_path):
    dataset = task_dataset()
    normalizer = Normalizer.fit(task_dataset(TASKS[:1]))  # one statistic for the robot
    agent = make_agent(dataset, pretrain_updates=3, normalizer=normalizer, **META)
    generator = torch.Generator().manual_seed(0)
    metrics = [agent.update(generator) for _ in range(5)]
    assert float(metrics[0]["losses/task_info_nce"]) > 0
    assert "losses/tuning_imitation_mse" in metrics[-1]
    # the weights apply unchanged to one unseen task of the robot, given its own context data
    unseen = task_dataset(("cheetah-vel-20",))
    single = make_agent(unseen, pretrain_updates=3, normalizer=normalizer, **META)
    single.load_networks(agent)
    obs = torch.randn(3, dataset.obs_max)
    torch.testing.assert_close(
        single.act(obs, torch.zeros(3, dtype=torch.int64)),
        agent.act(obs, torch.zeros(3, dtype=torch.int64)),
    )


@pytest.mark.parametrize("source", ["online", "offline", "none"])
def test_episode_contexts_follow_their_source(source):
    dataset = task_dataset()
    agent = make_agent(dataset, task_context=source, **META)
    policy = agent.episode_policy(1, 3)
    first = policy.context(3)
    assert first[-1].any() == (source == "offline")  # nothing has happened yet
    for step in range(5):
        policy.act(torch.randn(3, dataset.obs_max), torch.arange(3))
        policy.observe(torch.arange(3), torch.full((3,), float(step)))
    obs, act, rew, timesteps, mask = policy.context(50)
    if source == "none":
        assert not mask.any()
        return
    assert mask[:, 0].all()
    if source == "online":  # segments of the completed steps: the rewards recorded per step
        real_t = timesteps[mask]
        assert real_t.max() <= 4
        normalised = agent.normalise(
            obs,
            act,
            torch.arange(5.0)[timesteps],
            timesteps,
            mask,
            torch.ones(50, dtype=torch.int64),
        )[2]
        torch.testing.assert_close(rew[mask], normalised[mask])


@pytest.mark.integration  # ~40 s: Fig. 5's ablations as a command
def test_ant_fwd_back_ablations_run_every_variant_on_both_tasks(tmp_path):
    import json

    from genworld.cli import main

    methods = "cmt,cmt-no-pt,cmt-gamma=1e-6,cmt-beta=0,cmt-context=none,cmt-context=expert,focal"
    out = tmp_path / "ablate"
    argv = ["unseen", "--family", "ant-fwd-back", "--methods", methods, "--seeds", "1"]
    assert main([*argv, "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "unseen.json").read_text())
    assert report["test"] == [] and len(report["train"]) == 2
    cells = {(r["method"], r["task"]) for r in report["results"]}
    assert cells == {(m, t) for m in methods.split(",") for t in report["train"]}
    models = {p.name for p in out.iterdir() if (p / "seed0" / "trained.json").exists()}
    assert models == {"cmt", "cmt-no-pt", "cmt-gamma=1e-6", "cmt-beta=0", "focal"}


@pytest.mark.integration  # ~1 min: the acceptance command
def test_unseen_study_runs_zero_shot_cmt_beside_prompt_dt(tmp_path, capsys):
    """`genworld unseen --family cheetah-vel --methods cmt,prompt-dt --seeds 1 --scale tiny`
    writes its table and plot; CMT has a cell on every seen and unseen task."""
    import json

    from genworld.cli import main

    out = tmp_path / "unseen"
    argv = ["unseen", "--family", "cheetah-vel", "--methods", "cmt,prompt-dt", "--seeds", "1"]
    assert main([*argv, "--scale", "tiny", "--out", str(out), "--quiet"]) == 0
    report = json.loads((out / "unseen.json").read_text())
    tasks = report["train"] + report["test"]
    cmt = [r for r in report["results"] if r["method"] == "cmt"]
    assert sorted(r["task"] for r in cmt) == sorted(tasks)
    assert (out / "unseen_tasks.png").stat().st_size > 0 and (out / "cmt" / "seed0").is_dir()
    [tuning] = report["prompt_tuning"]  # the tuned model's relabelling reached the report
    assert tuning["model"] == "cmt" and tuning["prompt_effect"] >= 0.0


@pytest.mark.parametrize("scale", ["tiny", "mini", "full"])
def test_a_tables_scored_evaluations_all_come_after_prompt_tuning_starts(scale):
    """A table scores the last k evaluations: none of them may be the untuned model CMT w/o
    PT is (else CMT's score is part CMT w/o PT's)."""
    from types import SimpleNamespace

    from genworld.algos.cmt_config import PRESETS, CMTConfig
    from genworld.algos.registry import resolve_config
    from genworld.train.table import BUDGETS

    cfg = resolve_config(CMTConfig, PRESETS, SimpleNamespace(scale=scale, overrides={}))
    budget = BUDGETS[scale]
    first_scored = budget.updates - (budget.last_k - 1) * budget.eval_every
    assert cfg.pretrain_updates < first_scored


def policy_of(agent, data):
    """The pretrained policy's actions on a tuning set's rows."""
    return agent.net.generate(data.prompts, data.window, data.env_idx).actions[:, -1]


def test_a_run_too_short_to_tune_is_refused_in_one_line():
    dataset = labelled_dataset()
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        updates=5,  # the tiny preset pretrains 5 updates
    )
    with pytest.raises(GenworldError, match="prompt tuning would never run"):
        build_agent("cmt", ctx)
    untuned = dataclasses.replace(ctx, overrides=resolve_variant("cmt-no-pt")[1])
    assert build_agent("cmt", untuned) is not None  # cmt-no-pt: nothing to tune


def test_prompt_spread_is_the_within_env_share_of_the_prompts_squared_norm():
    prompts = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 5.0]])
    # env 0: mean (2, 0), deviations 1 + 1; env 1: one row, none; total 1 + 9 + 25
    spread = cmt.prompt_spread(prompts, torch.tensor([0, 0, 1]))
    assert float(spread) == pytest.approx(2.0 / 35.0)
