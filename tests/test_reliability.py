"""Reliability: SIGKILL + resume is bit-identical, corrupt checkpoints never poison a run,
loading never unpickles."""

import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from genworld.errors import GenworldError
from genworld.train.checkpoint import load_checkpoint, resume_point, save_checkpoint

from .conftest import untimed

RUN = [sys.executable, "-m", "genworld.cli", "run", "--scale", "tiny", "--deterministic"]
RUN += ["--envs", "hopper", "--qualities", "random", "--quiet"]


@pytest.mark.integration
def test_sigkill_at_random_points_then_rerun_gives_the_uninterrupted_report(tmp_path):
    """Killed twice mid-training (each time once a new checkpoint is on disk, then a random
    moment later: inside a step, an evaluation or a checkpoint write), the rerun's report is the
    uninterrupted run's. The kills are placed by what is on disk, not by the clock, so a slow or
    busy machine moves them, never misses them."""
    done = subprocess.run([*RUN, "--out", str(tmp_path / "straight")], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()[-2000:]
    rng = np.random.default_rng(0)
    out = tmp_path / "killed"
    kills, seen = 0, 0
    while kills < 2:
        proc = subprocess.Popen([*RUN, "--out", str(out)], stdout=subprocess.DEVNULL)
        while proc.poll() is None and len(list(out.rglob("step_*"))) <= seen:
            time.sleep(0.02)  # until this attempt has saved a checkpoint of its own
        seen = len(list(out.rglob("step_*")))
        time.sleep(float(rng.uniform(0.0, 0.3)))
        if proc.poll() is not None:  # finished before the kill: nothing left to interrupt
            break
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
    assert kills >= 1, "the run finished before its first checkpoint was seen"
    final = subprocess.run([*RUN, "--out", str(out)], capture_output=True)
    assert final.returncode == 0, final.stderr.decode()[-2000:]
    a = json.loads((tmp_path / "straight" / "report.json").read_text())
    b = json.loads((out / "report.json").read_text())
    assert untimed(a["results"]) == untimed(b["results"])
    assert not list(out.rglob(".tmp-*")), "a killed checkpoint write left a temp folder behind"


def _state():
    return {"w": torch.arange(6.0).reshape(2, 3), "step": 3, "nested": [{"b": torch.ones(2)}]}


@pytest.mark.parametrize("sweeper", ["resume", "save"])
def test_a_temp_folder_left_by_a_killed_write_is_removed(tmp_path, sweeper):
    """SIGKILL mid-write runs no cleanup: the next resume (or write) removes the leftover."""
    save_checkpoint(tmp_path, 1, _state())
    stale = tmp_path / ".tmp-0123abcd"
    stale.mkdir()
    (stale / "tensors.safetensors").write_bytes(b"half-written")
    if sweeper == "resume":
        assert resume_point(tmp_path)[0] == 1
    else:
        save_checkpoint(tmp_path, 2, _state())
    assert not stale.exists()
    assert sorted(p.name for p in tmp_path.iterdir())[-1].startswith("step_")


def test_corrupt_newest_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, capsys):
    save_checkpoint(tmp_path, 1, _state())
    newest = save_checkpoint(tmp_path, 2, _state())
    data = bytearray((newest / "tensors.safetensors").read_bytes())
    data[-3] ^= 0xFF
    (newest / "tensors.safetensors").write_bytes(bytes(data))
    step, state = resume_point(tmp_path)
    assert step == 1
    torch.testing.assert_close(state["w"], _state()["w"])
    assert (tmp_path / "corrupt-step_000000002").exists()  # kept for inspection
    assert "fails its checksum" in capsys.readouterr().err


def test_checkpoint_with_a_pickle_payload_is_refused_and_never_executed(tmp_path):
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    path = save_checkpoint(tmp_path / "ckpt", 1, _state())
    blob = pickle.dumps(Payload())
    (path / "tensors.safetensors").write_bytes(blob)
    meta = json.loads((path / "meta.json").read_text())
    import hashlib

    meta["sha256"] = hashlib.sha256(blob).hexdigest()  # even with matching checksums
    from genworld.train.checkpoint import _meta_digest

    meta["meta_sha256"] = _meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GenworldError, match="unreadable"):
        load_checkpoint(path)
    assert not marker.exists()


def test_checkpoint_of_another_format_gives_a_clear_error(tmp_path):
    path = save_checkpoint(tmp_path, 1, _state())
    meta = json.loads((path / "meta.json").read_text())
    meta["format"] = "genworld-checkpoint-v9"
    from genworld.train.checkpoint import _meta_digest

    meta["meta_sha256"] = _meta_digest(meta)
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(GenworldError, match="format 'genworld-checkpoint-v9'"):
        load_checkpoint(path)


def test_no_torch_load_without_weights_only_in_the_package():
    from pathlib import Path

    import genworld

    root = Path(genworld.__file__).parent
    offenders = [
        str(p.relative_to(root))
        for p in root.rglob("*.py")
        for line in p.read_text().splitlines()
        if ("torch.load(" in line and "weights_only=True" not in line) or "pickle.load" in line
    ]
    assert offenders == []


def test_non_finite_loss_stops_with_the_update_named_and_checkpoint_intact(tmp_path):
    from genworld.envs import get_env_spec
    from genworld.train.loop import train_offline

    class Agent:
        calls = 0

        def update(self, generator):
            self.calls += 1
            bad = float("nan") if self.calls == 3 else 1.0
            return {"losses/critic": torch.tensor(bad), "losses/actor": torch.tensor(0.5)}

        def act(self, obs, env_idx, deterministic=True):
            return torch.zeros(len(obs), 3)

        def state_dict(self):
            return {"calls": self.calls}

        def load_state_dict(self, state):
            self.calls = state["calls"]

    agent = Agent()
    with pytest.raises(GenworldError, match=r"non-finite losses/critic at update 3"):
        train_offline(
            "nan-test",
            agent,
            agent.update,
            [get_env_spec("hopper")],
            tmp_path,
            steps=6,
            eval_every=2,
            eval_episodes=1,
            seed=0,
            show_progress=False,
        )
    step, state = resume_point(tmp_path / "checkpoints")
    assert step == 2 and state["agent"]["calls"] == 2


def test_disk_full_during_checkpoint_keeps_the_previous_one(tmp_path, monkeypatch):
    import errno

    import genworld.train.checkpoint as ckpt

    save_checkpoint(tmp_path, 1, _state())

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(ckpt, "save_file", full)
    with pytest.raises(
        GenworldError, match="No space left on device.*previous checkpoint is intact"
    ):
        save_checkpoint(tmp_path, 2, _state())
    assert [p.name for p in tmp_path.iterdir()] == ["step_000000001"]  # no temp folder left
    assert resume_point(tmp_path)[0] == 1


def test_unwritable_run_folder_is_refused_before_training(tmp_path):
    from genworld.api import run
    from genworld.api import run_config as config_for_scale

    target = tmp_path / "file-not-folder"
    target.write_text("x")  # a file where the run folder should be (works even as root)
    cfg = config_for_scale("tiny", envs=("hopper",), qualities=("random",))
    with pytest.raises(GenworldError, match="cannot (create|write) the run folder"):
        run(cfg, target / "run", show_progress=False)


def test_dataset_too_big_for_memory_is_refused(monkeypatch):
    import genworld.data.minari_io as io
    from genworld.data.build import build_dataset
    from genworld.data.multi_env import MultiEnvDataset

    build_dataset("hopper-random", steps=200, seed=0, show_progress=False)
    monkeypatch.setattr(io, "available_memory", lambda: 1024)
    with pytest.raises(GenworldError, match="GiB of memory.*--steps"):
        MultiEnvDataset.from_minari(["hopper-random"])


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
def test_soak_50_kill_resume_cycles_leak_no_files_or_memory(tmp_path):
    """50 cycles: train a few updates, die (KeyboardInterrupt mid-run), resume. The run folder
    stays bounded (last-K checkpoints, no temp folders) and memory does not keep growing."""
    from genworld.algos.registry import AlgoContext, build_agent
    from genworld.data.normalization import Normalizer
    from genworld.train.loop import train_offline

    from .test_algos import toy_dataset

    dataset = toy_dataset()
    out = tmp_path / "soak"
    rss = []
    for cycle in range(50):
        ctx = AlgoContext(
            dataset, Normalizer.fit(dataset), torch.device("cpu"), scale="tiny", updates=1_000
        )
        agent = build_agent("bc", ctx)
        calls = {"n": 0}

        def dying(generator, agent=agent, calls=calls):
            calls["n"] += 1
            if calls["n"] > 3:
                raise KeyboardInterrupt
            return agent.update(generator)

        with pytest.raises(KeyboardInterrupt):
            train_offline(
                "soak",
                agent,
                dying,
                dataset.specs,
                out,
                steps=10_000,
                eval_every=2,
                eval_episodes=1,
                seed=0,
                show_progress=False,
            )
        rss.append(_rss_bytes())
        files = [p for p in out.rglob("*") if p.is_file() and p.parent.name != "tb"]
        assert len(list((out / "checkpoints").glob("step_*"))) <= 2
        assert not list(out.rglob(".tmp-*"))
        assert len(files) <= 6, f"cycle {cycle}: {sorted(map(str, files))}"
        # TensorBoard: one small event file per run segment (its resume design), no more
        assert len(list((out / "tb").iterdir())) <= cycle + 1
    assert resume_point(out / "checkpoints")[0] == 2 * 50  # one new checkpoint per cycle
    growth = rss[-1] - rss[9]  # after warm-up
    assert growth < 64 * 2**20, f"memory grew by {growth / 2**20:.0f} MiB over 40 cycles"


def test_non_finite_imagination_stops_naming_the_world_model(tmp_path):
    from .test_algos import make

    agent, _ = make("mopo", tmp_path)
    original = agent.world_model.next

    def poisoned(*args, **kwargs):
        out = original(*args, **kwargs)
        out.next_observations[0, 0] = float("nan")
        return out

    agent.world_model.next = poisoned
    with pytest.raises(GenworldError, match="EnsembleMLPWorldModel imagined non-finite"):
        agent.update(torch.Generator().manual_seed(0))


def test_resume_with_another_agent_config_is_a_clear_error(tmp_path):
    from genworld.algos.registry import AlgoContext, build_agent
    from genworld.data.normalization import Normalizer
    from genworld.train.loop import train_offline

    from .test_algos import toy_dataset

    dataset = toy_dataset()

    def agent(hidden):
        ctx = AlgoContext(
            dataset,
            Normalizer.fit(dataset),
            torch.device("cpu"),
            scale="tiny",
            overrides={"hidden": hidden},
        )
        return build_agent("bc", ctx)

    kwargs = dict(steps=2, eval_every=2, eval_episodes=1, seed=0, show_progress=False)
    first = agent((32, 32))
    train_offline("bc", first, first.update, dataset.specs, tmp_path, **kwargs)
    other = agent((16,))
    with pytest.raises(GenworldError, match="written by another configuration"):
        train_offline("bc", other, other.update, dataset.specs, tmp_path, **{**kwargs, "steps": 4})


def test_a_run_saved_before_a_new_config_field_resumes_when_the_field_is_at_its_default(tmp_path):
    """A newer genworld adds SACConfig.bc_alpha (default 0): an older run's config.json lacks it
    and must still resume; a non-default value, or any other difference, is named. Ignored
    fields (how a run is scheduled) differ freely, also when an older run saved them."""
    import json as _json
    from dataclasses import asdict, dataclass, field, replace

    from genworld.algos.sac import SACConfig
    from genworld.errors import GenworldError
    from genworld.utils.io import check_or_write_config

    @dataclass(frozen=True)
    class Run:
        steps: int = 10
        workers: int = 1
        threads: int = 2
        sac: SACConfig = field(default_factory=SACConfig)

    cfg = Run(steps=20)
    current = _json.loads(_json.dumps(asdict(cfg)))
    old = {**current, "sac": {k: v for k, v in current["sac"].items() if k != "bc_alpha"}}
    (tmp_path / "config.json").write_text(_json.dumps(old))
    (tmp_path / "checkpoints" / "step_000000010").mkdir(parents=True)  # a finished step
    (tmp_path / "checkpoints" / "step_000000010" / "meta.json").write_text("{}")
    check_or_write_config(tmp_path, cfg)  # resumes
    check_or_write_config(tmp_path, replace(cfg, workers=4), ignore=("workers",))
    check_or_write_config(tmp_path, replace(cfg, threads=7))  # speed only: never in the check
    changed = replace(cfg, sac=replace(cfg.sac, bc_alpha=1.0))
    with pytest.raises(GenworldError, match=r"sac\.bc_alpha"):
        check_or_write_config(tmp_path, changed)
    with pytest.raises(GenworldError, match=r"\(steps\)"):
        check_or_write_config(tmp_path, replace(cfg, steps=30))
    with pytest.raises(GenworldError, match=r"\(workers\)"):
        check_or_write_config(tmp_path, replace(cfg, workers=4))


def _job(name: str, seconds: float, folder: str) -> None:
    """A pool job that sleeps, then marks that it ran to its end."""
    time.sleep(seconds)
    Path(folder, f"{name}.finished").touch()


def test_process_map_stops_running_jobs_when_the_parent_fails(tmp_path):
    """A failure or Ctrl-C in the parent (here: in the progress callback) must not wait for the
    jobs still running in the worker processes: the long job is stopped, never finishes (were
    it awaited, it would have finished before process_map raised)."""
    from genworld.utils.parallel import process_map

    def advance(n):
        raise RuntimeError("stop")

    jobs = [("quick", 0.0, str(tmp_path)), ("long", 120, str(tmp_path))]
    with pytest.raises(RuntimeError, match="stop"):
        process_map(_job, jobs, 2, advance)
    assert (tmp_path / "quick.finished").exists()
    assert not (tmp_path / "long.finished").exists()


def _threads(_: int) -> int:
    return torch.get_num_threads()


@pytest.mark.parametrize("workers", [1, 2])
def test_process_map_runs_each_job_with_the_threads_asked_for(workers):
    """A study beside another job must not take every core: its jobs run with ``threads`` torch
    threads whether they run in this process or in workers, and this process gets its own
    setting back."""
    from genworld.utils.parallel import process_map

    before = torch.get_num_threads()
    asked = 2 if before == 1 else 1  # unlike this process's own setting
    assert process_map(_threads, [(0,), (1,)], workers, threads=asked) == [asked, asked]
    assert torch.get_num_threads() == before


def test_a_study_takes_its_threads_from_the_config():
    from genworld import api

    assert api.unseen_config("tiny", threads=2).threads == 2
    with pytest.raises(GenworldError, match="threads"):
        api.scenarios_config("tiny", threads=0)


def test_an_old_optimizer_checkpoint_keeps_the_fused_kernels_on_load():
    from genworld.utils.device import load_optimizer_state

    params = [torch.nn.Parameter(torch.ones(3))]
    old = torch.optim.AdamW(params, lr=0.1)  # saved before training used fused AdamW
    params[0].grad = torch.ones(3)
    old.step()
    opt = torch.optim.AdamW(params, lr=0.1, fused=True)
    load_optimizer_state(opt, old.state_dict(), torch.device("cpu"))
    assert opt.param_groups[0]["fused"] is True  # a plain load_state_dict leaves it None
    assert torch.equal(opt.state[params[0]]["exp_avg"], old.state[params[0]]["exp_avg"])
    opt.step()  # and the fused kernel accepts the loaded state


def test_a_command_refused_before_its_first_result_leaves_no_folder(tmp_path):
    from genworld.utils.io import claim_folder

    def refused(out, *, also=None):
        with pytest.raises(GenworldError), claim_folder(out, "genworld x"):
            (out / "config.json").write_text("{}")
            (out / "cells").mkdir()
            if also:
                (out / also).write_text("{}")
            raise GenworldError("refused")

    refused(tmp_path / "new")
    assert not (tmp_path / "new").exists()  # the folder it created is gone
    refused(tmp_path / "kept", also="cells/result.json")
    assert (tmp_path / "kept/cells/result.json").exists()  # a result is never removed
    (tmp_path / "old").mkdir()
    refused(tmp_path / "old")
    assert (tmp_path / "old/config.json").exists()  # a folder it did not create stays


def test_finish_held_retries_the_cells_other_processes_held_and_keeps_those_still_held_out():
    from genworld.train.failures import split_failures
    from genworld.utils.parallel import finish_held

    asked = []

    def retry(i, wait):
        asked.append((i, wait))
        return {"cell": i} if i == 1 else None  # cell 3 is still in another process's hands

    results = [{"cell": 0}, None, {"cell": 2}, None]
    finished = finish_held(results, retry, False, "study")
    assert finished == [{"cell": 0}, {"cell": 1}, {"cell": 2}, None]  # in the cells' order
    assert asked == [(1, False), (3, False)]
    assert split_failures(finished) == ([{"cell": c} for c in (0, 1, 2)], [])
