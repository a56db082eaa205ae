import json
from dataclasses import replace

import pytest
import torch

from genworld.api import run_config as config_for_scale
from genworld.errors import GenworldError

from .conftest import untimed


def run(cfg, out, **kwargs):
    """``genworld run``'s API call; its report's data."""
    from genworld.api import run as run_study

    return run_study(cfg, out, **kwargs).summary


@pytest.mark.parametrize(
    "setting, policy",
    [
        pytest.param("multi", "shared", marks=pytest.mark.integration),  # CI runs these two
        ("multi", "per_env"),  # the default, in the fast suite
        pytest.param("single", None, marks=pytest.mark.integration),
    ],
)
def test_run_tiny_writes_report_and_resumes(tmp_path, setting, policy):
    cfg = config_for_scale(
        "tiny",
        envs=("hopper", "halfcheetah"),
        qualities=("random",),
        setting=setting,
        policy=policy,
        threads=1,
    )
    out = tmp_path / "run"
    threads = torch.get_num_threads()
    try:
        report = run(cfg, out, show_progress=False)
        # --threads holds for the whole run (the world-model stage once reset it to 2)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(threads)
    for name in ("report.md", "report.json", "config.json"):
        assert (out / name).exists()
    for kind in ("curves", "scores", "wm_errors"):
        assert len(list(out.glob(f"{kind}_*.png"))) == len(report["results"]), kind
    groups = ["random/multi"] if setting == "multi" else ["random/hopper", "random/halfcheetah"]
    assert sorted(report["results"]) == sorted(groups)
    for key in groups:
        result = report["results"][key]
        for method in ("tgw", "bc"):
            summary = result[method]["summary"]
            for env in result["envs"]:
                assert set(summary[env]) >= {"last_k_mean", "best", "best_step"}
                assert summary[env]["best"] >= summary[env]["last_k_mean"] - 1e-9
            curve = result[method]["curve"]
            assert [r["step"] for r in curve] == [20, 40]
    saved = json.loads((out / "report.json").read_text())
    summaries = [
        r[m]["summary"][e]
        for r in saved["results"].values()
        for m in ("tgw", "bc")
        for e in r["envs"]
    ]
    assert "not D4RL's data" in saved["provenance"] and saved["config"]["last_k"] == 2
    assert summaries and all("best" in s for s in summaries)
    # the preset's policy learner is recorded
    assert saved["config"]["agent"]["mbpo"]["sac"]["bc_alpha"] == 1
    # a rerun resumes, also with another --threads (speed only): every stage is complete, so
    # nothing is retrained and results are identical
    again = run(replace(cfg, threads=threads), out, show_progress=False)
    assert json.dumps(again["results"], sort_keys=True) == json.dumps(
        report["results"], sort_keys=True
    )
    # another config on the same folder is refused, naming what differs
    with pytest.raises(GenworldError, match="different config.*seed"):
        run(replace(cfg, seed=3), out, show_progress=False)


@pytest.mark.integration  # two tiny runs
def test_bc_does_not_follow_the_tgw_policys_settings(tmp_path):
    """BC trains after TGW in a run: its score must not move with TGW's settings."""
    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("random",), threads=1)
    other = replace(cfg.agent.mbpo, horizon=1, obs_bounds="none")  # other draws in rollouts
    changed = replace(cfg, agent=replace(cfg.agent, mbpo=other))
    threads = torch.get_num_threads()
    try:
        first = run(cfg, tmp_path / "a", show_progress=False)["results"]
        second = run(changed, tmp_path / "b", show_progress=False)["results"]
    finally:
        torch.set_num_threads(threads)
    group = "random/multi"  # one env: the multi setting is its only group
    assert first[group]["tgw"]["curve"] != second[group]["tgw"]["curve"]
    assert first[group]["bc"]["summary"] == second[group]["bc"]["summary"]


def test_run_config_errors():
    with pytest.raises(GenworldError, match="unknown quality 'meduim'"):
        config_for_scale("tiny", qualities=("meduim",))
    with pytest.raises(GenworldError, match="unknown environment 'cheetah'"):
        config_for_scale("tiny", envs=("cheetah",))


@pytest.mark.integration  # a kill and two tiny pipelines: out of the fast suite, CI runs it
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, monkeypatch):
    """Deterministic mode: stop the TGW policy after 30 of 40 updates (checkpoint at 20), rerun,
    and get the report of a run that was never interrupted (timing fields aside)."""
    from genworld.algos.tgw import TGWAgent

    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("random",), deterministic=True)
    straight = run(cfg, tmp_path / "straight", show_progress=False)

    original, calls = TGWAgent.update, {"n": 0}

    def dying_update(self, generator):
        calls["n"] += 1
        if calls["n"] > 30:
            raise KeyboardInterrupt
        return original(self, generator)

    monkeypatch.setattr(TGWAgent, "update", dying_update)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, tmp_path / "killed", show_progress=False)
    assert not (tmp_path / "killed" / "report.json").exists()
    monkeypatch.setattr(TGWAgent, "update", original)
    resumed = run(cfg, tmp_path / "killed", show_progress=False)
    curve = resumed["results"]["random/multi"]["tgw"]["curve"]
    assert [r["step"] for r in curve] == [20, 40]
    assert untimed(resumed["results"]) == untimed(straight["results"])


def test_report_protocol_names_the_behaviour_term():
    from genworld.reports.run import _bc_term

    assert "bc_alpha 1 on real rows" in _bc_term({"sac": {"bc_alpha": 1.0}})
    assert _bc_term({"sac": {"bc_alpha": 0.0}}) == "" and _bc_term({}) == ""


def test_report_protocol_names_the_multi_env_batch_rule():
    from genworld.reports.run import _batch_rule

    agent = {"policy": "per_env", "sac": {"batch_size": 256}}
    assert "each env's SAC a batch of 256" in _batch_rule({**agent, "batch_per_env": True}, 3)
    assert "sharing one batch of 256" in _batch_rule(agent, 3)  # saved before the rule
    assert _batch_rule({**agent, "policy": "shared"}, 3) == _batch_rule(agent, 1) == ""


@pytest.mark.integration  # a signal and two tiny pipelines: out of the fast suite, CI runs it
def test_ctrl_c_checkpoints_the_current_update_and_resumes_exactly(tmp_path, monkeypatch):
    """SIGINT during update 30 (checkpoints every 20): the update finishes, a checkpoint of
    update 30 is written, the run stops; the rerun's report equals an uninterrupted run's."""
    import os
    import signal

    from genworld.algos.tgw import TGWAgent
    from genworld.train.checkpoint import resume_point

    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("random",), deterministic=True)
    straight = run(cfg, tmp_path / "straight", show_progress=False)

    original, calls = TGWAgent.update, {"n": 0}

    def interrupted_update(self, generator):
        calls["n"] += 1
        if calls["n"] == 30:
            os.kill(os.getpid(), signal.SIGINT)
        return original(self, generator)

    monkeypatch.setattr(TGWAgent, "update", interrupted_update)
    with pytest.raises(KeyboardInterrupt, match="stopped at update 30; a checkpoint was written"):
        run(cfg, tmp_path / "stopped", show_progress=False)
    step, _ = resume_point(tmp_path / "stopped" / "random" / "multi" / "tgw" / "checkpoints")
    assert step == 30
    monkeypatch.setattr(TGWAgent, "update", original)
    resumed = run(cfg, tmp_path / "stopped", show_progress=False)
    assert untimed(resumed["results"]) == untimed(straight["results"])
