"""Shared references measured in the same run as each benchmark (machines are noisy)."""

from __future__ import annotations

import time

import numpy as np
import torch


def matmul_peak_gflops(n: int = 1024, repeats: int = 20) -> float:
    """fp32 GEMM throughput of this machine with the current torch thread setting."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    for _ in range(3):
        a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


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
