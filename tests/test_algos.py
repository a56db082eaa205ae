"""The shared agent contract, parametrised over every registered algorithm that imports."""

import numpy as np
import pytest
import torch

from genworld.algos.registry import ALGOS, AlgoContext, available_algos, build_agent
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.synthetic import random_dataset
from genworld.errors import GenworldError
from genworld.train.algo_check import padded_rows
from genworld.train.checkpoint import load_checkpoint, save_checkpoint
from genworld.train.loop import train_offline
from genworld.train.world_model_source import provide_world_model

ENVS = ("hopper", "halfcheetah")  # different obs (11/17) and action (3/6) sizes


def toy_dataset(envs=ENVS, episodes=4, steps=30, seed=0) -> MultiEnvDataset:
    return random_dataset(envs, episodes, steps, seed)


def make(name: str, tmp_path, dataset=None, seed=0):
    dataset = dataset or toy_dataset()
    torch.manual_seed(seed)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        updates=1_000,  # a short run's schedules
        seed=seed,
        out=tmp_path,
        world_models=provide_world_model,
    )
    return build_agent(name, ctx), dataset


ALGO_NAMES = available_algos()


def test_registry_lists_the_issue_algorithms():
    assert {"bc", "cql", "iql", "td3bc", "mopo", "morel", "dt", "prompt-dt", "tgw"} <= set(ALGOS)
    with pytest.raises(GenworldError, match="unknown algorithm 'sac2'"):
        build_agent("sac2", None)


@pytest.mark.parametrize("name", ALGO_NAMES)
def test_update_act_and_checkpoint_round_trip(name, tmp_path):
    agent, dataset = make(name, tmp_path / "a")
    before = {k: v.clone() for k, v in _flatten(agent.state_dict()).items() if _is_float(v)}
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        metrics = agent.update(generator)
    assert metrics, f"{name}.update returned no metrics"
    after = _flatten(agent.state_dict())
    changed = [k for k, v in before.items() if not torch.equal(v, after[k])]
    assert changed, f"{name}: three updates changed no parameter"
    for key, value in metrics.items():
        assert torch.as_tensor(value).numel() == 1, key
        assert np.isfinite(float(value)), key
    obs, env_idx = padded_rows(dataset)
    actions = agent.act(obs, env_idx, deterministic=True)
    assert actions.shape == (len(obs), dataset.act_max)
    assert actions.abs().max() <= 1.0
    # hopper (index 0) has 3 action dims of halfcheetah's 6: padding must be exactly zero
    assert torch.all(actions[env_idx == 0, 3:] == 0)
    # the state survives our checkpoint format (safetensors + JSON) and restores behaviour
    save_checkpoint(tmp_path / "ckpt", 3, {"agent": agent.state_dict()})
    _, state = load_checkpoint(tmp_path / "ckpt" / "step_000000003")
    other, _ = make(name, tmp_path / "b", dataset, seed=1)
    other.load_state_dict(state["agent"])
    if hasattr(agent, "episode_policy"):
        return  # history-based: compared through the loop test below
    torch.testing.assert_close(other.act(obs, env_idx, deterministic=True), actions)


SLOW_RESUMES = {"agnostic-iql", "cmt", "dt", "prompt-dt", "mrcom", "rssm", "cadm", "focal"}
SLOW_RESUMES |= {"mopo", "morel"}  # the MBPO machinery of tgw's check, with other world models
"""Resume checks of several seconds each: integration (CI runs them), out of the fast suite."""


@pytest.mark.parametrize(
    "name",
    [
        pytest.param(n, marks=pytest.mark.integration) if n in SLOW_RESUMES else n
        for n in ALGO_NAMES
    ],
)
def test_killed_run_resumes_to_the_same_state(name, tmp_path):
    """4 updates in one go == 2 updates, a 'kill', then a rerun on the same folder."""
    dataset = toy_dataset()
    specs = dataset.specs

    def run(folder, steps, agent_dir):
        agent, _ = make(name, agent_dir, dataset)
        return agent, train_offline(
            name,
            agent,
            agent.update,
            specs,
            folder,
            steps=steps,
            eval_every=2,
            eval_episodes=1,
            seed=0,
            show_progress=False,
        )

    straight, records = run(tmp_path / "straight", 4, tmp_path / "wa")
    run(tmp_path / "resumed", 2, tmp_path / "wb")
    resumed, records2 = run(tmp_path / "resumed", 4, tmp_path / "wb")
    assert [r["step"] for r in records2] == [2, 4]
    a, b = straight.state_dict(), resumed.state_dict()
    flat_a = _flatten(a)
    flat_b = _flatten(b)
    assert flat_a.keys() == flat_b.keys()
    for key in flat_a:
        if isinstance(flat_a[key], torch.Tensor):
            torch.testing.assert_close(flat_a[key], flat_b[key], msg=key)
    for s in specs:
        key = f"eval/{s.name}/return"
        assert records[-1][key] == pytest.approx(records2[-1][key])


@pytest.mark.parametrize("name", [n for n in ALGO_NAMES if n in ("tgw", "mopo", "morel")])
def test_world_model_is_frozen_during_policy_learning(name, tmp_path):
    agent, _ = make(name, tmp_path)
    before = {k: v.clone() for k, v in agent.world_model.state_dict().items()}
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        agent.update(generator)
    for k, v in agent.world_model.state_dict().items():
        torch.testing.assert_close(v, before[k], msg=k)


def _flatten(state, prefix=""):
    out = {}
    if isinstance(state, dict):
        for k, v in state.items():
            out.update(_flatten(v, f"{prefix}{k}."))
    elif isinstance(state, (list, tuple)):
        for i, v in enumerate(state):
            out.update(_flatten(v, f"{prefix}{i}."))
    else:
        out[prefix] = state
    return out


def _is_float(v) -> bool:
    return isinstance(v, torch.Tensor) and v.is_floating_point()


def _iql(overrides: dict, dataset: MultiEnvDataset):
    torch.manual_seed(0)
    ctx = AlgoContext(
        dataset=dataset,
        normalizer=Normalizer.fit(dataset),
        device=torch.device("cpu"),
        scale="tiny",
        updates=1_000,  # a short run's schedules
        seed=0,
        overrides=overrides,
    )
    return build_agent("iql", ctx)


def _updated(agent, updates: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    for _ in range(updates):
        agent.update(generator)
    nets = {f"{name}.{k}": v for name in ("actor", "critic", "value")
            for k, v in getattr(agent, name).state_dict().items()}  # fmt: skip
    return {"log_std": agent.log_std.detach(), **nets}


def test_iql_max_grad_norm_clips_each_network_and_zero_is_the_unclipped_update():
    dataset = toy_dataset()
    clip = 1e-3
    clipped = _iql({"max_grad_norm": clip}, dataset)
    _updated(clipped, 1)
    for group in clipped.opt.param_groups:  # actor (with its log-std), critic, value
        grads = [p.grad for p in group["params"]]
        assert all(g is not None for g in grads)
        assert torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])) <= clip * 1.0001
    default, zero = _iql({}, dataset), _iql({"max_grad_norm": 0.0}, dataset)
    assert default.cfg.max_grad_norm == 0.0
    reference, same = _updated(default), _updated(zero)
    assert all(torch.equal(reference[k], same[k]) for k in reference)
    # a clip no gradient reaches scales by exactly 1: the clipped path's maths is the same
    loose = _updated(_iql({"max_grad_norm": 1e12}, dataset))
    assert all(torch.equal(reference[k], loose[k]) for k in reference)
    # a tight clip changes the update
    tight = _updated(_iql({"max_grad_norm": clip}, dataset))
    assert not torch.equal(reference["actor.0.weight"], tight["actor.0.weight"])
    with pytest.raises(GenworldError, match="max_grad_norm"):
        _iql({"max_grad_norm": -1.0}, dataset)
