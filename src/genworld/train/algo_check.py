"""``genworld algos check NAME``: does an algorithm keep the agent contract
(:mod:`genworld.algos.registry`)? One pass over what every runner relies on, on two envs of
different sizes, so an algorithm written outside genworld (docs/EXTENDING.md) can be tried in a
minute before it joins a table.

The data are random episodes with hopper's (11 observation, 3 action dims) and halfcheetah's
(17, 6) sizes (:func:`genworld.data.synthetic.random_dataset`), so every batch is padded and
hopper's rows have three padded action dims. The checks, in order (a failed one skips those
that need it):

- ``build``: ``build(ctx)`` at the ``tiny`` scale gives an agent (a model-based one gets its
  world model from ``ctx.world_model``, trained here);
- ``update``: three updates, each returning a non-empty dict of single finite numbers;
- ``learn``: those updates changed a floating-point tensor of ``state_dict()``;
- ``act``: ``act`` returns ``(n, act_max)`` actions in [-1, 1], exactly 0 on padded dims, and the
  same actions when asked twice with ``deterministic=True``;
- ``checkpoint``: the state survives genworld's checkpoint format (safetensors + JSON): loaded
  into an agent built with another seed, every floating-point tensor of its ``state_dict()``
  equals the original's, and it acts as the original (an agent with ``episode_policy`` acts
  from its history: its acting is the ``evaluate`` check's);
- ``evaluate``: one episode of each env in the real simulator, as a table evaluates (through
  ``episode_policy`` where the agent has one), with a finite return.
"""

from __future__ import annotations

import tempfile
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.algos.registry import registered_algos, resolve_variant
from genworld.data.synthetic import random_dataset
from genworld.errors import GenworldError

CHECK_ENVS = ("hopper", "halfcheetah")
"""Two envs of different observation (11 / 17) and action (3 / 6) sizes."""
NEEDS = {
    "update": "build",
    "learn": "update",
    "act": "build",
    "checkpoint": "act",
    "evaluate": "build",
}
"""The check each check needs to have passed (else it is skipped)."""


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool | None
    """True passed, False failed, None skipped (a check it needs failed)."""
    detail: str


def check_algorithm(name: str, work_dir: Path | None = None, seed: int = 0) -> list[Check]:
    """Every check of the module docstring for algorithm or variant ``name``, in order."""
    from genworld.train.cells import build_cell_agent

    resolve_variant(name)  # an unknown name is the caller's error, in one line
    dataset = random_dataset(CHECK_ENVS, episodes=4, steps=30, seed=seed)
    with tempfile.TemporaryDirectory(dir=work_dir) as tmp:

        def build(agent_seed: int, folder: str):
            torch.manual_seed(agent_seed)
            out = Path(tmp) / folder
            device = torch.device("cpu")
            return build_cell_agent(
                name, dataset, device, scale="tiny", seed=agent_seed, out=out, updates=1_000
            )

        results: list[Check] = []
        state: dict[str, Any] = {}
        steps: list[tuple[str, Callable[[], str]]] = [
            ("build", lambda: _build(state, build, seed)),
            ("update", lambda: _update(state)),
            ("learn", lambda: _learn(state)),
            ("act", lambda: _act(state, dataset)),
            ("checkpoint", lambda: _checkpoint(state, build, seed, Path(tmp), dataset)),
            ("evaluate", lambda: _evaluate(state, dataset, seed)),
        ]
        passed: set[str] = set()
        for check, run in steps:
            if check in NEEDS and NEEDS[check] not in passed:
                results.append(Check(check, None, f"skipped: the {NEEDS[check]} check failed"))
                continue
            try:
                detail = run()
            except Exception as exc:  # noqa: BLE001 (every failure is the check's finding)
                results.append(Check(check, False, _failure(exc)))
                continue
            results.append(Check(check, True, detail))
            passed.add(check)
    return results


def summary(name: str, checks: list[Check]) -> dict[str, Any]:
    """What ``genworld algos check --json`` prints."""
    algo, _ = resolve_variant(name)
    return {
        "algo": name,
        "builder": registered_algos()[algo],
        "ok": all(c.ok for c in checks),
        "checks": [asdict(c) for c in checks],
    }


# ------------------------------------------------------------------ the checks
def _failure(exc: Exception) -> str:
    """The exception in one line, with where it was raised unless a check raised it."""
    frames = traceback.extract_tb(exc.__traceback__)
    raised_here = not frames or frames[-1].filename == __file__
    where = "" if raised_here else f" ({Path(frames[-1].filename).name}:{frames[-1].lineno})"
    return f"{type(exc).__name__}: {exc}{where}".replace("\n", " ")


def _build(state: dict, build, seed: int) -> str:
    state["agent"] = agent = build(seed, "agent")
    missing = [
        m for m in ("update", "act", "state_dict", "load_state_dict") if not hasattr(agent, m)
    ]
    if missing:
        raise GenworldError(f"the agent has no {', '.join(missing)}")
    kind = "with episode_policy" if hasattr(agent, "episode_policy") else "acts from observations"
    return f"{type(agent).__name__} ({kind})"


def float_tensors(tree: Any, prefix: str = "") -> dict[str, torch.Tensor]:
    """Copies of the floating-point tensors of a state (nested dicts, lists and tuples), by
    dotted path."""
    if isinstance(tree, dict | list | tuple):
        items = tree.items() if isinstance(tree, dict) else enumerate(tree)
        found: dict[str, torch.Tensor] = {}
        for key, sub in items:
            found |= float_tensors(sub, f"{prefix}{key}.")
        return found
    if isinstance(tree, torch.Tensor) and tree.is_floating_point():
        return {prefix.rstrip("."): tree.detach().clone()}
    return {}


def _update(state: dict) -> str:
    agent = state["agent"]
    state["before"] = float_tensors(agent.state_dict())
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        metrics = agent.update(generator)
        if not isinstance(metrics, dict) or not metrics:
            raise GenworldError(f"update returned {type(metrics).__name__}, not a non-empty dict")
        for key, value in metrics.items():
            value = torch.as_tensor(value)
            if value.numel() != 1 or not np.isfinite(float(value)):
                raise GenworldError(f"metric {key!r} is {value.tolist()}: give one finite number")
    return f"3 updates; metrics: {', '.join(sorted(metrics))}"


def _learn(state: dict) -> str:
    before, after = state["before"], float_tensors(state["agent"].state_dict())
    changed = [k for k, v in before.items() if k in after and not torch.equal(v, after[k])]
    if not changed:
        raise GenworldError("three updates changed no floating-point tensor of state_dict()")
    return f"{len(changed)} of {len(before)} tensors changed"


def padded_rows(dataset, n: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` observations of each env, zero-padded, and their env indices."""
    obs = torch.zeros(dataset.num_envs * n, dataset.obs_max)
    for k, env in enumerate(dataset.envs):
        obs[k * n : (k + 1) * n, : env.spec.obs_dim] = env.observations[:n]
    return obs, torch.arange(dataset.num_envs).repeat_interleave(n)


def _act(state: dict, dataset) -> str:
    agent = state["agent"]
    obs, env_idx = padded_rows(dataset)
    actions = agent.act(obs, env_idx, deterministic=True)
    if tuple(actions.shape) != (len(obs), dataset.act_max):
        raise GenworldError(
            f"act returned shape {tuple(actions.shape)}, not (rows, act_max) = "
            f"{(len(obs), dataset.act_max)}"
        )
    if not torch.isfinite(actions).all() or actions.abs().max() > 1.0:
        raise GenworldError("act returned actions outside [-1, 1] (or not finite)")
    for k, spec in enumerate(dataset.specs):
        if torch.any(actions[env_idx == k, spec.act_dim :] != 0):
            raise GenworldError(
                f"{spec.name}'s actions are not 0 on its padded dims {spec.act_dim}.."
                f"{dataset.act_max - 1}: multiply by the env's action mask"
            )
    if not torch.equal(agent.act(obs, env_idx, deterministic=True), actions):
        raise GenworldError("act(deterministic=True) gave other actions the second time")
    state["actions"] = actions
    return f"shape {tuple(actions.shape)}, padded dims 0, deterministic"


def _checkpoint(state: dict, build, seed: int, tmp: Path, dataset) -> str:
    from genworld.train.checkpoint import load_checkpoint, save_checkpoint

    agent = state["agent"]
    save_checkpoint(tmp / "ckpt", 3, {"agent": agent.state_dict()})
    _, saved = load_checkpoint(tmp / "ckpt" / "step_000000003")
    other = build(seed + 1, "other")
    other.load_state_dict(saved["agent"])
    original, restored = float_tensors(agent.state_dict()), float_tensors(other.state_dict())
    differ = [
        k for k, v in original.items() if k not in restored or not torch.equal(v, restored[k])
    ]
    if differ:
        raise GenworldError(
            f"after load_state_dict, {len(differ)} tensors differ from the saved agent's "
            f"(first: {differ[0]}): load every tensor state_dict() gives"
        )
    done = "saved (safetensors + JSON), loaded into another seed's agent: the same tensors"
    if hasattr(agent, "episode_policy"):
        return f"{done} (a history-based policy: its acting is the evaluate check's)"
    obs, env_idx = padded_rows(dataset)
    torch.testing.assert_close(other.act(obs, env_idx, deterministic=True), state["actions"])
    return f"{done} and actions"


def _evaluate(state: dict, dataset, seed: int) -> str:
    from genworld.eval.rollout import evaluate_agent

    returns = evaluate_agent(state["agent"], dataset.specs, episodes=1, seed=seed)
    for env, values in returns.items():
        if not np.all(np.isfinite(values)):
            raise GenworldError(f"{env}: the episode's return is {values.tolist()}")
    return ", ".join(f"{env} return {float(v[0]):.1f}" for env, v in returns.items())
