"""Dataset build speed as a ratio to raw random env stepping, measured in the same run.

    python benchmarks/data_build.py [--env halfcheetah] [--steps 50000] [--json out.json]

Raw stepping: one env, uniform random actions, no recording (the physical reference).
Build: ``genworld.data.build.collect`` with a 256x256 SAC actor (stochastic, batched over the
env pool) recording full episodes, as `genworld data build` does (Minari writing excluded and
timed separately).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch

from genworld.data.build import collect
from genworld.data.minari_io import write_dataset
from genworld.envs import get_env_spec, make_env
from genworld.policies import TanhGaussianActor


def raw_stepping(env_name: str, steps: int) -> float:
    env = make_env(env_name)
    env.reset(seed=0)
    rng = np.random.default_rng(0)
    actions = rng.uniform(-1, 1, (steps, env.action_space.shape[0]))
    start = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[t])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def build_speed(env_name: str, steps: int) -> tuple[float, float]:
    spec = get_env_spec(env_name)
    torch.manual_seed(0)
    actor = TanhGaussianActor(spec.obs_dim, spec.act_dim)
    start = time.perf_counter()
    episodes = collect(env_name, actor, steps, seed=0)
    collect_rate = steps / (time.perf_counter() - start)
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as root:
        start = time.perf_counter()
        write_dataset(
            f"genworld/{env_name}/medium-v0",
            spec,
            episodes,
            card={},
            description="bench",
            algorithm_name="bench",
            root=Path(root),
        )
        write_rate = steps / (time.perf_counter() - start)
    return collect_rate, write_rate


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--env", default="halfcheetah")
    parser.add_argument("--steps", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    raw = raw_stepping(args.env, args.steps)
    collect_rate, write_rate = build_speed(args.env, args.steps)
    end_to_end = 1 / (1 / collect_rate + 1 / write_rate)
    result = {
        "env": args.env,
        "steps": args.steps,
        "raw_random_steps_per_s": round(raw),
        "build_collect_steps_per_s": round(collect_rate),
        "build_write_steps_per_s": round(write_rate),
        "build_end_to_end_steps_per_s": round(end_to_end),
        "ratio_collect_vs_raw": round(collect_rate / raw, 3),
        "ratio_end_to_end_vs_raw": round(end_to_end / raw, 3),
        "minutes_per_1M_steps": round(1e6 / end_to_end / 60, 2),
    }
    print(f"data_build/{args.env}: raw random stepping {raw:,.0f} steps/s (reference)")
    print(
        f"data_build/{args.env}: collect with SAC actor {result['ratio_collect_vs_raw']:.2f}x raw"
    )
    print(
        f"data_build/{args.env}: collect + Minari write {result['ratio_end_to_end_vs_raw']:.2f}x raw "
        f"({end_to_end:,.0f} steps/s, {result['minutes_per_1M_steps']:.1f} min per 1M steps)"
    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()
