import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from genworld.data.build import build_dataset
from genworld.errors import GenworldError
from genworld.policies import load_policy
from genworld.train.behaviour import BehaviourConfig, train_behaviour_policy
from genworld.train.policy_export import export_policies

SCRIPT = """
import sys
from pathlib import Path
from genworld.train.behaviour import BehaviourConfig, train_behaviour_policy
from genworld.algos.sac import SACConfig
cfg = BehaviourConfig(env="hopper", total_steps=1500, learning_starts=300, snapshot_every=300,
                      checkpoint_every=600, eval_episodes=2, device="cpu",
                      sac=SACConfig(hidden=(32, 32), batch_size=32))
train_behaviour_policy(cfg, Path(sys.argv[1]), show_progress=False)
"""


@pytest.mark.integration
def test_sac_run_resumes_after_kill(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", SCRIPT, str(out)])
    deadline = time.time() + 120
    while not list((out / "checkpoints").glob("step_*")) and time.time() < deadline:
        time.sleep(0.2)
    proc.kill()
    proc.wait()
    first = sorted(p.name for p in (out / "checkpoints").glob("step_*"))
    assert first and first[-1] != "step_000001500", "killed too late to test resume"
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True)
    steps = [json.loads(line)["step"] for line in (out / "eval.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [300, 600, 900, 1200, 1500]
    assert (out / "checkpoints" / "step_000001500").exists()
    # the resumed run continued from the checkpoint instead of starting over
    assert steps.count(300) == 1

    dest = tmp_path / "policies"
    cards = export_policies(out, dest)
    assert set(cards) == {"medium", "expert"}
    actor, card = load_policy(dest / "hopper-medium")
    assert card["extra"]["replay_snapshots"][0]["name"] == "uniform-random"
    total = sum(r["buffer_steps"] for r in card["extra"]["replay_snapshots"])
    assert total == card["extra"]["snapshot_step"]
    # only the expert: no medium policy, no replay snapshots
    alone = tmp_path / "expert_only"
    assert set(export_policies(out, alone, only=("expert",))) == {"expert"}
    assert sorted(p.name for p in alone.iterdir()) == [
        "hopper-expert.json",
        "hopper-expert.safetensors",
    ]
    with pytest.raises(GenworldError, match="cannot export 'replay'"):
        export_policies(out, alone, only=("replay",))


@pytest.mark.integration
def test_sigterm_writes_a_checkpoint_at_the_current_step_and_a_rerun_resumes(tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, str(out)], stderr=subprocess.PIPE, text=True
    )
    deadline = time.time() + 120
    while not (out / "eval.jsonl").exists() or not (out / "eval.jsonl").read_text():
        assert time.time() < deadline and proc.poll() is None
        time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)  # after the first snapshot (300), before 600's checkpoint
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0 and "a checkpoint was written" in err
    saved = [int(p.name.split("_")[1]) for p in (out / "checkpoints").glob("step_*")]
    assert 300 <= max(saved) < 1500 and max(saved) % 600, saved  # not a regular checkpoint
    subprocess.run([sys.executable, "-c", SCRIPT, str(out)], check=True)
    steps = [json.loads(line)["step"] for line in (out / "eval.jsonl").read_text().splitlines()]
    assert sorted(set(steps)) == [300, 600, 900, 1200, 1500]
    assert steps.count(300) == 1  # resumed from the interrupt checkpoint, not from scratch


def test_a_finished_run_goes_further_with_more_steps_and_other_settings_are_refused(tmp_path):
    from dataclasses import replace

    from genworld.algos.sac import SACConfig

    cfg = BehaviourConfig(
        env="hopper",
        total_steps=60,
        learning_starts=20,
        snapshot_every=30,
        checkpoint_every=30,
        eval_episodes=1,
        sac=SACConfig(hidden=(8,), batch_size=8),
    )
    train_behaviour_policy(cfg, tmp_path, show_progress=False)
    train_behaviour_policy(replace(cfg, total_steps=90), tmp_path, show_progress=False)
    steps = [
        json.loads(line)["step"] for line in (tmp_path / "eval.jsonl").read_text().splitlines()
    ]
    assert steps == [30, 60, 90]  # continued from step 60, not started over
    assert json.loads((tmp_path / "config.json").read_text())["total_steps"] == 90
    with pytest.raises(GenworldError, match="different config.*learning_starts"):
        train_behaviour_policy(replace(cfg, learning_starts=10), tmp_path, show_progress=False)


SHIPPED = Path(__file__).parents[1] / "src" / "genworld" / "assets" / "policies"


def _fresh_policy_score(env: str, name: str, episodes: int = 50) -> float:
    """A shipped policy's own normalized score: ``episodes`` fresh stochastic episodes, seeded
    apart from the export's check (issue #3: the targets are the policy's score; a fixed-step
    dataset's per-episode mean is lower where short, failed episodes crowd in)."""
    import torch

    from genworld.envs import get_env_spec
    from genworld.eval.rollout import evaluate_policy

    actor, _ = load_policy(SHIPPED / f"{env}-{name}")
    gen = torch.Generator().manual_seed(7)
    returns = evaluate_policy(
        env, lambda o: actor.act(o, deterministic=False, generator=gen), episodes, 900_000
    )
    return float(get_env_spec(env).normalized_score(returns.mean()))


@pytest.mark.slow
@pytest.mark.parametrize("env", ["halfcheetah", "hopper", "walker2d", "ant"])
def test_shipped_medium_policy_scores_in_the_medium_band(env):
    from genworld.envs import get_env_spec

    low, high = get_env_spec(env).medium_band
    assert low <= _fresh_policy_score(env, "medium") <= high
    assert low <= load_policy(SHIPPED / f"{env}-medium")[1]["eval_normalized"] <= high


@pytest.mark.slow
@pytest.mark.parametrize("env", ["halfcheetah", "hopper", "walker2d", "ant"])
def test_shipped_expert_policy_reaches_the_expert_target(env, monkeypatch):
    """The expert's own score on 50 fresh episodes, and its data: a 20k-step build whose complete
    episodes are within 15 points of the target (they lean to short, failed episodes)."""
    from genworld.envs import get_env_spec

    target = get_env_spec(env).expert_target
    assert _fresh_policy_score(env, "expert") >= target
    monkeypatch.setenv("GENWORLD_POLICY_DIR", str(SHIPPED))
    expert = build_dataset(f"{env}-expert", steps=20_000, seed=0, show_progress=False)
    assert expert["normalized_mean_complete_episodes"] >= target - 15


def test_replay_sequence_is_thinned_evenly_and_still_covers_the_whole_buffer():
    from genworld.train.policy_export import MAX_REPLAY_SNAPSHOTS, _replay_sequence

    records = [{"step": 10_000 * k} for k in range(1, 41)]  # snapshots every 10k up to 400k
    replay = _replay_sequence("hopper", records, medium_step=300_000, warmup=5_000)
    assert replay[0] == {"name": "uniform-random", "buffer_steps": 5_000}
    sources = [r["step"] for r in replay[1:]]
    # the first snapshot also stands for the slice before it (warm-up end → first snapshot)
    assert len(set(sources)) < MAX_REPLAY_SNAPSHOTS and sources == sorted(sources)
    assert sources[0] == 10_000 and max(sources) < 300_000  # medium's own snapshot collects none
    assert sum(r["buffer_steps"] for r in replay) == 300_000
    short = _replay_sequence("hopper", records[:4], medium_step=40_000, warmup=5_000)
    assert [r["step"] for r in short[1:]] == [10_000, 10_000, 20_000, 30_000]


def test_picks_are_made_on_re_evaluated_scores_not_the_noisy_log(monkeypatch):
    from genworld.train import policy_export

    logged = {100: 20.0, 140: 47.7, 150: 26.6, 170: 50.0, 200: 70.0, 210: 90.0, 220: 88.0}
    truth = {100: 21.0, 140: 31.0, 150: 40.0, 170: 52.0, 200: 80.0, 210: 85.0, 220: 87.0}
    records = [
        {"step": s, "stochastic_normalized": v, "stochastic_return": v} for s, v in logged.items()
    ]
    checked = []

    def verify(run, record, env, episodes=20, seed=50_000):
        checked.append(record["step"])
        score = truth[record["step"]] - (2.0 if episodes == 50 else 0.0)  # a fresh confirmation
        return {**record, "stochastic_normalized": score, "stochastic_return": score}

    monkeypatch.setattr(policy_export, "verify_snapshot", verify)
    monkeypatch.setattr(policy_export, "VERIFY_TOP", 3)
    # hopper's medium band: 45-65
    medium, expert = policy_export.pick_medium_and_expert(Path("run"), "hopper", records)
    assert medium["step"] == 170  # 140 was in band by luck of 5 episodes; verified at 31
    assert expert["step"] == 220  # 210 had the best log, 220 the best verified
    # the expert first (a DMC medium band depends on it), scored again on fresh episodes: that
    # is its score, the selection's is kept; then the medium candidates in order
    assert sorted(checked[:3]) == [200, 210, 220] and checked[3] == 220
    assert checked[4:] == [140, 170] and expert["stochastic_normalized"] == 85.0
    assert expert["selection_normalized"] == 87.0
    checked.clear()
    best_in_band = [{**r, "stochastic_return": 100.0 if r["step"] == 170 else 0.0} for r in records]
    medium, expert = policy_export.pick_medium_and_expert(Path("run"), "hopper", best_in_band)
    # verified once as medium and expert candidate, then scored again as the picked expert
    assert medium["step"] == 170 and checked.count(170) == 2


def test_actor_act_is_forward_bit_for_bit():
    """``act`` skips the modules' call overhead but must compute what ``forward`` does."""
    import numpy as np
    import torch

    from genworld.policies import TanhGaussianActor

    torch.manual_seed(0)
    actor = TanhGaussianActor(11, 3, hidden=(64, 32))
    obs = np.random.default_rng(0).normal(size=(16, 11))
    with torch.no_grad():
        mean, log_std = actor(torch.as_tensor(obs, dtype=torch.float32))
        noise = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
        sampled = torch.tanh(mean + log_std.exp() * noise).numpy()
    got = actor.act(obs, deterministic=False, generator=torch.Generator().manual_seed(3))
    assert got.dtype == np.float32 and np.array_equal(got, sampled)
    assert np.array_equal(actor.act(obs, deterministic=True), torch.tanh(mean).numpy())
    assert not np.array_equal(got, torch.tanh(mean).numpy())  # the noise is applied
