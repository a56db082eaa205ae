"""``genworld run``: datasets → TGW world model → TGW policy (offline MBPO) → BC → report.

One world model per data quality (as the paper's Table 1), multi-env by default (one model and
one shared policy for all envs) or single-env (``setting="single"``: one model per env). Every
stage writes into ``out`` and is skipped or resumed when the command is rerun on the same ``out``.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from genworld.algos.bc import BCConfig
from genworld.algos.tgw import AGENT_PRESETS, TGWAgentConfig
from genworld.config import check_scale, merge, resolve
from genworld.data.build import ensure_built
from genworld.data.ids import QUALITIES, parse_dataset_id, size_warning
from genworld.envs.registry import get_env_spec
from genworld.errors import GenworldError
from genworld.train.cells import build_cell_agent, train_cell
from genworld.train.world_model import config_for_scale as wm_config_for_scale
from genworld.train.world_model import load_trained, train_world_model, world_model_steps
from genworld.utils.device import resolve_device
from genworld.utils.io import check_or_write_config, claim_folder
from genworld.utils.provenance import provenance


@dataclass(frozen=True)
class RunConfig:
    envs: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d")
    """Robots of the run (registry names)."""
    qualities: tuple[str, ...] = ("medium",)
    """Data qualities; each gets its own world model and policies (as the paper's Table 1)."""
    setting: str = "multi"
    """multi (one model + policy for all envs) or single (one per env)."""
    scale: str = "mini"
    """tiny (seconds, tests), mini (the quick start on 2 CPU cores) or full (the paper's)."""
    seed: int = 0
    """Seeds the world model, the policies and the evaluation episodes."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    dataset_steps: int = 100_000
    """Transitions per dataset built when missing (an existing dataset is used as it is)."""
    wm_steps: int = 0
    """World-model updates; 0 = the TGW world model's preset for the scale
    (``train.world_model.MODEL_PRESETS``; ``config_for_scale`` writes that number here)."""
    policy_updates: int = 10_000
    """SAC updates of the TGW policy in the world model."""
    bc_updates: int = 5_000
    """Updates of the BC floor on the same data."""
    eval_every: int = 1_000
    """Updates between evaluations (and checkpoints) in the real simulator."""
    eval_episodes: int = 5
    """Deterministic episodes per env per evaluation."""
    last_k: int = 3
    """Report the mean of the last k evaluations (PROTOCOL.md: k=10 at full scale)."""
    threads: int = 2
    """torch CPU threads (1 when several runs share the cores)."""
    deterministic: bool = False
    """Deterministic torch kernels; with the same seed two runs give identical report.json
    (timing fields aside), and a killed run resumes to the same result."""
    agent: TGWAgentConfig = field(default_factory=TGWAgentConfig)
    """TGW's policy learning (offline MBPO in the world model, β included)."""
    bc: BCConfig = field(default_factory=BCConfig)
    """The behaviour-cloning floor."""

    def validate(self) -> None:
        if not self.envs or not self.qualities:
            raise GenworldError("--envs and --qualities must each name at least one")
        for env in self.envs:
            get_env_spec(env)
        for q in self.qualities:
            if q not in QUALITIES:
                raise GenworldError(f"unknown quality {q!r}: choose from {', '.join(QUALITIES)}")
        if self.setting not in ("multi", "single"):
            raise GenworldError(f"--setting {self.setting!r}: choose multi or single")
        for name in (
            "dataset_steps",
            "policy_updates",
            "bc_updates",
            "eval_every",
            "eval_episodes",
            "last_k",
            "threads",
        ):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")
        self.agent.validate()


# mini: the quick start, ≤ 15 min on 2 CPU cores. full: the paper-scale protocol (GPU).
SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "dataset_steps": 3_000,
        "wm_steps": 20,
        "policy_updates": 40,
        "bc_updates": 40,
        "eval_every": 20,
        "eval_episodes": 1,
        "last_k": 2,
        "bc": {"hidden": (32, 32), "batch_size": 32},
    },
    "mini": {},
    "full": {
        "dataset_steps": 1_000_000,
        "policy_updates": 1_000_000,
        "bc_updates": 1_000_000,
        "eval_every": 10_000,
        "eval_episodes": 10,
        "last_k": 10,
    },
}


def preset(scale: str) -> dict[str, Any]:
    """``SCALES[scale]`` with the TGW agent's preset of that scale under ``agent``."""
    check_scale(scale)
    base = {"scale": scale, "agent": AGENT_PRESETS[scale], "wm_steps": world_model_steps(scale)}
    return merge(base, SCALES[scale])


def config_for_scale(scale: str, **overrides: Any) -> RunConfig:
    """The scale's preset, then ``overrides`` (None = keep); ``policy`` and ``beta`` are short
    for ``agent.mbpo.policy`` and ``agent.mbpo.beta``."""
    short = {k: overrides.pop(k, None) for k in ("policy", "beta")}
    mbpo = {k: v for k, v in short.items() if v is not None}
    return resolve(RunConfig, merge(preset(scale), {"agent": {"mbpo": mbpo}}), overrides)


def _groups(cfg: RunConfig) -> list[tuple[str, tuple[str, ...]]]:
    """(label, envs) per model: one group of all envs (multi) or one per env (single)."""
    if cfg.setting == "multi":
        return [("multi", cfg.envs)]
    return [(env, (env,)) for env in cfg.envs]


def run(cfg: RunConfig, out: Path, *, show_progress: bool = True) -> dict[str, Any]:
    """Every stage of ``genworld run`` (each resumes from ``out``); returns the report's data
    (:func:`genworld.api.run` writes it as report.md / report.json / plots)."""
    cfg.validate()
    device = resolve_device(cfg.device)  # before anything is written
    with claim_folder(out, "genworld run"):  # a second run on this folder is refused
        check_or_write_config(out, cfg)
        if show_progress:
            print(
                f"genworld run: writing into {out} (rerun the same command to resume)", flush=True
            )
        return _run(cfg, out, device, show_progress)


def _run(cfg: RunConfig, out: Path, device: torch.device, show_progress: bool) -> dict[str, Any]:
    torch.set_num_threads(cfg.threads)
    if cfg.deterministic:
        torch.use_deterministic_algorithms(True)
    started = time.perf_counter()
    ids = [f"{env}-{quality}" for quality in cfg.qualities for env in cfg.envs]
    cards = ensure_built(ids, steps=cfg.dataset_steps, seed=cfg.seed, show_progress=show_progress)
    data_cards = {
        card["dataset_id"]: {
            k: card[k] for k in ("steps", "episodes", "normalized_mean", "normalized_std")
        }
        for card in cards
    }
    too_small = [
        w
        for card in cards
        if (w := size_warning(card["dataset_id"], card["steps"], cfg.dataset_steps, cfg.scale))
    ]
    for warning in too_small:
        print(f"genworld: warning: {warning}", file=sys.stderr, flush=True)
    results: dict[str, Any] = {}
    for quality in cfg.qualities:
        for label, envs in _groups(cfg):
            folder = out / quality / label
            results[f"{quality}/{label}"] = _run_group(
                cfg, quality, envs, folder, device, show_progress
            )
    report = {
        "config": json.loads(json.dumps(asdict(cfg))),
        "datasets": data_cards,
        "dataset_warnings": too_small,
        "results": results,
        "wall_seconds": round(time.perf_counter() - started, 1),
        "provenance": "D4RL-style datasets regenerated by genworld (Gymnasium MuJoCo v5, our own behaviour policies); not D4RL's data.",
        "code": provenance(),
    }
    return report


def _run_group(
    cfg: RunConfig, quality: str, envs: tuple[str, ...], folder: Path, device, show_progress
) -> dict:
    datasets = tuple(str(parse_dataset_id(f"{env}-{quality}")) for env in envs)
    wm_cfg = wm_config_for_scale(
        cfg.scale,
        model="tgw",
        datasets=datasets,
        seed=cfg.seed,
        device=cfg.device,
        steps=cfg.wm_steps or None,
        threads=cfg.threads,  # else the world model's default (2) stays set for the whole run
    )
    train_world_model(wm_cfg, folder / "world_model", show_progress=show_progress)
    _, model, train, held = load_trained(folder / "world_model")
    model = model.to(device)
    from genworld.eval.wm_metrics import k_step_errors

    wm_errors = {
        "tgw": k_step_errors(model, held, model.normalizer, per_env=64, seed=cfg.seed),
        "mean-predictor": k_step_errors(None, held, model.normalizer, per_env=64, seed=cfg.seed),
    }
    budget = {"eval_every": cfg.eval_every, "eval_episodes": cfg.eval_episodes}
    budget |= {"last_k": cfg.last_k, "seed": cfg.seed, "show_progress": show_progress}
    results: dict[str, Any] = {"envs": list(envs)}
    for algo, label, updates, overrides in (
        ("tgw", "TGW policy", cfg.policy_updates, asdict(cfg.agent)),
        ("bc", "BC", cfg.bc_updates, asdict(cfg.bc)),
    ):
        torch.manual_seed(cfg.seed)  # each agent's own stream: BC does not follow TGW's settings
        agent = build_cell_agent(
            algo,
            train,
            device,
            scale=cfg.scale,
            seed=cfg.seed,
            normalizer=model.normalizer,
            overrides=overrides,
            world_models=lambda ctx, name: model,
            updates=updates,
        )
        trained = train_cell(
            f"{label} ({quality}, {','.join(envs)})",
            agent,
            train.specs,
            folder / algo,
            updates=updates,
            **budget,
        )
        results[algo] = {"summary": trained.summary, "curve": trained.records}
    return {
        **results,
        "world_model": wm_errors,
        "world_model_run": str((folder / "world_model").relative_to(folder.parents[1])),
    }
