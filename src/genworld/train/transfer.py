"""``genworld train agnostic-transfer`` (Kim & Joo 2023, §4.2): does an agnostic network
pretrained on some envs learn a held-out env, whose observation and action sizes none of them
has, faster than one trained from scratch?

Three DD-IQL runs (:mod:`genworld.train.dd_iql`), each in its own folder and each resumable:
``pretrain/`` on the pretraining datasets, then ``finetune/`` on the target dataset starting
from the pretrained networks (every weight transfers but the task embedding, sized for another
env set) and ``scratch/`` on the target from a fresh initialisation, with the same budget, seed
and evaluations. The report compares the two on the target: the learning curves, the mean of
the last k evaluations and the area under the curve (the mean over all evaluations).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genworld.config import apply, check_scale
from genworld.data.ids import parse_dataset_id
from genworld.errors import GenworldError
from genworld.utils.io import check_or_write_config, claim_folder
from genworld.utils.provenance import provenance


@dataclass(frozen=True)
class AgnosticTransferConfig:
    """Pretrain on ``pretrain``, then fine-tune on ``target`` against training it from scratch."""

    pretrain: tuple[str, ...] = ()
    """Datasets of the pretraining envs; empty = the scale's."""
    target: str = ""
    """The held-out env's dataset (an observation/action size no pretraining env has);
    empty = the scale's."""
    scale: str = "mini"
    """tiny | mini | full: the agent preset and the budgets below."""
    pretrain_steps: int = 0
    """Pretraining updates; 0 = the scale's."""
    finetune_steps: int = 0
    """Updates on the target, for fine-tuning and for the from-scratch run alike; 0 = the
    scale's."""
    eval_every: int = 0
    """Updates between evaluations (and checkpoints) on the target; 0 = the scale's."""
    eval_episodes: int = 0
    """Episodes per evaluation; 0 = the scale's."""
    last_k: int = 3
    """The final score of a run: the mean of its last k evaluations."""
    seed: int = 0
    """Seeds all three runs (networks, batches, evaluation episodes)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """torch threads."""


TRANSFER_BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "pretrain": ("halfcheetah-random", "walker2d-random"),
        "target": "hopper-random",
        "pretrain_steps": 20,
        "finetune_steps": 20,
        "eval_every": 10,
        "eval_episodes": 1,
    },
    "mini": {
        "pretrain": ("halfcheetah-medium", "walker2d-medium"),
        "target": "hopper-medium",
        "pretrain_steps": 10_000,
        "finetune_steps": 5_000,
        "eval_every": 500,
        "eval_episodes": 5,
    },
    "full": {
        "pretrain": ("halfcheetah-medium", "walker2d-medium", "ant-medium"),
        "target": "hopper-medium",
        "pretrain_steps": 1_000_000,
        "finetune_steps": 200_000,
        "eval_every": 10_000,
        "eval_episodes": 10,
    },
}
COUNTS = ("pretrain_steps", "finetune_steps", "eval_every", "eval_episodes", "last_k")


def transfer_config(**fields: Any) -> AgnosticTransferConfig:
    """The scale's budget under ``fields`` (a count given as 0 or below is an error)."""
    from genworld.train.dd_iql import check_given_counts

    check_given_counts(fields, COUNTS)
    cfg = apply(AgnosticTransferConfig(), fields)
    check_scale(cfg.scale)
    budget = TRANSFER_BUDGETS[cfg.scale]
    cfg = apply(cfg, {k: v for k, v in budget.items() if not getattr(cfg, k)})
    validate(cfg)
    return cfg


def validate(cfg: AgnosticTransferConfig) -> None:
    target = parse_dataset_id(cfg.target).spec
    pretrain = [parse_dataset_id(x).spec for x in cfg.pretrain]
    if not pretrain:
        raise GenworldError("--pretrain is empty: give the pretraining datasets")
    same = [s.name for s in pretrain if (s.obs_dim, s.act_dim) == (target.obs_dim, target.act_dim)]
    if target.name in {s.name for s in pretrain} or same:
        raise GenworldError(
            f"--target {cfg.target} has the sizes of a pretraining env ({', '.join(same) or target.name}): "
            "transfer is to an env of other observation/action sizes; choose another --target"
        )


def stage_configs(cfg: AgnosticTransferConfig, out: Path) -> dict[str, Any]:
    """The DD-IQL run of each stage: pretrain, finetune (from pretrain's networks), scratch."""
    from genworld.train.dd_iql import iql_run_config

    common = {
        "scale": cfg.scale,
        "seed": cfg.seed,
        "device": cfg.device,
        "threads": cfg.threads,
        "eval_episodes": cfg.eval_episodes,
    }
    target = {**common, "datasets": (cfg.target,), "steps": cfg.finetune_steps}
    target["eval_every"] = target["log_every"] = cfg.eval_every
    pretrain_every = min(cfg.pretrain_steps, max(cfg.eval_every, cfg.pretrain_steps // 5))
    return {
        "pretrain": iql_run_config(
            **common,
            datasets=tuple(cfg.pretrain),
            steps=cfg.pretrain_steps,
            eval_every=pretrain_every,
            log_every=pretrain_every,
        ),
        "finetune": iql_run_config(**target, init_from=str(out / "pretrain")),
        "scratch": iql_run_config(**target),
    }


def run_transfer(
    cfg: AgnosticTransferConfig, out: Path, *, show_progress: bool = True
) -> dict[str, Any]:
    """The three runs (each resumes from its folder), then the comparison (report.json)."""
    from genworld.train.dd_iql import train_agnostic_iql
    from genworld.train.loop import read_eval

    validate(cfg)
    out = Path(out)
    started = time.perf_counter()
    with claim_folder(out, "genworld train agnostic-transfer", cfg):
        check_or_write_config(out, cfg)
        stages = stage_configs(cfg, out)
        for name, stage in stages.items():
            if show_progress:
                print(f"agnostic-transfer: {name} → {out / name}", flush=True)
            train_agnostic_iql(stage, out / name, show_progress=show_progress)
        curves = {name: curve(read_eval(out / name)) for name in ("finetune", "scratch")}
        report = {
            "config": asdict(cfg),
            "target": parse_dataset_id(cfg.target).spec.name,
            "pretrain": read_eval(out / "pretrain")[-1],
            "curves": curves,
            "summary": {name: summarize(points, cfg.last_k) for name, points in curves.items()},
            "wall_seconds": round(time.perf_counter() - started, 1),
            "provenance": provenance(),
        }
    return report


def curve(records: list[dict]) -> list[dict[str, float]]:
    """(update, the target's normalized score) per evaluation."""
    return [{"step": r["step"], "score": r["eval/normalized_score_mean"]} for r in records]


def summarize(points: list[dict[str, float]], last_k: int) -> dict[str, float]:
    scores = [p["score"] for p in points]
    return {
        "last_k": sum(scores[-last_k:]) / len(scores[-last_k:]),
        "area": sum(scores) / len(scores),
        "first": scores[0],
    }
