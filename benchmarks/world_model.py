"""World-model throughput, as ratios to references measured in the same run.

    python benchmarks/world_model.py [--threads 2] [--rollouts 10000] [--json out.json]

- training: TGW sequences/s and FLOP/s (counted by torch's FlopCounterMode on one update) as a
  fraction of the fp32 matmul peak;
- imagination: imagined transitions/s for ``--rollouts`` parallel rollouts (ensemble, prompt
  memory) as a ratio to raw MuJoCo stepping;
- MLP ensemble: training samples/s of our batched ensemble vs a per-member Python loop
  (the OfflineRL-Kit/d3rlpy-style layout), same sizes.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import matmul_peak_gflops, real_steps_per_s  # noqa: E402
from genworld.data.episodes import Episode  # noqa: E402
from genworld.data.multi_env import MultiEnvDataset  # noqa: E402
from genworld.data.normalization import Normalizer  # noqa: E402
from genworld.envs import get_env_spec  # noqa: E402
from genworld.world_models.tgw import TGWConfig, TGWWorldModel, sample_start_states  # noqa: E402

ENVS = ("halfcheetah", "hopper", "walker2d")


def synthetic_suite(steps: int = 1000, episodes: int = 4) -> MultiEnvDataset:
    rng = np.random.default_rng(0)
    data = []
    for name in ENVS:
        spec = get_env_spec(name)
        eps = []
        for _ in range(episodes):
            ends = np.zeros(steps, bool)
            ends[-1] = True
            eps.append(
                Episode.from_arrays(
                    rng.normal(size=(steps + 1, spec.obs_dim)),
                    rng.uniform(-1, 1, (steps, spec.act_dim)),
                    rng.normal(size=steps),
                    np.zeros(steps, bool),
                    ends,
                )
            )
        data.append((spec, eps))
    return MultiEnvDataset(data)


def tgw_training(suite, cfg: TGWConfig, batch: int, iters: int) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    model = TGWWorldModel(suite.specs, cfg, Normalizer.fit(suite))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    g = torch.Generator().manual_seed(0)

    def update():
        loss, _ = model.loss(model.sample_batch(suite, batch, g), g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    for _ in range(2):
        update()
    counter = FlopCounterMode(display=False)
    with counter:
        update()
    flops = counter.get_total_flops()
    start = time.perf_counter()
    for _ in range(iters):
        update()
    seconds = (time.perf_counter() - start) / iters
    return {
        "sequences_per_s": batch / seconds,
        "updates_per_s": 1 / seconds,
        "gflops_per_update": flops / 1e9,
        "gflop_per_s": flops / seconds / 1e9,
    }


def tgw_imagination(suite, cfg: TGWConfig, rollouts: int, horizon: int) -> float:
    model = TGWWorldModel(suite.specs, cfg, Normalizer.fit(suite))
    g = torch.Generator().manual_seed(0)
    env_idx, index = sample_start_states(suite, rollouts, g)
    state = model.initial_state(suite, env_idx, index)
    actions = torch.rand(rollouts, suite.act_max) * 2 - 1
    model.step(state, None, actions, generator=g)  # warm-up
    start = time.perf_counter()
    for _ in range(horizon):
        state = model.step(state, None, actions, generator=g).state
    return rollouts * horizon / (time.perf_counter() - start)


def mlp_ensemble_vs_loop(members: int = 7, batch: int = 256, iters: int = 30) -> dict:
    from genworld.nn.mlp import EnsembleMLP, mlp

    in_dim, out_dim, hidden = 23, 36, [200] * 4
    x, y = torch.randn(batch, in_dim), torch.randn(members, batch, out_dim)
    ens = EnsembleMLP(members, in_dim, hidden, out_dim)
    loop = torch.nn.ModuleList(mlp(in_dim, hidden, out_dim, torch.nn.SiLU) for _ in range(members))
    opt_e, opt_l = torch.optim.Adam(ens.parameters()), torch.optim.Adam(loop.parameters())

    def step_ens():
        loss = (ens(x) - y).pow(2).mean()
        opt_e.zero_grad()
        loss.backward()
        opt_e.step()

    def step_loop():
        loss = sum((net(x) - y[i]).pow(2).mean() for i, net in enumerate(loop))
        opt_l.zero_grad()
        loss.backward()
        opt_l.step()

    rates = {}
    for name, fn in (("batched", step_ens), ("per_member_loop", step_loop)):
        fn()
        start = time.perf_counter()
        for _ in range(iters):
            fn()
        rates[name] = batch * iters / (time.perf_counter() - start)
    return rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rollouts", type=int, default=10_000)
    parser.add_argument("--horizon", type=int, default=3)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak_gflops()
    real = real_steps_per_s()
    suite = synthetic_suite()
    result = {
        "threads": args.threads,
        "matmul_peak_gflops": peak,
        "real_mujoco_steps_per_s": real,
        "configs": {},
    }
    print(
        f"reference: fp32 matmul peak {peak:.0f} GFLOP/s, raw MuJoCo halfcheetah {real:,.0f} steps/s"
    )
    configs = {
        "paper-default (d128, M20, 1 layer, 3 heads, N5)": (TGWConfig(), 32),
        "mini (d64, M10, 2 heads, N5)": (
            TGWConfig(d_model=64, context_len=10, n_heads=2, stoch_dim=64, hidden=128),
            32,
        ),
    }
    for name, (cfg, batch) in configs.items():
        train = tgw_training(suite, cfg, batch, args.iters)
        imag = tgw_imagination(suite, cfg, args.rollouts, args.horizon)
        result["configs"][name] = {
            **train,
            "imagined_per_s": imag,
            "fraction_of_matmul_peak": train["gflop_per_s"] / peak,
            "imagination_vs_real": imag / real,
        }
        print(
            f"world_model/{name}: training {train['sequences_per_s']:.0f} seq/s, "
            f"{train['gflop_per_s']:.1f} GFLOP/s = {train['gflop_per_s'] / peak:.2f}x matmul peak"
        )
        print(
            f"world_model/{name}: imagination {imag:,.0f} transitions/s "
            f"({args.rollouts} rollouts) = {imag / real:.2f}x real MuJoCo stepping"
        )
    ens = mlp_ensemble_vs_loop()
    result["mlp_ensemble_samples_per_s"] = ens
    print(
        f"world_model/mlp_ensemble: batched {ens['batched']:,.0f} samples/s = "
        f"{ens['batched'] / ens['per_member_loop']:.2f}x a per-member loop"
    )
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
