"""Agnostic IQL's update (``algos/agnostic_iql.py``) on the four-env mini setup
(halfcheetah, hopper, walker2d, ant: 17/11/17/27 observation and 6/3/6/8 action dims) as ratios
to references measured in the same run: its FLOP/s (counted by torch's FlopCounterMode on one
update) as a fraction of the fp32 matmul peak, at the mini preset's and the full preset's
(the paper's) network sizes, and the tokens an update feeds the networks
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


def update_figures(suite, scale: str, iters: int, peak: float) -> dict:
    """One preset's update on ``suite``: rows and tokens per update (width groups against
    padding to the widest env), updates/s, FLOPs per update, FLOP/s and its fraction of
    ``peak``."""
    from genworld.algos.agnostic_iql import build
    from genworld.algos.registry import AlgoContext
    from genworld.data.normalization import Normalizer
    from genworld.train.dd_iql import IQL_BUDGETS

    ctx = AlgoContext(
        dataset=suite,
        normalizer=Normalizer.fit(suite),
        device=torch.device("cpu"),
        scale=scale,
        out=None,
        updates=IQL_BUDGETS[scale]["steps"],  # a run's schedule (an update costs the same)
    )
    torch.manual_seed(0)
    agent = build(ctx)
    generator = torch.Generator().manual_seed(0)
    env = agent.sample(generator).env_idx
    flops, per_s = flops_and_rate(lambda: agent.update(generator), iters)
    achieved = flops * per_s / 1e9
    return {
        "rows_per_update": len(env),
        "tokens_per_update": tokens(agent.width_groups(env)),
        "tokens_per_update_padded": len(env) * (agent.obs_max + agent.act_max),
        "updates_per_s": per_s,
        "gflops_per_update": flops / 1e9,
        "gflop_per_s": achieved,
        "fraction_of_matmul_peak": achieved / peak,
    }


def run(quick: bool = False) -> BenchResult:
    """The mini preset's update (the tiny one when ``quick``), and the full preset's (the
    paper's network sizes) under ``full``."""
    suite = synthetic_suite(ENVS, steps=200 if quick else 1000, episodes=2)
    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    scale = "tiny" if quick else "mini"
    figures = {
        "envs": list(ENVS),
        **update_figures(suite, scale, 3 if quick else 20, peak),
        "matmul_peak_gflops": peak,
    }
    if not quick:
        figures["full"] = update_figures(suite, "full", 5, peak)
    grouped, padded = figures["tokens_per_update"], figures["tokens_per_update_padded"]
    ratios = [
        f"agnostic: tokens per update {grouped:,} with width groups vs {padded:,} padded to "
        f"the widest env ({grouped / padded:.2f}x)",
        f"agnostic: update {figures['gflop_per_s']:.1f} GFLOP/s = "
        f"{figures['fraction_of_matmul_peak']:.2f}x the fp32 matmul peak ({scale} preset)",
    ]
    if "full" in figures:
        full = figures["full"]
        ratios.append(
            f"agnostic: update {full['gflop_per_s']:.1f} GFLOP/s = "
            f"{full['fraction_of_matmul_peak']:.2f}x the fp32 matmul peak (full preset)"
        )
    return BenchResult(
        "agnostic",
        figures,
        notes=[
            f"agnostic: {scale} nets, {figures['rows_per_update']} rows per update over "
            f"{', '.join(ENVS)}: {figures['updates_per_s']:.2f} updates/s, "
            f"{figures['gflops_per_update']:.2f} GFLOP per update; fp32 matmul peak "
            f"{peak:.0f} GFLOP/s"
        ],
        ratios=ratios,
    )
