"""Shared references measured in the same run as each benchmark (machines are noisy), and the
result type every benchmark returns."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch


@dataclass
class BenchResult:
    name: str
    figures: dict[str, Any] = field(default_factory=dict)
    """Everything measured (JSON)."""
    notes: list[str] = field(default_factory=list)
    """Context lines: absolute numbers, references (printed first)."""
    ratios: list[str] = field(default_factory=list)
    """The ratio lines against the in-run reference (printed last)."""


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """fp32 GEMM throughput of this machine with the current torch thread setting."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


_CPU_ATTENTION_COUNTED = False


def count_cpu_attention() -> None:
    """Teach torch's FlopCounterMode the CPU flash-attention kernels (``scaled_dot_product_
    attention`` on CPU), which it does not count: with torch's own SDPA formulas, forward and
    backward. Idempotent."""
    global _CPU_ATTENTION_COUNTED
    if _CPU_ATTENTION_COUNTED:
        return
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu)
    def _forward(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
        return fc.sdpa_flop_count(query_shape, key_shape, value_shape)

    @fc.register_flop_formula(aten._scaled_dot_product_flash_attention_for_cpu_backward)
    def _backward(grad_shape, query_shape, key_shape, value_shape, *args, **kwargs) -> int:
        return fc.sdpa_backward_flop_count(grad_shape, query_shape, key_shape, value_shape)

    _CPU_ATTENTION_COUNTED = True


def flops_and_rate(update: Callable[[], Any], iters: int) -> tuple[float, float]:
    """The FLOPs of one ``update`` (torch's FlopCounterMode, CPU attention included, after a
    warm-up call) and its calls per second over ``iters`` more."""
    from torch.utils.flop_counter import FlopCounterMode

    count_cpu_attention()
    update()
    counter = FlopCounterMode(display=False)
    with counter:
        update()
    return counter.get_total_flops(), rate(update, iters, warmup=1)


def real_steps_per_s(env_name: str = "halfcheetah", steps: int = 5_000) -> float:
    """Raw MuJoCo stepping with uniform random actions, one env (the physical reference)."""
    from genworld.envs import make_env

    env = make_env(env_name)
    env.reset(seed=0)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, env.action_space.shape[0]))
    start = time.perf_counter()
    for t in range(steps):
        _, _, terminated, truncated, _ = env.step(actions[t])
        if terminated or truncated:
            env.reset()
    return steps / (time.perf_counter() - start)


def rate(fn: Callable[[], Any], iters: int, warmup: int = 2) -> float:
    """Calls per second of ``fn`` after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    return iters / (time.perf_counter() - start)


def synthetic_suite(
    envs=("halfcheetah", "hopper", "walker2d"), steps: int = 1000, episodes: int = 4
):
    """Random-valued episodes with the envs' true dims (throughput does not depend on values)."""
    from genworld.data.synthetic import random_dataset

    return random_dataset(envs, episodes, steps)


def matmul_peak(quick: bool = False) -> BenchResult:
    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    threads = torch.get_num_threads()
    return BenchResult(
        "matmul_peak",
        {"gflops": peak, "threads": threads},
        ratios=[
            f"matmul_peak: fp32 GEMM {peak:.0f} GFLOP/s on {threads} thread(s) (the reference)"
        ],
    )
