"""Imagined transitions/s of the TGW world model (≥10,000 parallel rollouts, ensemble, prompt
memory) as a ratio to raw MuJoCo stepping measured in the same run."""

from __future__ import annotations

import time

import torch

from genworld.bench.common import BenchResult, real_steps_per_s, synthetic_suite
from genworld.bench.world_model import MINI


def imagined_per_s(suite, cfg, rollouts: int, horizon: int) -> float:
    from genworld.data.normalization import Normalizer
    from genworld.world_models.tgw import TGWWorldModel

    model = TGWWorldModel(suite.specs, cfg, Normalizer.fit(suite))
    return rollouts_per_s(model, suite, rollouts, horizon)


def rollouts_per_s(model, suite, rollouts: int, horizon: int) -> float:
    """Imagined transitions/s of any world model: ``rollouts`` parallel rollouts from dataset
    start states, ``horizon`` steps after a warm-up step (the models read their observations
    from their own rollout state)."""
    from genworld.world_models.prompt_memory import sample_start_states

    model.eval()
    g = torch.Generator().manual_seed(0)
    env_idx, index = sample_start_states(suite, rollouts, g)
    state = model.encode(suite, env_idx, index)
    actions = torch.rand(rollouts, suite.act_max, generator=g) * 2 - 1
    with torch.no_grad():
        model.next(state, None, actions, env_idx, g)  # warm-up
        start = time.perf_counter()
        for _ in range(horizon):
            state = model.next(state, None, actions, env_idx, g).state
    return rollouts * horizon / (time.perf_counter() - start)


def run(quick: bool = False) -> BenchResult:
    from genworld.world_models.tgw import TGWConfig

    rollouts = 2_000 if quick else 10_000
    real = real_steps_per_s(steps=2_000 if quick else 5_000)
    suite = synthetic_suite(steps=300)
    res = BenchResult("imagination", {"real_mujoco_steps_per_s": real, "rollouts": rollouts})
    res.notes.append(f"imagination: raw MuJoCo halfcheetah {real:,.0f} steps/s (reference)")
    for name, cfg in {"paper-default": TGWConfig(), "mini": TGWConfig(**MINI)}.items():
        imag = imagined_per_s(suite, cfg, rollouts, 2 if quick else 3)
        res.figures[name] = {"imagined_per_s": imag, "ratio": imag / real}
        res.ratios.append(
            f"imagination/tgw-{name}: {imag:,.0f} transitions/s ({rollouts} rollouts) = "
            f"{imag / real:.2f}x real MuJoCo stepping"
        )
    res.figures["ratio"] = res.figures["mini"]["ratio"]
    return res
