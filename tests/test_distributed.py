"""DDP (train/distributed.py): 2 gloo processes == 1 process on the concatenated batch; the
torchrun entry point trains, checkpoints from rank 0 and resumes; the world-model hook."""

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from genworld.data.multi_env import MultiEnvDataset
from genworld.envs import get_env_spec

from .conftest import random_episode

ENVS = ("hopper", "halfcheetah", "walker2d")  # 3 envs over 2 processes: an uneven 2 / 1 split
STEPS = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _toy_data() -> list:
    rng = np.random.default_rng(0)
    data = []
    for env in ENVS:
        spec = get_env_spec(env)
        episodes = [
            random_episode(rng, 25, spec.obs_dim, spec.act_dim, i % 2 == 0) for i in range(3)
        ]
        data.append((spec, episodes))
    return data


def _join(rank: int, world: int, port: int):
    from genworld.train.distributed import setup

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(1)
    return setup("cpu")


def _iql_steps(d, data, held):
    from genworld.train.dd_iql import build_dd_iql

    local = MultiEnvDataset([data[g] for g in held])
    specs = [spec for spec, _ in data]
    agent = build_dd_iql(local, specs, held, d, "tiny", seed=0, updates=STEPS)
    generator = torch.Generator().manual_seed(0)
    for _ in range(STEPS):
        agent.update(generator)
    return agent


def _iql_worker(rank: int, world: int, port: int, out: str) -> None:
    from genworld.train.distributed import shard, teardown

    d = _join(rank, world, port)
    agent = _iql_steps(d, _toy_data(), shard(len(ENVS), d))
    state = {**agent.nets.state_dict(), **agent.normalizer.state_dict()}
    state["reward_scale"] = agent.reward_scale
    torch.save(state, f"{out}/rank{rank}.pt")
    teardown(d)


def _ppo_worker(rank: int, world: int, port: int, out: str) -> None:
    from genworld.algos.ppo import PPO
    from genworld.train.distributed import ddp_wrapper, shard, sync_held_rows, teardown

    d = _join(rank, world, port)
    agent = _ppo(shard(2, d))
    agent.use_ddp(ddp_wrapper(d, agent.mixed_heads), world)
    agent.iterate()
    sync_held_rows(agent.stat_buffers(), shard(2, d), d)
    torch.save({**agent.nets.state_dict(), **agent.obs_norm.state_dict()}, f"{out}/rank{rank}.pt")
    agent.close()
    assert isinstance(agent, PPO)
    teardown(d)


def _ppo(held):
    from genworld.algos.ppo import PPO, PRESETS, PPOConfig
    from genworld.algos.registry import resolve_config

    class Ctx:
        scale = "tiny"
        overrides = {"envs": ("Pendulum-v1", "CartPole-v1"), "num_steps": 16, "total_timesteps": 64}

    torch.manual_seed(0)
    return PPO(resolve_config(PPOConfig, PRESETS, Ctx()), torch.device("cpu"), env_ids=held)


def _spawn(worker, tmp_path) -> list[dict]:
    mp.spawn(worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]


def _assert_same(a: dict, b: dict, **tol) -> None:
    assert a.keys() == b.keys()
    for key in a:
        torch.testing.assert_close(a[key], b[key], msg=key, **tol)


@pytest.mark.integration  # multi-process: CI runs it, the fast suite does not
def test_ddp_iql_two_gloo_processes_match_one_process_on_the_concatenated_batch(tmp_path):
    from genworld.train.distributed import Dist

    ranks = _spawn(_iql_worker, tmp_path)
    _assert_same(ranks[0], ranks[1], atol=0, rtol=0)  # DDP keeps the replicas identical
    single = _iql_steps(Dist(0, 1, 0, torch.device("cpu")), _toy_data(), [0, 1, 2])
    reference = {**single.nets.state_dict(), **single.normalizer.state_dict()}
    reference["reward_scale"] = single.reward_scale
    # same batches (per-env streams), same loss (mean over envs), gradients averaged by DDP:
    # equal up to float summation order
    _assert_same(ranks[0], reference, atol=2e-5, rtol=1e-4)
    moved = [k for k in reference if "actor" in k and not torch.equal(reference[k], ranks[0][k])]
    assert moved  # parameters did change (the comparison is not vacuous)


@pytest.mark.integration  # multi-process: CI runs it, the fast suite does not
def test_ddp_ppo_two_gloo_processes_match_one_process(tmp_path):
    """Pendulum (Box) on rank 0, CartPole (Discrete) on rank 1: mixed heads, unused-parameter
    bookkeeping, per-env statistics synced; the result is the single-process iteration's."""
    ranks = _spawn(_ppo_worker, tmp_path)
    _assert_same(ranks[0], ranks[1], atol=0, rtol=0)
    single = _ppo(None)
    single.iterate()
    single.close()
    reference = {**single.nets.state_dict(), **single.obs_norm.state_dict()}
    _assert_same(ranks[0], reference, atol=1e-4, rtol=1e-3)


def _kl_worker(rank: int, world: int, port: int, out: str) -> None:
    from types import SimpleNamespace

    from genworld.algos.ppo import PPO
    from genworld.train.distributed import teardown

    d = _join(rank, world, port)
    agent = SimpleNamespace(world_size=world)  # only the process count matters here
    local = torch.tensor(0.01 if rank == 0 else 0.03)  # one rank below a 0.02 target, one above
    kl = PPO.kl_over_processes(agent, local)
    torch.save({"kl": torch.tensor(kl), "stop": torch.tensor(kl > 0.02)}, f"{out}/rank{rank}.pt")
    teardown(d)


def test_ddp_ppo_early_stop_reads_the_kl_of_all_processes_so_ranks_stop_together(tmp_path):
    """Two gloo processes (a few seconds): in the fast suite, so `pytest -k "agnostic or ddp"`
    runs it."""
    ranks = _spawn(_kl_worker, tmp_path)
    assert [float(r["kl"]) for r in ranks] == pytest.approx([0.02, 0.02])
    assert ranks[0]["stop"] == ranks[1]["stop"]


def test_shard_gives_every_process_an_env_or_a_clear_error():
    from genworld.errors import GenworldError
    from genworld.train.distributed import Dist, shard

    assert shard(5, Dist(1, 2, 1, torch.device("cpu"))) == [1, 3]
    with pytest.raises(GenworldError, match="every process must hold"):
        shard(1, Dist(0, 2, 0, torch.device("cpu")))


def _torchrun(argv: list[str]) -> subprocess.CompletedProcess:
    """``torchrun --nproc-per-node 2 -m genworld ARGV`` on a free port, one thread each."""
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2"]
    torchrun += ["--master-port", str(_free_port()), "-m", "genworld", *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(torchrun, env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.integration  # multi-process: CI runs it, the fast suite does not
def test_torchrun_genworld_train_world_model_uses_ddp(tmp_path):
    from genworld.data.build import build_dataset

    for env in ENVS:
        build_dataset(f"{env}-random", steps=1000, seed=0, show_progress=False)
    out = tmp_path / "wm"
    datasets = ",".join(f"{env}-random" for env in ENVS)
    argv = ["train", "world-model", "--model", "mlp", "--datasets", datasets, "--scale", "tiny"]
    proc = _torchrun([*argv, "--steps", "4", "--out", str(out), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("world model trained") == 1  # rank 0 alone reports
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert lines and all(json.loads(line)["processes"] == 2 for line in lines)


@pytest.mark.integration
def test_torchrun_two_processes_train_agnostic_iql_then_a_single_process_resumes(tmp_path):
    """``torchrun --nproc-per-node 2 -m genworld train agnostic-iql --scale tiny``: both ranks
    train, rank 0 alone writes; a 'killed' run (last checkpoint removed) resumes in one process
    to the same weights."""
    from genworld.data.build import build_dataset
    from genworld.train.checkpoint import load_checkpoint
    from genworld.train.dd_iql import AgnosticIQLRunConfig, train_agnostic_iql

    for env in ENVS:
        build_dataset(f"{env}-random", steps=3000, seed=0, show_progress=False)
    out = tmp_path / "run"
    proc = _torchrun(["train", "agnostic-iql", "--scale", "tiny", "--out", str(out), "--quiet"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.count("agnostic-iql: 20 updates") == 1  # rank 0 alone reports
    records = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [10, 20]
    assert all(np.isfinite(r["eval/normalized_score_mean"]) for r in records)
    assert {f"eval/{e}/return" for e in ENVS} <= set(records[-1])
    metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["processes"] for m in metrics] == [2] * 4
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [
        "step_000000010",
        "step_000000020",
    ]
    _, final = load_checkpoint(out / "checkpoints" / "step_000000020")
    shutil.rmtree(out / "checkpoints" / "step_000000020")  # the 'kill' came after step 10
    resumed = train_agnostic_iql(AgnosticIQLRunConfig(scale="tiny"), out)
    assert [r["step"] for r in resumed] == [10, 20]
    _, again = load_checkpoint(out / "checkpoints" / "step_000000020")
    # same batches, gradients equal up to float summation order; Adam turns such differences
    # on near-zero gradients into up to ~lr (3e-4) per step, so compare well below that
    for key, value in final["agent"]["nets"].items():
        torch.testing.assert_close(again["agent"]["nets"][key], value, atol=1e-4, rtol=1e-3)
    assert Path(out / "config.json").exists()


def _wm_worker(rank: int, world: int, port: int, out: str) -> None:
    from genworld.train.distributed import fit_world_model_ddp, teardown
    from genworld.train.world_model import config_for_scale

    d = _join(rank, world, port)
    cfg = config_for_scale("tiny", check_ids=False, model="mlp", steps=4, checkpoint_every=2)
    model = fit_world_model_ddp(cfg, MultiEnvDataset(_toy_data()[:2]), Path(out) / "wm", d)
    torch.save(model.state_dict(), f"{out}/rank{rank}.pt")
    teardown(d)


@pytest.mark.integration  # multi-process: CI runs it, the fast suite does not
def test_ddp_world_model_replicas_stay_identical_and_checkpoint_like_fit_world_model(tmp_path):
    from genworld.train.checkpoint import latest_checkpoint, load_checkpoint

    ranks = _spawn(_wm_worker, tmp_path)
    _assert_same(ranks[0], ranks[1], atol=0, rtol=0)
    step, state = load_checkpoint(latest_checkpoint(tmp_path / "wm" / "checkpoints"))
    assert step == 4 and set(state) == {"model", "optimizer", "generator", "torch_rng", "wall_s"}
    lines = (tmp_path / "wm" / "metrics.jsonl").read_text().splitlines()
    assert all(json.loads(line)["processes"] == 2 for line in lines)


@pytest.mark.integration  # a tiny PPO run end to end (seconds): CI runs it
def test_agnostic_ppo_entry_point_trains_checkpoints_and_evaluates(tmp_path):
    """One process (no torchrun): the DD-PPO entry point with a Box and a Discrete env."""
    from genworld.cli import main
    from genworld.train.checkpoint import load_checkpoint

    out = tmp_path / "ppo"
    argv = ["train", "agnostic-ppo", "--scale", "tiny", "--envs", "Pendulum-v1,CartPole-v1"]
    argv += ["--total-timesteps", "512", "--eval-episodes", "1", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    result = json.loads((out / "eval.json").read_text())
    assert result["iteration"] == 2 and set(result["returns"]) == {"Pendulum-v1", "CartPole-v1"}
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["global_step"] for r in lines] == [256, 512]
    step, state = load_checkpoint(out / "checkpoints" / "step_000000002")
    assert step == 2 and state["ppo"]["iteration"] == 2
    assert main(argv) == 0  # rerun: resumes at the end, nothing left to train
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 2
