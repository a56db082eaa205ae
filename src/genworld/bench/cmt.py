"""CMT (``algos/cmt.py``) on synthetic three-env data (halfcheetah, hopper, walker2d dims), as
ratios to references measured in the same run:

- pretraining: FLOP/s of stage-1 updates (counted by torch's FlopCounterMode on one update) as
  a fraction of the fp32 matmul peak (CMT's issue targets ≥ 0.3), at the mini and full presets;
- relabelling: planned states/s of the batched beam search (``cmt_planner.plan_actions``,
  ``relabel_batch`` states per search) against the same planner called one state at a time, on
  the same states, with the mini preset's network and planner.

The networks are untrained and the data random: throughput does not depend on the values.
"""

from __future__ import annotations

import time
from dataclasses import replace

import torch

from genworld.bench.common import (
    BenchResult,
    count_cpu_attention,
    flops_and_rate,
    matmul_peak_gflops,
    synthetic_suite,
)

ENVS = ("halfcheetah", "hopper", "walker2d")
SCALES = ("mini", "full")


def build_agent(suite, scale: str):
    from genworld.algos.cmt import build
    from genworld.algos.registry import AlgoContext
    from genworld.data.normalization import Normalizer

    normalizer = Normalizer.fit(suite)
    ctx = AlgoContext(suite, normalizer, torch.device("cpu"), scale=scale)
    torch.manual_seed(0)
    return build(ctx)


def pretraining(agent, iters: int) -> dict[str, float]:
    """Stage-1 updates (sampling, the three transformer passes, AdamW): updates and rows per
    second, FLOPs per update and FLOP/s."""
    generator = torch.Generator().manual_seed(0)
    flops, per_s = flops_and_rate(lambda: agent.update(generator), iters)
    return {
        "batch_size": agent.cfg.batch_size,
        "updates_per_s": per_s,
        "rows_per_s": agent.cfg.batch_size * per_s,
        "gflops_per_update": flops / 1e9,
        "gflop_per_s": flops * per_s / 1e9,
    }


def planner_states(agent, count: int):
    """``count`` dataset states spread evenly over the envs (sorted by env, as the planner's
    inputs are): each state's prompt and window from the frozen network."""
    dataset = agent.dataset
    n = dataset.num_envs
    counts = [count // n + (k < count % n) for k in range(n)]
    generator = torch.Generator().manual_seed(0)
    current = [
        torch.randint(len(env), (c,), generator=generator)
        for env, c in zip(dataset.envs, counts, strict=True)
    ]
    env_idx = torch.repeat_interleave(torch.arange(n), torch.tensor(counts))
    return agent.contexts(env_idx, torch.cat(current), torch.zeros(count, dataset.act_max))


def first_states(states, count: int):
    from genworld.algos.cmt_planner import TuningSet

    rows = slice(0, count)
    window = tuple(v[rows] for v in states.window)
    return TuningSet(states.prompts[rows], window, states.env_idx[rows], states.actions[rows])


def planning(agent, states, relabel_batch: int) -> dict[str, float]:
    """Planned states per second of ``plan_actions`` over ``states`` with ``relabel_batch``
    states per beam search, and its FLOPs per state (counted on a warm-up search of
    ``relabel_batch`` states, outside the timing)."""
    from torch.utils.flop_counter import FlopCounterMode

    from genworld.algos.cmt_planner import plan_actions

    cfg = replace(agent.cfg, relabel_batch=relabel_batch)
    generator = torch.Generator().manual_seed(0)
    noise = 0.1 * agent.act_masks  # candidates' std: its value does not change the cost

    def plan(s) -> None:
        plan_actions(agent.net, agent.normalizer, agent.act_masks, cfg, s, noise, generator)

    count_cpu_attention()
    counter = FlopCounterMode(display=False)
    with counter:
        plan(first_states(states, relabel_batch))
    start = time.perf_counter()
    plan(states)
    per_s = len(states.env_idx) / (time.perf_counter() - start)
    flops = counter.get_total_flops() / relabel_batch
    return {
        "states_per_s": per_s,
        "gflops_per_state": flops / 1e9,
        "gflop_per_s": flops * per_s / 1e9,
    }


def run(quick: bool = False) -> BenchResult:
    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    suite = synthetic_suite(ENVS, steps=300 if quick else 1000, episodes=2)
    res = BenchResult("cmt", {"envs": list(ENVS), "matmul_peak_gflops": peak, "pretraining": {}})
    res.notes.append(f"cmt: fp32 matmul peak {peak:.0f} GFLOP/s (the reference)")
    agents = {scale: build_agent(suite, scale) for scale in SCALES}
    for scale, agent in agents.items():
        train = pretraining(agent, 3 if quick else 10)
        fraction = train["gflop_per_s"] / peak
        res.figures["pretraining"][scale] = {**train, "fraction_of_matmul_peak": fraction}
        res.notes.append(
            f"cmt/pretraining-{scale}: {train['updates_per_s']:.2f} updates/s of "
            f"{train['batch_size']} rows, {train['gflops_per_update']:.2f} GFLOP per update"
        )
        res.ratios.append(
            f"cmt/pretraining-{scale}: {train['gflop_per_s']:.1f} GFLOP/s = {fraction:.2f}x "
            "the fp32 matmul peak"
        )
    agent = agents["mini"]
    cfg = agent.cfg
    states = planner_states(agent, cfg.relabel_batch if quick else cfg.relabel_states)
    batched = planning(agent, states, cfg.relabel_batch)
    one_at_a_time = planning(agent, states, 1)
    ratio = batched["states_per_s"] / one_at_a_time["states_per_s"]
    res.figures["relabelling"] = {
        "states": len(states.env_idx),
        "relabel_batch": cfg.relabel_batch,
        "horizon": cfg.planner_horizon,
        "beam_width": cfg.beam_width,
        "expand": cfg.expand,
        "batched": batched,
        "one_at_a_time": one_at_a_time,
        "ratio": ratio,
    }
    res.notes.append(
        f"cmt/relabelling: {len(states.env_idx)} states, mini network and planner (horizon "
        f"{cfg.planner_horizon}, beam {cfg.beam_width}, expand {cfg.expand}), "
        f"{batched['gflops_per_state']:.2f} GFLOP per state: batched "
        f"{batched['states_per_s']:.1f} states/s ({batched['gflop_per_s']:.1f} GFLOP/s), one "
        f"state at a time {one_at_a_time['states_per_s']:.1f} states/s "
        f"({one_at_a_time['gflop_per_s']:.1f} GFLOP/s)"
    )
    res.ratios.append(
        f"cmt/relabelling: {cfg.relabel_batch} states per beam search = {ratio:.2f}x the "
        "planner called one state at a time"
    )
    return res
