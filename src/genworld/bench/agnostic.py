"""Agnostic IQL's update (``algos/agnostic_iql.py``) on the four-env mini setup
(halfcheetah, hopper, walker2d, ant: 17/11/17/27 observation and 6/3/6/8 action dims) as ratios
to references measured in the same run: its FLOP/s (counted by torch's FlopCounterMode on one
update) as a fraction of the fp32 matmul peak, and the tokens an update feeds the networks
(rows × their observation + action widths) with width groups against padding every row to the
widest env. Synthetic data: throughput does not depend on the values.
"""

from __future__ import annotations

import torch

from genworld.bench.common import BenchResult, flops_and_rate, matmul_peak_gflops, synthetic_suite

ENVS = ("halfcheetah", "hopper", "walker2d", "ant")


def tokens(groups) -> int:
    """Rows × (observation width + action width), summed over an update's width groups."""
    return sum(len(rows) * (obs_width + act_width) for rows, obs_width, act_width in groups)


def run(quick: bool = False) -> BenchResult:
    from genworld.algos.agnostic_iql import build
    from genworld.algos.registry import AlgoContext
    from genworld.data.normalization import Normalizer

    suite = synthetic_suite(ENVS, steps=200 if quick else 1000, episodes=2)
    ctx = AlgoContext(
        dataset=suite,
        normalizer=Normalizer.fit(suite),
        device=torch.device("cpu"),
        scale="tiny" if quick else "mini",
        out=None,
    )
    torch.manual_seed(0)
    agent = build(ctx)
    generator = torch.Generator().manual_seed(0)
    env = agent.sample(generator).env_idx
    grouped = tokens(agent.width_groups(env))
    padded = len(env) * (agent.obs_max + agent.act_max)
    flops, per_s = flops_and_rate(lambda: agent.update(generator), 3 if quick else 20)
    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    achieved = flops * per_s / 1e9
    figures = {
        "envs": list(ENVS),
        "rows_per_update": len(env),
        "tokens_per_update": grouped,
        "tokens_per_update_padded": padded,
        "updates_per_s": per_s,
        "gflops_per_update": flops / 1e9,
        "gflop_per_s": achieved,
        "matmul_peak_gflops": peak,
        "fraction_of_matmul_peak": achieved / peak,
    }
    return BenchResult(
        "agnostic",
        figures,
        notes=[
            f"agnostic: {'tiny' if quick else 'mini'} nets, {len(env)} rows per update over "
            f"{', '.join(ENVS)}: {per_s:.2f} updates/s, {flops / 1e9:.2f} GFLOP per update; "
            f"fp32 matmul peak {peak:.0f} GFLOP/s"
        ],
        ratios=[
            f"agnostic: tokens per update {grouped:,} with width groups vs {padded:,} padded to "
            f"the widest env ({grouped / padded:.2f}x)",
            f"agnostic: update {achieved:.1f} GFLOP/s = {achieved / peak:.2f}x the fp32 matmul "
            "peak",
        ],
    )
