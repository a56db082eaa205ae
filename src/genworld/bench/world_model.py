"""World-model training throughput as ratios to references measured in the same run.

- TGW training: sequences/s and FLOP/s (counted by torch's FlopCounterMode on one update) as a
  fraction of the fp32 matmul peak, for the paper-default and the mini config;
- MLP ensemble: training samples/s of our batched ensemble vs a per-member Python loop (the
  OfflineRL-Kit/d3rlpy-style layout), same sizes;
- scaling (``scaling=True``): TGW training throughput against batch size, number of envs
  (1 → 3 → 10 tasks) and ensemble size.
"""

from __future__ import annotations

import torch

from genworld.bench.common import (
    BenchResult,
    flops_and_rate,
    matmul_peak_gflops,
    rate,
    synthetic_suite,
)

MINI = {"d_model": 64, "context_len": 10, "n_heads": 2, "stoch_dim": 64, "hidden": 128}


def tgw_training(suite, cfg, batch: int, iters: int) -> dict:
    from genworld.data.normalization import Normalizer
    from genworld.world_models.tgw import TGWWorldModel

    model = TGWWorldModel(suite.specs, cfg, Normalizer.fit(suite))
    return model_training(model, suite, batch, 1e-4, iters)


def model_training(model, suite, batch: int, lr: float, iters: int) -> dict:
    """Training throughput of any world model (its own batches and loss, fused AdamW as in
    training): sequences and updates per second, FLOPs per update and FLOP/s."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, fused=True)  # as in training
    g = torch.Generator().manual_seed(0)

    def update():
        loss, _ = model.loss(model.sample_batch(suite, batch, g), g)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    flops, per_s = flops_and_rate(update, iters)
    return {
        "sequences_per_s": batch * per_s,
        "updates_per_s": per_s,
        "gflops_per_update": flops / 1e9,
        "gflop_per_s": flops * per_s / 1e9,
    }


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

    return {
        "batched": batch * rate(step_ens, iters),
        "per_member_loop": batch * rate(step_loop, iters),
    }


def scaling(iters: int) -> dict[str, dict[str, float]]:
    """Sequences/s of mini-TGW training against batch size, env count and ensemble size."""
    from genworld.world_models.tgw import TGWConfig

    three = synthetic_suite(steps=200, episodes=2)
    curves: dict[str, dict[str, float]] = {"batch": {}, "envs": {}, "ensemble": {}}
    for batch in (8, 16, 32, 64, 128):
        curves["batch"][str(batch)] = tgw_training(three, TGWConfig(**MINI), batch, iters)[
            "sequences_per_s"
        ]
    for n in (1, 3, 10):
        envs = ("halfcheetah", "hopper", "walker2d", "ant") * 3
        suite = synthetic_suite(envs=_distinct(envs[:n]), steps=200, episodes=2)
        curves["envs"][str(n)] = tgw_training(suite, TGWConfig(**MINI), 32, iters)[
            "sequences_per_s"
        ]
    for members in (1, 3, 5, 7):
        cfg = TGWConfig(**{**MINI, "ensemble_size": members})
        curves["ensemble"][str(members)] = tgw_training(three, cfg, 32, iters)["sequences_per_s"]
    return curves


def _distinct(names):
    """1 → 3 → 10 'tasks': the registry has 4 robots, so tasks beyond 4 repeat a robot's dims
    (the cost depends on dims and counts, not on the names)."""
    from genworld.envs import get_env_spec
    from genworld.types import EnvSpec

    out = []
    for i, name in enumerate(names):
        spec = get_env_spec(name)
        out.append(spec if i < 4 else EnvSpec(**{**spec.__dict__, "name": f"{name}-{i}"}))
    return out


def run(quick: bool = False, scaling_curves: bool = False) -> BenchResult:
    from genworld.world_models.tgw import TGWConfig

    iters = 3 if quick else 10
    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    suite = synthetic_suite(steps=300 if quick else 1000)
    res = BenchResult("world_model", {"matmul_peak_gflops": peak, "configs": {}})
    res.notes.append(f"world_model: fp32 matmul peak {peak:.0f} GFLOP/s (reference)")
    configs = {"paper-default": TGWConfig(), "mini": TGWConfig(**MINI)}
    for name, cfg in configs.items():
        train = tgw_training(suite, cfg, 32, iters)
        fraction = train["gflop_per_s"] / peak
        res.figures["configs"][name] = {**train, "fraction_of_matmul_peak": fraction}
        res.ratios.append(
            f"world_model/tgw-{name}: training {train['sequences_per_s']:.0f} seq/s, "
            f"{train['gflop_per_s']:.1f} GFLOP/s = {fraction:.2f}x matmul peak"
        )
    ens = mlp_ensemble_vs_loop(iters=5 if quick else 30)
    res.figures["mlp_ensemble_samples_per_s"] = ens
    res.figures["ratio"] = ens["batched"] / ens["per_member_loop"]
    res.ratios.append(
        f"world_model/mlp-ensemble: batched {ens['batched']:,.0f} samples/s = "
        f"{ens['batched'] / ens['per_member_loop']:.2f}x a per-member loop"
    )
    if scaling_curves:
        res.figures["scaling"] = scaling(2 if quick else 5)
    return res
