"""DD-IQL throughput with 1 vs 2 processes (gloo, CPU), and the parameter / all-reduce budget.

The *same run* each time: the same envs, the same global batch (``batch_size // num_envs`` rows
per env), the same networks; only the number of processes holding the envs changes (2 processes:
half the envs each, gradients all-reduced by DDP). Updates/s are global updates (one optimiser
step of every replica). Synthetic data (random episodes with the registry's dims), no Minari.

    python benchmarks/ddp_scaling.py --scale mini --updates 30 --processes 1,2 --json out.json
    python benchmarks/ddp_scaling.py --params-only      # parameter counts and bytes per step

Measure on an idle machine with at least as many free cores as processes (``--threads`` torch
threads each): on a shared 2-core box the 2-process figure is bounded by the free cores.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import time
from dataclasses import replace

import numpy as np
import torch
import torch.multiprocessing as mp

ENVS = ("halfcheetah", "hopper", "walker2d", "ant")


def toy_data(envs=ENVS, episodes=4, steps=200, seed=0):
    from genworld.data.episodes import Episode
    from genworld.envs import get_env_spec

    rng = np.random.default_rng(seed)
    data = []
    for env in envs:
        spec = get_env_spec(env)
        eps = []
        for _ in range(episodes):
            truncations = np.zeros(steps, bool)
            truncations[-1] = True
            eps.append(
                Episode.from_arrays(
                    rng.normal(size=(steps + 1, spec.obs_dim)),
                    rng.uniform(-1, 1, size=(steps, spec.act_dim)),
                    rng.normal(size=steps),
                    np.zeros(steps, bool),
                    truncations,
                )
            )
        data.append((spec, eps))
    return data


def _worker(rank: int, world: int, port: int, args: dict, out: str) -> None:
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.train.dd_iql import build_dd_iql
    from genworld.train.distributed import barrier, setup, shard, teardown

    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        WORLD_SIZE=str(world),
        LOCAL_RANK=str(rank),
    )
    torch.set_num_threads(args["threads"])
    d = setup("cpu")
    data = toy_data()
    held = shard(len(data), d)
    agent = build_dd_iql(
        MultiEnvDataset([data[g] for g in held]),
        [spec for spec, _ in data],
        held,
        d,
        args["scale"],
        seed=0,
        overrides={"batch_size": args["batch_size"]},
        updates=args["warmup"] + args["updates"],
    )
    generator = torch.Generator().manual_seed(0)
    for _ in range(args["warmup"]):
        agent.update(generator)
    barrier(d)
    start = time.perf_counter()
    for _ in range(args["updates"]):
        agent.update(generator)
    barrier(d)
    seconds = time.perf_counter() - start
    if d.is_main:
        result = {
            "processes": world,
            "updates_per_s": args["updates"] / seconds,
            "seconds": seconds,
        }
        with open(out, "w") as f:
            json.dump(result, f)
    teardown(d)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def measure(world: int, args: dict, tmp: str) -> dict:
    out = os.path.join(tmp, f"world{world}.json")
    mp.spawn(_worker, args=(world, _free_port(), args, out), nprocs=world, join=True)
    with open(out) as f:
        return json.load(f)


def parameter_budget() -> dict:
    """Parameter counts of the agnostic IQL networks (Table 2b 'full' and our 'mini') and the
    bytes one DDP step all-reduces."""
    from genworld.algos.agnostic_iql import PRESETS, AgnosticIQLConfig, IQLNetworks
    from genworld.algos.ppo import PRESETS as PPO_PRESETS
    from genworld.algos.ppo import PPOConfig, PPONetworks
    from genworld.algos.registry import resolve_config
    from genworld.nn.agnostic import parameter_count

    class Ctx:
        overrides: dict = {}

    rows = {}
    for scale in ("tiny", "mini", "full"):
        ctx = Ctx()
        ctx.scale = scale
        cfg = resolve_config(AgnosticIQLConfig, PRESETS, ctx)
        nets = IQLNetworks(replace(cfg.net, num_tasks=100), cfg)
        ppo_cfg = resolve_config(PPOConfig, PPO_PRESETS, ctx)
        ppo = PPONetworks(replace(ppo_cfg.net, num_tasks=100), ppo_cfg, True, True)
        counts = {
            "iql_actor": parameter_count(nets.actor),
            "iql_value": parameter_count(nets.value),
            "iql_q_each": parameter_count(nets.critics[0]),
            "iql_total": parameter_count(nets),
            "ppo_total": parameter_count(ppo),
            "task_embedding_100_envs": 100 * cfg.net.d_model,
        }
        counts["iql_grad_mb_fp32"] = counts["iql_total"] * 4 / 2**20
        counts["ppo_grad_mb_fp32"] = counts["ppo_total"] * 4 / 2**20
        rows[scale] = counts
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", default="mini", choices=["tiny", "mini", "full"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--updates", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--processes", default="1,2")
    parser.add_argument("--json", default=None)
    parser.add_argument("--params-only", action="store_true")
    args = parser.parse_args()
    report: dict = {"parameters": parameter_budget()}
    print(json.dumps(report["parameters"], indent=2))
    if not args.params_only:
        import tempfile

        settings = {
            "scale": args.scale,
            "batch_size": args.batch_size,
            "updates": args.updates,
            "warmup": args.warmup,
            "threads": args.threads,
        }
        report["settings"] = settings
        report["cpu_count"] = os.cpu_count()
        report["load_average"] = os.getloadavg()
        with tempfile.TemporaryDirectory() as tmp:
            runs = [measure(int(w), settings, tmp) for w in args.processes.split(",")]
        report["runs"] = runs
        base = runs[0]["updates_per_s"]
        for r in runs:
            r["speedup"] = r["updates_per_s"] / base
            print(
                f"{r['processes']} process(es): {r['updates_per_s']:.2f} updates/s "
                f"(x{r['speedup']:.2f}), {args.batch_size} rows per update over {len(ENVS)} envs"
            )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report, f, indent=2)


if __name__ == "__main__":
    main()
