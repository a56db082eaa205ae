"""Decision Transformer and Prompt-DT: returns-to-go, causality, padding, prompts, acting, learning.

The shared contract (update/act/checkpoint/resume) is covered by tests/test_algos.py.
"""

import numpy as np
import pytest
import torch

from genworld.algos import dt, prompt_dt
from genworld.algos.registry import AlgoContext, build_agent
from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.trajectory_windows import Windows, gather_windows, returns_to_go, sample_windows
from genworld.envs import get_env_spec
from genworld.errors import GenworldError
from genworld.train.checkpoint import load_checkpoint, save_checkpoint

ENVS = ("hopper", "halfcheetah")  # obs 11/17, actions 3/6


def episode(obs, actions, rewards, terminal=True) -> Episode:
    steps = len(actions)
    ends = np.zeros(steps, bool)
    ends[-1] = True
    return Episode.from_arrays(obs, actions, rewards, ends & terminal, ends & (not terminal))


def linear_expert_dataset(episodes=8, steps=20, seed=0) -> MultiEnvDataset:
    """Per env: random observations, actions ``tanh(obs @ W_env)``, rewards = -|action|."""
    rng = np.random.default_rng(seed)
    data = []
    for env in ENVS:
        spec = get_env_spec(env)
        weight = rng.normal(size=(spec.obs_dim, spec.act_dim)) / np.sqrt(spec.obs_dim)
        eps = []
        for i in range(episodes):
            obs = rng.normal(size=(steps + 1, spec.obs_dim))
            act = np.tanh(obs[:-1] @ weight * 2.0)
            eps.append(episode(obs, act, -np.abs(act).sum(1), terminal=i % 2 == 0))
        data.append((spec, eps))
    return MultiEnvDataset(data)


def make_agent(name, dataset, seed=0, **overrides):
    torch.manual_seed(seed)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        seed=seed,
        overrides=overrides,
    )
    return build_agent(name, ctx)


# ---------------------------------------------------------------- returns-to-go


def test_returns_to_go_equal_hand_computation_within_episodes():
    spec = get_env_spec("hopper")
    rewards = ([1.0, 2.0, 3.0], [10.0, 20.0], [7.0])
    eps = [
        episode(np.zeros((len(r) + 1, 11)), np.zeros((len(r), 3)), r, terminal=i != 1)
        for i, r in enumerate(rewards)
    ]
    env = MultiEnvDataset([(spec, eps)]).envs[0]
    rtg = returns_to_go(env)
    torch.testing.assert_close(rtg, torch.tensor([6.0, 5.0, 3.0, 30.0, 20.0, 7.0]))
    # a window from the last step of episode 0 stops there: no rewards of episode 1 leak in
    w = gather_windows(env, rtg, torch.tensor([2, 3]), 3, 0, 11, 3)
    torch.testing.assert_close(w.returns_to_go, torch.tensor([[3.0, 0.0, 0.0], [30.0, 20.0, 0.0]]))
    assert w.step_mask.tolist() == [[True, False, False], [True, True, False]]
    assert w.timesteps.tolist() == [[2, 0, 0], [0, 1, 0]]


def test_sampled_windows_carry_matching_returns_to_go():
    dataset = linear_expert_dataset()
    rtgs = [returns_to_go(env) for env in dataset.envs]
    w = sample_windows(dataset, rtgs, 16, 5, torch.Generator().manual_seed(0))
    for b in range(16):
        k = int(w.env_idx[b])
        env = dataset.envs[k]
        for j in range(5):
            if not w.step_mask[b, j]:
                continue
            # find the transition by its observation and check its RTG by a direct sum
            n = int((env.observations == w.observations[b, j, : env.spec.obs_dim]).all(1).nonzero())
            expected = env.rewards[n : n + int(env.steps_left[n])].double().sum()
            assert w.returns_to_go[b, j].item() == pytest.approx(expected.item(), rel=1e-5)
            assert w.timesteps[b, j] == env.timesteps[n]


# ---------------------------------------------------------------- network properties


def random_inputs(dataset, batch=2, length=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    env_idx = torch.tensor([0, 1])[:batch]
    obs = (
        torch.randn(batch, length, dataset.obs_max, generator=g)
        * dataset.obs_masks()[env_idx][:, None]
    )
    act = torch.rand(batch, length, dataset.act_max, generator=g) * 2 - 1
    act = act * dataset.act_masks()[env_idx][:, None]
    rtg = torch.rand(batch, length, generator=g)
    timesteps = torch.arange(length).repeat(batch, 1)
    return [obs, act, rtg, timesteps, torch.ones(batch, length, dtype=torch.bool)], env_idx


@pytest.mark.parametrize("with_prompt", [False, True])
def test_changing_a_token_changes_only_later_predictions(with_prompt):
    dataset = linear_expert_dataset()
    torch.manual_seed(0)
    net = dt.DecisionTransformerNet(dataset, dt.DTConfig(embed_dim=16, layers=2), with_prompt)
    net.eval()
    inputs, env_idx = random_inputs(dataset)
    prompt = random_inputs(dataset, length=2, seed=1)[0] if with_prompt else None
    base = net(tuple(inputs), env_idx, prompt)  # (2, 5, act_max)
    j = 2
    # token order per step is (R_t, s_t, a_t): the prediction a_t sees R_t and s_t, not a_t
    obs, act, rtg = 0, 1, 2  # positions in ``inputs``
    for which, first_changed in ((rtg, j), (obs, j), (act, j + 1)):
        changed = [x.clone() for x in inputs]
        changed[which][:, j] += 1.0
        out = net(tuple(changed), env_idx, prompt)
        torch.testing.assert_close(out[:, :first_changed], base[:, :first_changed])
        assert (out[:, first_changed] - base[:, first_changed]).abs().max() > 1e-6


@pytest.mark.parametrize("name", ["dt", "prompt-dt"])
def test_padded_observation_dims_do_not_change_actions(name):
    dataset = linear_expert_dataset()
    agent = make_agent(name, dataset)
    obs = torch.zeros(3, dataset.obs_max)
    obs[:, :11] = torch.randn(3, 11)
    env_idx = torch.zeros(3, dtype=torch.int64)  # hopper: dims 11..16 are padding
    garbage = obs.clone()
    garbage[:, 11:] = 1e3 * torch.randn(3, 6)
    base = agent.act(obs, env_idx)
    torch.testing.assert_close(agent.act(garbage, env_idx), base, rtol=0, atol=0)
    assert torch.all(base[:, 3:] == 0)  # hopper's 3 padded action dims
    real = obs.clone()
    real[:, 0] += 1.0
    assert (agent.act(real, env_idx) - base).abs().max() > 1e-6  # a real dim does matter
    a, b = agent.episode_policy(0, 3), agent.episode_policy(0, 3)
    torch.testing.assert_close(a.act(obs, torch.arange(3)), b.act(garbage, torch.arange(3)))


# ---------------------------------------------------------------- prompts


def coded_dataset(episodes=10, steps=12) -> MultiEnvDataset:
    """Observations = 100 * env + episode; rewards = episode (so returns rank the episodes)."""
    data = []
    for k, env in enumerate(ENVS):
        spec = get_env_spec(env)
        eps = [
            episode(
                np.full((steps + 1, spec.obs_dim), 100.0 * k + i),
                np.zeros((steps, spec.act_dim)),
                np.full(steps, float(i)),
                terminal=False,
            )
            for i in range(episodes)
        ]
        data.append((spec, eps))
    return MultiEnvDataset(data)


def test_prompts_come_from_the_same_env_top_episodes_tail():
    dataset = coded_dataset()
    rtgs = [returns_to_go(env) for env in dataset.envs]
    bank = prompt_dt.PromptBank(dataset, rtgs, length=2, top_fraction=0.3, seed=0)
    env_idx = torch.tensor([0, 1, 1, 0] * 16)
    p = bank.sample(env_idx, torch.Generator().manual_seed(0))
    assert p.env_idx.tolist() == env_idx.tolist()
    seen = set()
    for b, k in enumerate(env_idx.tolist()):
        d = dataset.specs[k].obs_dim
        code = p.observations[b, :, :d]
        episode_id = int(code[0, 0]) - 100 * k
        assert torch.all(code == 100 * k + episode_id)  # the row's own env, one episode
        assert episode_id in (7, 8, 9)  # the top 30% of 10 episodes by return
        assert torch.all(p.observations[b, :, d:] == 0)
        # reference tail rule: start = T - length - 1 = 9 → timesteps 9, 10
        assert p.timesteps[b].tolist() == [9, 10]
        torch.testing.assert_close(p.returns_to_go[b], torch.tensor([3.0, 2.0]) * episode_id)
        seen.add((k, episode_id))
    assert len(seen) == 6  # random draws cover every candidate of both envs
    fixed = bank.fixed(env_idx)
    assert fixed.env_idx.tolist() == env_idx.tolist()
    for k in (0, 1):
        rows = fixed.observations[env_idx == k]
        assert torch.all(rows == rows[0])  # one evaluation prompt per env
        assert int(rows[0, 0, 0]) - 100 * k in (7, 8, 9)


def test_evaluation_prompt_survives_a_checkpoint_round_trip():
    dataset = coded_dataset()
    rtgs = [returns_to_go(env) for env in dataset.envs]
    choices = {
        seed: prompt_dt.PromptBank(dataset, rtgs, 2, 1.0, seed).eval_choice.tolist()
        for seed in range(6)
    }
    assert len({tuple(c) for c in choices.values()}) > 1  # the seed matters
    a = prompt_dt.PromptBank(dataset, rtgs, 2, 1.0, seed=0)
    b = prompt_dt.PromptBank(dataset, rtgs, 2, 1.0, seed=next(s for s in choices if s != 0))
    b.load_state_dict(a.state_dict())
    env_idx = torch.tensor([0, 1])
    torch.testing.assert_close(b.fixed(env_idx).observations, a.fixed(env_idx).observations)


# ---------------------------------------------------------------- acting


@pytest.mark.parametrize("name", ["dt", "prompt-dt"])
def test_episode_policy_decrements_rtg_and_batches_exactly(name):
    dataset = linear_expert_dataset()
    agent = make_agent(name, dataset)
    k, episodes, context = 1, 3, agent.cfg.context_len  # halfcheetah, K = 4 (tiny)
    target = dt.REFERENCE_TARGET_RETURNS["halfcheetah"]
    batched, single = agent.episode_policy(k, episodes), agent.episode_policy(k, episodes)
    torch.testing.assert_close(batched.returns_to_go, torch.full((episodes,), target))
    g = torch.Generator().manual_seed(0)
    records = {i: {"obs": [], "act": [], "rtg": []} for i in range(episodes)}
    rtg = {i: target for i in range(episodes)}
    # episode 1 skips step 1, so the episodes' histories have different lengths
    schedule = [[0, 1, 2], [0, 2], *[[0, 1, 2]] * (context + 2)]
    for idx in schedule:
        obs = torch.zeros(len(idx), dataset.obs_max)
        obs[:, :17] = torch.randn(len(idx), 17, generator=g)
        together = batched.act(obs, torch.tensor(idx))
        one_by_one = torch.cat(
            [single.act(obs[j : j + 1], torch.tensor([i])) for j, i in enumerate(idx)]
        )
        torch.testing.assert_close(together, one_by_one)
        rewards = torch.rand(len(idx), generator=g).numpy() * 10
        for j, i in enumerate(idx):
            records[i]["obs"].append(obs[j])
            records[i]["act"].append(together[j])
            records[i]["rtg"].append(rtg[i])
            rtg[i] -= float(rewards[j])
        batched.observe(np.array(idx), rewards)
        single.observe(np.array(idx), rewards)
        expected = torch.tensor([rtg[i] for i in range(episodes)])
        torch.testing.assert_close(batched.returns_to_go, expected)
    # the last action of episode 0 equals a direct forward pass over its last K steps
    r = records[0]
    t = len(r["obs"]) - 1
    window = Windows(
        observations=torch.stack(r["obs"][-context:])[None],
        actions=torch.cat([torch.stack(r["act"][-context:-1]), torch.zeros(1, 6)])[None],
        returns_to_go=torch.tensor(r["rtg"][-context:])[None],
        timesteps=torch.arange(t - context + 1, t + 1)[None],
        step_mask=torch.ones(1, context, dtype=torch.bool),
        env_idx=torch.tensor([k]),
    )
    direct = agent.predict(window, agent.fixed_prompt(torch.tensor([k])))[0, -1]
    torch.testing.assert_close(r["act"][-1], direct)


@pytest.mark.parametrize("name", ["dt", "prompt-dt"])
def test_checkpoint_restores_episode_actions_and_training_state(name, tmp_path):
    dataset = linear_expert_dataset()
    # Prompt-DT: every episode is a prompt candidate, so the two seeds draw different prompts
    over = {"prompt_top_fraction": 1.0} if name == "prompt-dt" else {}
    a = make_agent(name, dataset, seed=0, **over)
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        a.update(generator)
    save_checkpoint(tmp_path, 3, {"agent": a.state_dict()})
    _, state = load_checkpoint(tmp_path / "step_000000003")
    b = make_agent(name, dataset, seed=1, **over)  # other weights and prompt seed
    if name == "prompt-dt":
        assert a.prompts.eval_choice.tolist() != b.prompts.eval_choice.tolist()
    obs = torch.zeros(2, dataset.obs_max)
    obs[:, :17] = torch.randn(2, 17)
    assert (a.act(obs, torch.tensor([1, 1])) - b.act(obs, torch.tensor([1, 1]))).abs().max() > 0
    b.load_state_dict(state["agent"])
    pa, pb = a.episode_policy(1, 2), b.episode_policy(1, 2)
    for _ in range(3):
        torch.testing.assert_close(pa.act(obs, torch.arange(2)), pb.act(obs, torch.arange(2)))
        pa.observe(np.arange(2), np.ones(2))
        pb.observe(np.arange(2), np.ones(2))
    # optimiser, LR schedule and update counter continue where they were
    metrics = []
    for agent in (a, b):
        torch.manual_seed(7)  # dropout
        metrics.append(agent.update(torch.Generator().manual_seed(5)))
    assert b.updates == a.updates == 4
    for key in metrics[0]:
        torch.testing.assert_close(metrics[0][key], metrics[1][key])
    for key, value in a.net.state_dict().items():
        torch.testing.assert_close(value, b.net.state_dict()[key], msg=key)


# ---------------------------------------------------------------- it learns


def action_error(agent, dataset, windows) -> float:
    agent.net.eval()
    with torch.no_grad():
        prompt = None if agent.prompts is None else agent.prompts.fixed(windows.env_idx)
        pred = agent.predict(windows, prompt)
    mask = windows.step_mask[..., None] * dataset.act_masks()[windows.env_idx][:, None]
    return float(((pred - windows.actions).pow(2) * mask).sum() / mask.sum())


@pytest.mark.learns
@pytest.mark.parametrize("name", ["dt", "prompt-dt"])
def test_it_learns_the_datasets_actions(name):
    dataset = linear_expert_dataset()
    agent = make_agent(name, dataset)
    rtgs = [returns_to_go(env) for env in dataset.envs]
    probe = sample_windows(dataset, rtgs, 64, 4, torch.Generator().manual_seed(123))
    before = action_error(agent, dataset, probe)
    generator = torch.Generator().manual_seed(0)
    for _ in range(300):
        agent.update(generator)
    after = action_error(agent, dataset, probe)
    assert before > 0.1  # the actions are far from the untrained model's near-zero outputs
    assert after < 0.25 * before, (before, after)


def test_shared_params_know_tasks_only_by_their_prompt_and_apply_to_new_tasks():
    spec = get_env_spec("hopper")
    rng = np.random.default_rng(0)

    def task_data(scale):  # same robot, tasks differ in their actions
        eps = []
        for _ in range(3):
            obs = rng.normal(size=(11, spec.obs_dim))
            eps.append(episode(obs, np.full((10, spec.act_dim), scale), np.ones(10)))
        return eps

    three = MultiEnvDataset([(spec, task_data(s)) for s in (-0.5, 0.0, 0.5)])
    one = MultiEnvDataset([(spec, task_data(0.9))])
    agents = [
        make_agent("prompt-dt", data, **{"dt": {"shared_params": True}}) for data in (three, one)
    ]
    # the parameters do not depend on how many tasks there are: load the 3-task net as is
    shapes = [{k: v.shape for k, v in a.net.state_dict().items()} for a in agents]
    assert shapes[0] == shapes[1]
    agents[1].net.load_state_dict(agents[0].net.state_dict())
    assert all(p.shape[0] == 1 for p in agents[0].net.embedding.env.parameters())
    # same observations, different tasks: only the prompt can tell them apart
    a = agents[0]
    obs = torch.zeros(3, 11)
    with_prompts = a.act(obs, torch.arange(3))
    assert not torch.allclose(with_prompts[0], with_prompts[2])
    a.prompts = None
    a.net.prompt_embedding = None
    no_prompt = a.act(obs, torch.arange(3))
    torch.testing.assert_close(no_prompt[0], no_prompt[2])
    hc = get_env_spec("halfcheetah")
    hc_episode = episode(rng.normal(size=(11, hc.obs_dim)), np.zeros((10, hc.act_dim)), np.ones(10))
    mixed = MultiEnvDataset([(spec, task_data(0.1)), (hc, [hc_episode])])
    with pytest.raises(GenworldError, match="shared_params needs one robot"):
        make_agent("dt", mixed, shared_params=True)
