"""Dataset build speed as a ratio to raw random env stepping, measured in the same run.

Raw stepping: one env, uniform random actions, no recording (the physical reference).
Build: ``genworld.data.collect.collect`` with a 256x256 SAC actor (stochastic, batched over each
lane's env pool) recording full episodes, as `genworld data build` does: in one process, and
with its lanes in 2 processes (``CollectPool``, start-up included; `data build`'s default on a
multi-core machine for 200k+ steps). Minari writing is timed separately and added (end to end).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch

from genworld.bench.common import BenchResult, real_steps_per_s


def run_dmc(quick: bool = False, env: str = "dmc-cheetah-run") -> BenchResult:
    """The same for a DeepMind Control task, against raw dm_control stepping (its own
    environment, no adapter): the issue's target is ≥ 0.6×."""
    return run(quick, env, raw=dm_control_steps_per_s(env, 2_000 if quick else 20_000))


def dm_control_steps_per_s(env: str, steps: int) -> float:
    """dm_control's own environment of a DMC task, uniform random actions, no recording."""
    import numpy as np

    from genworld.envs import dmc

    raw = dmc._load(*dmc.DMC_TASKS[env], 0)
    spec = raw.action_spec()
    actions = np.random.default_rng(0).uniform(spec.minimum, spec.maximum, (steps, *spec.shape))
    raw.reset()
    start = time.perf_counter()
    for action in actions:
        if raw.step(action).last():
            raw.reset()
    return steps / (time.perf_counter() - start)


def run(quick: bool = False, env: str = "halfcheetah", raw: float | None = None) -> BenchResult:
    """Build speed of ``env``; ``raw``: the reference rate (default: raw random stepping)."""
    from genworld.data.collect import CollectPool, collect, lanes
    from genworld.data.minari_io import write_dataset
    from genworld.envs import get_env_spec
    from genworld.policies import TanhGaussianActor

    steps = 5_000 if quick else 200_000
    raw = raw if raw is not None else real_steps_per_s(env, 5_000 if quick else 50_000)
    spec = get_env_spec(env)
    torch.manual_seed(0)
    actor = TanhGaussianActor(spec.obs_dim, spec.act_dim)
    start = time.perf_counter()
    episodes = collect(env, actor, steps, seed=0)
    serial_rate = steps / (time.perf_counter() - start)
    start = time.perf_counter()
    with CollectPool(2) as pool:
        collect(env, actor, steps, seed=0, pool=pool)
    parallel_rate = steps / (time.perf_counter() - start)
    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        write_dataset(
            f"genworld/{env}/medium-v0",
            spec,
            episodes,
            card={},
            description="bench",
            algorithm_name="bench",
            root=Path(root),
        )
        write_rate = steps / (time.perf_counter() - start)

    def end_to_end(rate: float) -> float:
        return 1 / (1 / rate + 1 / write_rate)

    figures = {
        "env": env,
        "steps": steps,
        "lanes": lanes(steps),
        "raw_random_steps_per_s": raw,
        "build_collect_steps_per_s": serial_rate,
        "build_collect_2_processes_steps_per_s": parallel_rate,
        "build_write_steps_per_s": write_rate,
        "build_end_to_end_1_process_steps_per_s": end_to_end(serial_rate),
        "build_end_to_end_steps_per_s": end_to_end(parallel_rate),
        "ratio_1_process": end_to_end(serial_rate) / raw,
        "ratio": end_to_end(parallel_rate) / raw,
        "minutes_per_1M_steps": 1e6 / end_to_end(parallel_rate) / 60,
    }
    return BenchResult(
        "data_build_dmc" if env.startswith("dmc-") else "data_build",
        figures,
        notes=[f"data_build/{env}: raw random stepping {raw:,.0f} steps/s (reference)"],
        ratios=[
            f"data_build/{env}: collect + Minari write, 1 process "
            f"{figures['ratio_1_process']:.2f}x raw stepping",
            f"data_build/{env}: collect + Minari write, lanes in 2 processes "
            f"{figures['ratio']:.2f}x raw stepping ({figures['build_end_to_end_steps_per_s']:,.0f}"
            f" steps/s, {figures['minutes_per_1M_steps']:.1f} min per 1M steps)",
        ],
    )
