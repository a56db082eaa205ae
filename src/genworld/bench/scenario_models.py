"""The world models of MrCoM's and WPT's studies (MrCoM, the RSSM, CaDM) on DMC-shaped synthetic
data (cheetah-run and walker-walk dims), as ratios to references measured in the same run:

- training: FLOP/s (counted by torch's FlopCounterMode on one update) as a fraction of the fp32
  matmul peak (MrCoM's issue targets ≥ 0.4), at the mini preset and at the full one (the
  papers' sizes: MrCoM's App. D, DreamerV3's small RSSM) under ``full``;
- imagination: model transitions/s of ``rollouts`` parallel rollouts (mini preset) against raw
  dm_control stepping of cheetah-run (one env, uniform random actions).
"""

from __future__ import annotations

import torch

from genworld.bench.common import BenchResult, matmul_peak_gflops, synthetic_suite
from genworld.bench.imagination import rollouts_per_s
from genworld.bench.world_model import model_training

MODELS = ("mrcom", "rssm", "cadm")
ENVS = ("dmc-cheetah-run", "dmc-walker-walk")


def _model(kind: str, suite, scale: str = "mini"):
    from genworld.data.normalization import Normalizer
    from genworld.train.world_model import build_model, config_for_scale

    cfg = config_for_scale(scale, check_ids=False, model=kind)
    torch.manual_seed(0)
    return cfg, build_model(cfg, suite.specs, Normalizer.fit(suite))


def training(kind: str, suite, iters: int, scale: str = "mini") -> dict[str, float]:
    cfg, model = _model(kind, suite, scale)
    return model_training(model, suite, cfg.batch_size, cfg.lr, iters)


def imagined_per_s(kind: str, suite, rollouts: int, horizon: int) -> float:
    return rollouts_per_s(_model(kind, suite)[1], suite, rollouts, horizon)


def run(quick: bool = False) -> BenchResult:
    from genworld.bench.data_build import dm_control_steps_per_s

    peak = matmul_peak_gflops(repeats=5 if quick else 20)
    real = dm_control_steps_per_s("dmc-cheetah-run", 2_000 if quick else 10_000)
    suite = synthetic_suite(ENVS, steps=300 if quick else 1000, episodes=2)
    rollouts, horizon = (500, 2) if quick else (5_000, 5)
    res = BenchResult(
        "scenario_models",
        {"matmul_peak_gflops": peak, "dm_control_steps_per_s": real, "rollouts": rollouts},
    )
    res.notes.append(
        f"scenario_models: fp32 matmul peak {peak:.0f} GFLOP/s; raw dm_control cheetah-run "
        f"{real:,.0f} steps/s (the references)"
    )
    for kind in MODELS:
        train = training(kind, suite, 3 if quick else 10)
        full = training(kind, suite, 1 if quick else 5, "full")
        imagined = imagined_per_s(kind, suite, rollouts, horizon)
        res.figures[kind] = {
            **train,
            "fraction_of_matmul_peak": train["gflop_per_s"] / peak,
            "imagined_per_s": imagined,
            "imagination_ratio": imagined / real,
            "full": {**full, "fraction_of_matmul_peak": full["gflop_per_s"] / peak},
        }
        res.ratios.append(
            f"scenario_models/{kind}: training {train['gflop_per_s']:.1f} GFLOP/s = "
            f"{train['gflop_per_s'] / peak:.2f}x matmul peak (full size "
            f"{full['gflop_per_s'] / peak:.2f}x); imagination {imagined:,.0f} "
            f"transitions/s = {imagined / real:.2f}x raw dm_control stepping"
        )
    return res
