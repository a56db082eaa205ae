"""WPT's fine-tuning (algos/wpt.py, train/finetune.py, ``genworld finetune``): λ-returns and the
two-hot critic by hand, the guidance schedule and window, the BC prior acting only inside its
window, rehearsal batches holding the configured share of retrieved rows, an update / act /
state round trip, and (integration) the acceptance commands end to end."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from genworld.algos.wpt import (
    Rehearsal,
    WPTAgent,
    WPTConfig,
    actor_loss,
    critic_loss,
    guidance_probability,
    guidance_window,
    lambda_returns,
    rehearsal_rows,
    symexp,
    symlog,
    two_hot,
    updates_per_episode,
)
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.retrieval import retrieved_dataset, segments
from genworld.envs import get_env_spec
from genworld.errors import GenworldError
from genworld.world_models.rssm import RSSMConfig, RSSMWorldModel

from .conftest import side_by_side
from .test_world_models import _linear_episodes

HOPPER = get_env_spec("hopper")
TARGET = dataclasses.replace(
    HOPPER, name="toy-target", obs_dim=3, act_dim=2, max_episode_steps=20, termination=None
)
OTHER = dataclasses.replace(TARGET, name="toy-other", obs_dim=4)
TINY_RSSM = RSSMConfig(deter_dim=16, stoch_dim=4, hidden=16, seq_len=6, burn_in=2)
TINY = WPTConfig(
    env_steps=40,
    warmup_steps=0,
    guidance_steps=1_000_000,
    batch_size=8,
    horizon=4,
    hidden=16,
    layers=1,
    bins=31,
    bc_steps=5,
    bc_batch_size=16,
    bc_hidden=16,
    model_lr=1e-3,
    actor_lr=1e-3,
    critic_lr=1e-3,
)


class ToyEnv:
    """A 3-dim linear env of ``TARGET``'s sizes: 20 steps, reward = −‖o‖."""

    def reset(self, seed=None):
        self.rng = np.random.default_rng(seed)
        self.obs = self.rng.normal(size=3).astype(np.float32)
        return self.obs, {}

    def step(self, action):
        self.obs = (0.9 * self.obs + 0.1 * np.r_[action, 0.0]).astype(np.float32)
        return self.obs, -float(np.abs(self.obs).sum()), False, False, {}


def _agent(variant="p+er+g", cfg=TINY, seed=0) -> WPTAgent:
    torch.manual_seed(seed)
    offline = MultiEnvDataset(
        [(TARGET, _linear_episodes(TARGET, 3, 20, 1)), (OTHER, _linear_episodes(OTHER, 3, 20, 2))]
    )
    retrieved = retrieved_dataset(offline, segments(offline))  # reward-free copies
    model = RSSMWorldModel([TARGET, OTHER], TINY_RSSM, Normalizer.fit(offline))
    agent = WPTAgent(
        model,
        cfg,
        variant,
        torch.device("cpu"),
        rehearsal=Rehearsal(retrieved, torch.tensor([0, 1])),
        seed=seed,
    )
    agent._env = ToyEnv()
    return agent


# ------------------------------------------------------------------ the losses by hand
def test_lambda_returns_match_a_hand_computation():
    """Eq. 2 with H = 2: V_1 = r_1 + γ c_1 v_2, V_0 = r_0 + γ c_0 ((1−λ) v_1 + λ V_1)."""
    gamma, lam = 0.9, 0.5
    rewards = torch.tensor([[1.0, 2.0], [3.0, 0.5]])  # (H=2, N=2)
    values = torch.tensor([[9.0, 9.0], [10.0, 4.0], [20.0, 8.0]])  # (H+1, N)
    continues = torch.tensor([[1.0, 1.0], [1.0, 0.0]])  # N=1: s_2 terminal
    v1 = [3.0 + 0.9 * 20.0, 0.5 + 0.9 * 0.0 * 8.0]
    v0 = [1.0 + 0.9 * (0.5 * 10.0 + 0.5 * v1[0]), 2.0 + 0.9 * (0.5 * 4.0 + 0.5 * v1[1])]
    got = lambda_returns(rewards, values, continues, gamma, lam)
    assert torch.allclose(got, torch.tensor([v0, v1]))
    # λ = 1: the discounted reward sum bootstrapped at H; λ = 0: one-step TD targets
    ones = torch.ones(2, 1)
    mc = lambda_returns(rewards[:, :1], values[:, :1], ones, 0.9, 1.0)[0, 0]
    assert math.isclose(float(mc), 1.0 + 0.9 * 3.0 + 0.81 * 20.0, rel_tol=1e-6)
    td = lambda_returns(rewards[:, :1], values[:, :1], ones, 0.9, 0.0)[:, 0]
    assert torch.allclose(td, torch.tensor([1.0 + 0.9 * 10.0, 3.0 + 0.9 * 20.0]))


def test_two_hot_symlog_critic_and_actor_losses_by_hand():
    bins = torch.linspace(-2.0, 2.0, 5)  # -2 -1 0 1 2
    weights = two_hot(torch.tensor([0.25, -2.0, 7.0]), bins)
    assert torch.allclose(weights[0], torch.tensor([0.0, 0.0, 0.75, 0.25, 0.0]))
    assert torch.allclose(weights[1], torch.tensor([1.0, 0.0, 0.0, 0.0, 0.0]))
    assert torch.allclose(weights[2], torch.tensor([0.0, 0.0, 0.0, 0.0, 1.0]))  # clipped
    assert torch.allclose((weights[:2] * bins).sum(-1), torch.tensor([0.25, -2.0]))
    x = torch.tensor([-30.0, -0.5, 0.0, 4.0])
    assert torch.allclose(symexp(symlog(x)), x, atol=1e-4)
    # eq. 3: the cross-entropy to two_hot(symlog(V)); logits of the target are its minimum
    returns = torch.tensor([[math.expm1(0.25)]])  # symlog = 0.25
    target = two_hot(symlog(returns), bins)
    ce = critic_loss(target.log().clamp_min(-30), returns, torch.ones(1, 1), bins)
    entropy = -(target * target.clamp_min(1e-30).log()).sum()
    assert math.isclose(float(ce), float(entropy), rel_tol=1e-4)
    assert float(critic_loss(torch.zeros(1, 1, 5), returns, torch.ones(1, 1), bins)) > float(ce)
    # eq. 4: mean of w (−V − η H)
    loss = actor_loss(torch.tensor([[2.0, 4.0]]), torch.tensor([[1.0, 3.0]]), torch.ones(1, 2), 0.5)
    assert math.isclose(float(loss), ((-2 - 0.5) + (-4 - 1.5)) / 2)


def test_the_guidance_schedule_matches_its_formula():
    """linear(1, 0, guidance_steps): 1 − steps / guidance_steps, 0 after; windows in tenths."""
    for steps, expected in ((0, 1.0), (12_500, 0.75), (25_000, 0.5), (50_000, 0.0), (90_000, 0.0)):
        assert guidance_probability(steps, 50_000) == pytest.approx(expected)
    assert guidance_probability(0, 0) == 0.0
    assert guidance_window(1000, 0.0, 0.0) == (0, 100)
    assert guidance_window(1000, 0.999, 0.7) == (0, 1000)  # the whole episode
    assert guidance_window(1000, 0.45, 1.0 - 1e-9) == (500, 500)  # ends at the last step
    rng = np.random.default_rng(0)
    for u in rng.uniform(size=(200, 2)):
        start, length = guidance_window(20, *u)
        assert length in range(2, 21, 2) and start >= 0 and start + length <= 20
    assert rehearsal_rows(16, 0.25) == 4 and rehearsal_rows(8, 0.25) == 2
    assert rehearsal_rows(4, 0.99) == 3  # one online row is always left
    assert updates_per_episode(1000, 256, 16, 64) == 250


# ------------------------------------------------------------------ the agent
def test_the_bc_prior_acts_only_inside_its_window():
    agent = _agent()
    agent.train_bc(torch.Generator().manual_seed(0))
    sentinel = torch.full((1, TARGET.act_dim), 0.123)
    agent.bc_action = lambda obs: sentinel  # noqa: E731 -- mark the prior's actions
    for episode in range(6):
        generator = torch.Generator().manual_seed(episode)
        draws = torch.rand(3, generator=torch.Generator().manual_seed(episode)).tolist()
        start, length = guidance_window(TARGET.max_episode_steps, draws[1], draws[2])
        used = draws[0] < guidance_probability(agent.env_steps, TINY.guidance_steps)
        info = agent.collect_episode(generator)
        actions = agent.episodes[-1].actions
        by_prior = np.all(np.isclose(actions, 0.123), axis=1)
        expected = np.zeros(TARGET.max_episode_steps, bool)
        if used:
            expected[start : start + length] = True
        assert np.array_equal(by_prior, expected), episode
        assert info["train/guided_steps"] == expected.sum()
    # guidance off (variant p+er): the prior never acts
    plain = _agent("p+er")
    plain.collect_episode(torch.Generator().manual_seed(0))
    assert plain.bc is None and not np.any(np.isclose(plain.episodes[-1].actions, 0.123))


def test_during_warm_up_the_bc_prior_acts_every_step_and_random_actions_only_without_one():
    """ncrl's finetune.py: warm-up episodes are the BC prior's where there is one."""
    warm = dataclasses.replace(TINY, warmup_steps=1_000)
    agent = _agent(cfg=warm)
    agent.train_bc(torch.Generator().manual_seed(0))
    agent.bc_action = lambda obs: torch.full((1, TARGET.act_dim), 0.123)  # noqa: E731
    info = agent.collect_episode(torch.Generator().manual_seed(3))
    assert np.allclose(agent.episodes[-1].actions, 0.123)
    assert info["train/guided_steps"] == TARGET.max_episode_steps
    plain = _agent("p+er", cfg=warm)
    plain.collect_episode(torch.Generator().manual_seed(3))
    actions = plain.episodes[-1].actions
    assert plain.bc is None and actions.std() > 0.3 and np.abs(actions).max() <= 1.0


def test_rehearsal_batches_hold_the_configured_share_of_retrieved_rows():
    for ratio, expected in ((0.25, 2), (0.5, 4), (0.0, 0)):
        agent = _agent(cfg=dataclasses.replace(TINY, rehearsal_ratio=ratio))
        agent.collect_episode(torch.Generator().manual_seed(0))
        for seed in range(3):
            batch, labelled = agent.world_model_batch(torch.Generator().manual_seed(seed))
            assert batch.observations.shape[:2] == (8, TINY_RSSM.seq_len)
            assert int((~labelled).sum()) == expected
            retrieved = batch.rewards[~labelled]
            assert torch.all(retrieved == 0)  # reward-free rows, never read
            # online rows are env 0 and carry the real rewards (−‖o‖ < 0)
            assert torch.all(batch.env_idx[labelled] == 0)
            assert torch.all(batch.rewards[labelled][batch.step_mask[labelled]] < 0)
            # the reward term reads the online rows only
            same = torch.Generator().manual_seed  # the same posterior draws in both
            terms, _ = agent.model.loss_terms(batch, same(0), reward_rows=labelled)
            garbage = dataclasses.replace(
                batch, rewards=torch.where(labelled[:, None], batch.rewards, 1e3)
            )
            again, _ = agent.model.loss_terms(garbage, same(0), reward_rows=labelled)
            assert torch.equal(terms["reward"], again["reward"])
    plain = _agent("p")
    plain.collect_episode(torch.Generator().manual_seed(0))
    assert bool(plain.world_model_batch(torch.Generator().manual_seed(0))[1].all())


def test_an_update_act_and_state_round_trip():
    agent = _agent()
    g = torch.Generator().manual_seed(0)
    agent.train_bc(g)
    agent.collect_episode(g)
    actor_before = [p.clone() for p in agent.actor.parameters()]
    metrics = agent.update(g)
    assert all(math.isfinite(float(v)) for v in metrics.values())
    assert {"losses/actor", "losses/critic", "wm/reward", "wm/kl"} <= set(metrics)
    after = agent.actor.parameters()
    assert any(not torch.equal(a, b) for a, b in zip(actor_before, after, strict=True))
    # the actor's loss reaches the actor only: the world model and slow critic are frozen
    for module in (agent.model, agent.actor, agent.slow_critic):
        module.zero_grad(set_to_none=True)
    start = agent.model.initial_state(agent._padded(torch.randn(4, 3)), torch.zeros(4).long())
    _, rewards, values, continues, entropy = agent.imagine(start)
    returns = lambda_returns(rewards, values, continues, 0.99, 0.95)
    actor_loss(returns, entropy, torch.ones_like(returns), 1e-4).backward()
    assert all(p.grad is None for p in agent.model.parameters())
    assert all(p.grad is None for p in agent.slow_critic.parameters())
    assert all(p.grad is not None for p in agent.actor.parameters())
    assert all(p.requires_grad for p in agent.model.parameters())  # unfrozen again
    obs = torch.randn(5, 3)
    assert agent.act(obs, torch.zeros(5, dtype=torch.int64)).shape == (5, TARGET.act_dim)
    agent.collect_episode(g)
    agent.sparse_hits[-1] = 7  # as a hard task's episode would count them
    state = copy.deepcopy(agent.state_dict())  # (as a checkpoint: no tensor shared)
    other = _agent(seed=1)
    other.load_state_dict(state)
    assert other.env_steps == agent.env_steps == 40 and other.updates == 1
    assert other.sparse_hits == agent.sparse_hits and agent.sparse_hits[-1] == 7
    for name, value in agent.model.state_dict().items():
        assert torch.equal(value, other.model.state_dict()[name]), name
    first = agent.episode_policy(0, 2)
    second = other.episode_policy(0, 2)
    for _ in range(3):  # the latent state is tracked step by step, the same in both
        obs = torch.randn(2, 3)
        idx = torch.arange(2)
        assert torch.equal(first.act(obs, idx), second.act(obs, idx))
    torch.manual_seed(3)
    a = agent.update(torch.Generator().manual_seed(7))
    torch.manual_seed(3)
    b = other.update(torch.Generator().manual_seed(7))
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_the_actor_critic_imagines_from_every_start_or_the_configured_few(monkeypatch):
    sizes = []
    for starts in (0, 5):
        agent = _agent(cfg=dataclasses.replace(TINY, imagination_starts=starts))
        g = torch.Generator().manual_seed(0)
        agent.collect_episode(g)
        monkeypatch.setattr(
            agent, "actor_critic", lambda start: sizes.append(len(start.env_idx)) or {}
        )
        agent.update(g)
    assert sizes[0] > 5 and sizes[1] == 5  # every posterior state of the batch, then 5
    with pytest.raises(GenworldError, match="imagination_starts"):
        dataclasses.replace(TINY, imagination_starts=-1).validate()


def test_the_actors_std_stays_between_dreamerv3s_bounds():
    """std = 0.9·sigmoid(x + 2) + 0.1: never below 0.1 (the policy keeps exploring) nor above 1;
    the mode is tanh of the mean."""
    from genworld.algos.wpt import LatentActor

    actor = LatentActor(4, 2, hidden=8, layers=1)
    with torch.no_grad():
        actor.net[-1].weight.zero_()
        actor.net[-1].bias.copy_(torch.tensor([0.3, -0.2, 1e4, -1e4]))  # means, raw stds
        mean, log_std = actor.mean_and_log_std(torch.zeros(3, 4))
    assert torch.allclose(log_std.exp(), torch.tensor([1.0, 0.1]).expand(3, 2))
    assert torch.allclose(actor.mode(torch.zeros(3, 4)), torch.tanh(torch.tensor([0.3, -0.2])))
    with torch.no_grad():
        actor.net[-1].bias.zero_()
    std = actor.mean_and_log_std(torch.zeros(1, 4))[1].exp()
    assert torch.allclose(std, torch.full((1, 2), 0.9 * torch.sigmoid(torch.tensor(2.0)) + 0.1))


def test_variants_and_missing_pieces_are_one_line_errors():
    from genworld.train.finetune import config_for_scale

    with pytest.raises(GenworldError, match="unknown"):
        config_for_scale("tiny", variant="p+g")
    with pytest.raises(GenworldError, match="needs the retrieved"):
        model = RSSMWorldModel([TARGET], TINY_RSSM, Normalizer(1, 3))
        WPTAgent(model, TINY, "p+er", torch.device("cpu"))
    cfg = config_for_scale("tiny", variant="scratch", wpt={"batch_size": 4})
    assert cfg.wpt.batch_size == 4 and cfg.wpt.env_steps == 3_000 and cfg.scale == "tiny"


def test_finetune_command_prints_its_config_and_needs_a_world_model(capsys, tmp_path):
    from genworld.cli import main

    assert main(["finetune", "--scale", "tiny", "--variant", "p", "--print-config"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["variant"] == "p" and printed["wpt"]["env_steps"] == 3_000
    assert main(["finetune", "--scale", "tiny", "--out", str(tmp_path / "ft")]) == 2
    assert "--world-model is required" in capsys.readouterr().err
    argv = ["finetune", "--world-model", str(tmp_path), "--scale", "tiny"]
    assert main([*argv, "--out", str(tmp_path / "ft")]) == 2  # not a pre-training folder
    assert "genworld train world-model" in capsys.readouterr().err
    assert not (tmp_path / "ft").exists()  # refused before anything was written


@pytest.mark.integration
def test_cli_pretrains_then_finetunes_and_writes_a_curve_and_a_report(tmp_path):
    """The acceptance commands: `genworld pretrain world-model --scale tiny`, then `genworld
    finetune --variant p+er+g --scale tiny` (retrieval, BC prior, rehearsal, guidance); a rerun
    resumes the finished run."""
    from genworld.cli import main

    pre, out = tmp_path / "pre", tmp_path / "ft"
    assert main(["pretrain", "world-model", "--scale", "tiny", "--quiet", "--out", str(pre)]) == 0
    argv = ["finetune", "--world-model", str(pre), "--task", "dmc-cheetah-run"]
    argv += ["--variant", "p+er+g", "--scale", "tiny", "--quiet", "--out", str(out)]
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    assert [r["env_steps"] for r in report["curve"]] == [1_000, 2_000, 3_000]
    assert report["retrieval"]["same_embodiment_share"] == 1.0
    assert report["curve"][0]["train/guidance_probability"] == 1.0
    assert (out / "curve.png").stat().st_size > 0 and (out / "report.md").exists()
    assert main(argv) == 0  # rerun: resumes a finished run
    assert len((out / "eval.jsonl").read_text().splitlines()) == 3
    # its time counts the process that trained it, not only the rerun's
    again = json.loads((out / "report.json").read_text())
    assert again["wall_seconds"] >= again["curve"][-1]["wall_s"] > 0
    # the study command on the same pre-trained model: one run per (variant, seed), a report
    study = tmp_path / "study"
    argv = ["wpt-study", "--scale", "tiny", "--world_model", str(pre), "--variants", "scratch,p"]
    assert main([*argv, "--seeds", "1", "--quiet", "--out", str(study)]) == 0
    summary = json.loads((study / "wpt_study.json").read_text())
    assert summary["finished_runs"] == summary["planned_runs"] == 2
    assert set(summary["summary"]["dmc-cheetah-run"]) == {"scratch", "p"}
    assert (study / "wpt_study.png").stat().st_size > 0
    # scratch is DreamerV3 from scratch (rewards shape its latents); a pre-trained model's
    # reward head learns on detached latents (ncrl)
    from genworld.train.finetune import build_agent, config_for_scale

    for variant, pretrained in (("scratch", False), ("p", True)):
        cfg = config_for_scale(
            "tiny", world_model=str(pre), task="dmc-cheetah-run", variant=variant
        )
        agent = build_agent(cfg, torch.device("cpu"))[0]
        assert agent.model.cfg.reward_gradient is not pretrained


def _fake_report(
    task: str, variant: str, seed: int, returns: list[float], share=None, bodies=("a", "b")
) -> dict:
    curve = [{"env_steps": 1000 * (i + 1), f"eval/{task}/return": r} for i, r in enumerate(returns)]
    retrieval = (
        None
        if share is None
        else {"same_embodiment_share": share, "candidate_embodiments": list(bodies)}
    )
    config = {"task": task, "variant": variant, "seed": seed}
    return {"config": config, "curve": curve, "retrieval": retrieval, "provenance": {}}


def test_wpt_study_report_gives_finals_with_cis_and_checks_the_claims():
    from genworld.reports.wpt_study import claims, mean_ci, summarize
    from genworld.train.wpt_study import config_for_scale

    cfg = config_for_scale(
        "tiny", tasks=("dmc-cheetah-run", "dmc-walker-walk"), variants=("scratch", "p+er+g")
    )
    reports = []
    for seed in range(3):
        for task, lift in (("dmc-cheetah-run", 400.0), ("dmc-walker-walk", 20.0)):
            reports.append(_fake_report(task, "scratch", seed, [10.0, 100.0 + seed]))
            reports.append(_fake_report(task, "p+er+g", seed, [50.0, 100.0 + lift], share=1.0))
    summary = summarize(cfg, reports, reps=200)
    row = summary["dmc-cheetah-run"]["scratch"]
    assert row["per_seed"] == [55.0, 55.5, 56.0]  # the mean of the last 3 (here both) evaluations
    low, high = row["ci"]
    assert low <= row["final_return"] == 55.5 <= high
    assert [p["env_steps"] for p in row["curve"]] == [1000, 2000] and row["curve"][1]["n"] == 3
    verdicts = claims(cfg, summary)
    gaps = verdicts["wpt_beats_scratch"]["gaps"]  # P+ER+G's final mean(50, 100 + lift) − 55.5
    assert gaps == pytest.approx({"dmc-cheetah-run": 219.5, "dmc-walker-walk": 29.5})
    assert verdicts["wpt_beats_scratch"]["holds"] is False  # only one task gains ≥ 100
    assert (
        verdicts["retrieval"]["holds"] is True
        and verdicts["guidance_order_sparse"]["holds"] is None
    )
    # the worst task decides; a task whose action size has one embodiment is not evidence
    reports += [_fake_report("dmc-walker-walk", "p+er", s, [1.0], share=0.9) for s in range(3)]
    reports += [
        _fake_report("dmc-cheetah-run", "p+er", s, [1.0], share=0.5, bodies=["a"]) for s in range(3)
    ]
    cfg = config_for_scale("tiny", tasks=cfg.tasks, variants=("p+er", "p+er+g"))
    retrieval = claims(cfg, summarize(cfg, reports, reps=50))["retrieval"]
    assert retrieval["tasks"] == {"dmc-walker-walk": 0.9} and retrieval["share"] == 0.9
    assert retrieval["not_measured"] == ["dmc-cheetah-run"] and retrieval["holds"] is False
    assert mean_ci([3.0], 100) == (3.0, 3.0, 3.0)
    assert mean_ci([1.0, 2.0, 3.0], 100) == mean_ci([1.0, 2.0, 3.0], 100)  # seeded


def test_a_wpt_study_record_renders_its_finals_claims_and_code(tmp_path):
    """An archived study (its cells' reports and wpt_study.json) is a row of the results page."""
    from genworld.reports.results import headline
    from genworld.reports.wpt_study import write_wpt_study_report
    from genworld.train.wpt_study import config_for_scale

    cfg = config_for_scale("tiny", tasks=("dmc-cheetah-run",), variants=("scratch", "p+er+g"))
    cfg = dataclasses.replace(cfg, seeds=2)
    reports = [
        _fake_report("dmc-cheetah-run", "scratch", 0, [100.0]),
        _fake_report("dmc-cheetah-run", "p+er+g", 0, [300.0], share=1.0),
        _fake_report("dmc-cheetah-run", "p+er+g", 1, [340.0], share=1.0),
    ]
    for r in reports:
        r["provenance"] = {"commit": "e" * 40, "dirty": False}
        c = r["config"]
        cell = tmp_path / "cells" / c["task"] / c["variant"] / f"seed{c['seed']}"
        cell.mkdir(parents=True)
        (cell / "report.json").write_text(json.dumps(r))
    write_wpt_study_report(cfg, reports, planned=4, out=tmp_path)
    row = headline(tmp_path)
    assert row.kind == "wpt" and row.code == "e" * 7
    assert "dmc-cheetah-run: scratch (DreamerV3) 100 (n=1) · P+ER+G (WPT) 320" in row.result
    assert "on at least 2 DMC tasks: not measured yet" in row.result
    assert "3 of 4 runs (partial)" in row.protocol


def test_wpt_claims_wait_for_every_seed_and_leave_the_hard_task_out_of_the_first():
    """A claim compares variants on the same, complete seeds: a task where one variant has
    fewer seeds finished is unfinished, not a failure. The hard task's action penalty lets a
    still policy win by ~140, so it is no evidence for the ≥ 100 claim."""
    from genworld.reports.wpt_study import claims, summarize
    from genworld.train.wpt_study import config_for_scale

    tasks = ("dmc-cheetah-run", "dmc-walker-walk", "dmc-cheetah-run-hard")
    cfg = config_for_scale("tiny", tasks=tasks, variants=("scratch", "p", "p+er", "p+er+g"))
    reports = [_fake_report("dmc-cheetah-run", "p+er+g", 0, [300.0])]  # one of 3 seeds
    reports += [_fake_report("dmc-cheetah-run", "scratch", s, [100.0]) for s in range(3)]
    reports += [_fake_report(tasks[2], v, s, [r]) for s in range(3)
                for v, r in (("scratch", 0.0), ("p+er+g", 200.0), ("p+er", 100.0))]  # fmt: skip
    verdicts = claims(cfg, summarize(cfg, reports, reps=20))
    beats, order = verdicts["wpt_beats_scratch"], verdicts["guidance_order_sparse"]
    assert beats["gaps"] == {} and beats["holds"] is None
    assert beats["unfinished"] == ["dmc-cheetah-run", "dmc-walker-walk"]
    assert order["tasks"] == {} and order["unfinished"] == [tasks[2]] and order["holds"] is None
    reports += [_fake_report("dmc-cheetah-run", "p+er+g", s, [300.0]) for s in (1, 2)]
    reports += [_fake_report(tasks[2], "p", s, [150.0]) for s in range(3)]  # P above P+ER
    verdicts = claims(cfg, summarize(cfg, reports, reps=20))
    beats, order = verdicts["wpt_beats_scratch"], verdicts["guidance_order_sparse"]
    assert beats["gaps"] == {"dmc-cheetah-run": 200.0} and beats["holds"] is None  # walker next
    assert order["tasks"] == {tasks[2]: [200.0, 100.0, 150.0]} and order["holds"] is False
    reports += [_fake_report("dmc-walker-walk", v, s, [r]) for s in range(3)
                for v, r in (("scratch", 0.0), ("p+er+g", 50.0))]  # fmt: skip
    verdicts = claims(cfg, summarize(cfg, reports, reps=20))
    beats, order = verdicts["wpt_beats_scratch"], verdicts["guidance_order_sparse"]
    assert beats["unfinished"] == [] and beats["holds"] is False  # 1 of 2 tasks gains ≥ 100
    assert beats["gap_ci"]["dmc-cheetah-run"] == [200.0, 200.0]  # every seed's gap is 200
    assert order["separated"] == {tasks[2]: [True, True]}  # equal seeds: no spread


def test_a_sparse_order_inside_the_noise_is_marked():
    """P+ER+G above P+ER on average, but with seed-paired gaps of both signs: the report says
    the order is inside the noise."""
    from genworld.reports.wpt_study import claims, summarize
    from genworld.train.wpt_study import config_for_scale

    task = "dmc-cheetah-run-hard"
    cfg = config_for_scale("tiny", tasks=(task,), variants=("p", "p+er", "p+er+g"))
    finals = {"p+er+g": [30.0, -10.0, 40.0], "p+er": [0.0, 10.0, 5.0], "p": [-5.0, -6.0, -4.0]}
    reports = [_fake_report(task, v, s, [r]) for v, rs in finals.items() for s, r in enumerate(rs)]
    order = claims(cfg, summarize(cfg, reports, reps=200))["guidance_order_sparse"]
    assert order["holds"] is True and order["separated"] == {task: [False, True]}


def test_a_sparse_task_no_run_was_ever_paid_on_is_not_measured():
    """Returns of a hard task on which no run ever met its sparse reward rank only the action
    penalty: the second claim says "not measured" there instead of judging the order."""
    from genworld.reports.wpt_study import claims, summarize
    from genworld.train.wpt_study import config_for_scale

    task = "dmc-cheetah-run-hard"
    cfg = config_for_scale("tiny", tasks=(task,), variants=("p", "p+er", "p+er+g"))
    finals = {"p+er+g": -5.0, "p+er": -9.0, "p": -20.0}
    reports = [{**_fake_report(task, v, s, [r]), "sparse_hits": 0}
               for v, r in finals.items() for s in range(3)]  # fmt: skip
    order = claims(cfg, summarize(cfg, reports, reps=20))["guidance_order_sparse"]
    assert order["no_signal"] == [task] and order["tasks"] == {} and order["unfinished"] == []
    assert order["holds"] is None
    reports[0]["sparse_hits"] = 12  # one run was paid: the order is judged
    order = claims(cfg, summarize(cfg, reports, reps=20))["guidance_order_sparse"]
    assert order["no_signal"] == [] and order["holds"] is True


def test_a_failing_wpt_run_is_recorded_and_the_study_goes_on(tmp_path, monkeypatch):
    """A fine-tuning run that raises does not stop the others: the report names it, the command
    ends in one line, and a rerun retries it (its error.json goes once it finishes)."""
    import genworld.train.wpt_study as study
    from genworld import api

    def flaky(cfg, out, cell):
        raise FloatingPointError("non-finite actor loss")

    monkeypatch.setattr(study, "_pretrain", lambda cfg, out, show_progress: None)
    monkeypatch.setattr(study, "_finetune_cell", flaky)
    cfg = api.wpt_study_config("tiny", seeds=1, variants=("p",))
    out = tmp_path / "study"
    with pytest.raises(GenworldError, match=r"1 of 1 cells failed \(first: cells/dmc-cheetah"):
        api.wpt_study(cfg, out, show_progress=False)
    error = out / "cells/dmc-cheetah-run/p/seed0/error.json"
    assert json.loads(error.read_text())["error"] == "FloatingPointError: non-finite actor loss"
    report = json.loads((out / "wpt_study.json").read_text())
    assert report["finished_runs"] == 0 and report["failed_runs"] == [
        {
            "folder": "cells/dmc-cheetah-run/p/seed0",
            "error": "FloatingPointError: non-finite actor loss",
        }
    ]
    assert "Failed runs (1)" in (out / "wpt_study.md").read_text()
    monkeypatch.setattr(study, "_finetune_cell", lambda cfg, out, cell: {"finished": True})
    assert study.run_cell(cfg, out, study.Cell("dmc-cheetah-run", "p", 0)) == {"finished": True}
    assert not error.exists()


def _fake_cell(trained: list, pause: float = 0.3):
    """A stand-in for a fine-tuning run: records the cell, takes ``pause`` seconds, writes its
    report as ``_finetune_cell`` does."""
    import time

    from genworld.utils.io import atomic_write_json

    def run(cfg, out, cell):
        trained.append((cell.variant, cell.seed))
        time.sleep(pause)
        report = {"finished": True, "cell": cell.folder}
        atomic_write_json(out / cell.folder / "report.json", report)
        return report

    return run


def test_two_processes_on_one_wpt_study_pretrain_once_and_split_its_runs(tmp_path, monkeypatch):
    """Two `genworld wpt-study` runs sharing --out (threads here; processes or machines in use):
    one pre-trains while the other waits for its model, every run is trained by exactly one
    of them, and both return every run."""
    import time

    import genworld.train.wpt_study as study

    pretrained, trained = [], []

    def pretrain(cfg, out, show_progress):
        if not (out / "pretrain" / "provenance.json").exists():
            pretrained.append(1)
            time.sleep(0.3)
            (out / "pretrain").mkdir(parents=True, exist_ok=True)
            (out / "pretrain" / "provenance.json").write_text("{}")

    monkeypatch.setattr(study, "_pretrain", pretrain)
    monkeypatch.setattr(study, "_finetune_cell", _fake_cell(trained))
    cfg = study.config_for_scale("tiny", seeds=2, variants=("scratch", "p"))
    out = tmp_path / "study"
    results = side_by_side(lambda: study.run_study(cfg, out, show_progress=False), stagger=0.1)
    assert pretrained == [1]
    assert sorted(trained) == [("p", 0), ("p", 1), ("scratch", 0), ("scratch", 1)]
    assert all(len(r[0]) == r[1] == 4 and r[2] == [] for r in results)


def test_a_wpt_study_left_by_another_process_reports_the_rest_without_waiting(
    tmp_path, monkeypatch
):
    """``wait_for_others=False`` leaves a run another process holds and reports the others;
    `genworld status` shows that run as training; another command wanting the folder alone is
    refused while the study runs."""
    import genworld.train.wpt_study as study
    from genworld.train.status import study_status
    from genworld.utils.io import claim, claim_folder

    trained: list = []
    monkeypatch.setattr(study, "_pretrain", lambda cfg, out, show_progress: None)
    monkeypatch.setattr(study, "_finetune_cell", _fake_cell(trained, pause=0))
    cfg = study.config_for_scale("tiny", seeds=2, variants=("p",), wait_for_others=False)
    out = tmp_path / "study"
    held = out / study.cells(cfg)[1].folder
    with claim(held.with_name(held.name + ".claim"), wait=False):
        reports, planned, failed = study.run_study(cfg, out, show_progress=False)
        assert (len(reports), planned, failed) == (1, 2, [])
        assert study_status(out)["counts"]["training"] == 1
    assert trained == [("p", 0)]
    alone = pytest.raises(GenworldError, match="another `genworld finetune` is running")
    with (
        claim_folder(out, "genworld wpt-study", cfg, shared=True),
        alone,
        claim_folder(out, "genworld finetune"),
    ):
        pass
