"""``genworld train agnostic-transfer`` (Kim & Joo 2023, §4.2): does an agnostic network
pretrained on some envs learn a held-out env, whose observation and action sizes none of them
has, faster than one trained from scratch?

Per seed, three DD-IQL runs (:mod:`genworld.train.dd_iql`), each in its own folder and each
resumable: ``seed<s>/pretrain/`` on the pretraining datasets, then ``seed<s>/finetune/`` on the
target dataset starting from the pretrained networks (every weight transfers but those of the
pretraining envs: the task embedding, or with ``--networks env-specific`` the per-env encoders
and decoders) and ``seed<s>/scratch/`` on the target from a fresh
initialisation, with the same budget, seed and evaluations (the first before any update on the
target). The report compares the two on the
target: the learning curves (mean over seeds), the mean of the last k evaluations and the area
under the curve (the mean over all evaluations), each as mean ± std over seeds, and the
fine-tuned run's lead over scratch per seed.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from genworld.config import apply, check_scale
from genworld.data.ids import parse_dataset_id
from genworld.errors import GenworldError
from genworld.utils.io import (
    check_or_write_config,
    check_report_folder,
    check_run_config,
    claim_folder,
)
from genworld.utils.provenance import provenance, runs_provenance


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
    """The first seed: seeds ``seed … seed + seeds − 1`` each seed their three runs (networks,
    batches, evaluation episodes)."""
    seeds: int = 0
    """Seeds, each a pretrain / fine-tune / scratch triple; 0 = the scale's (the paper: 4)."""
    networks: str = "agnostic"
    """agnostic (the paper's agent) or env-specific (its Multi-Env Specific Agent baseline:
    fine-tuning starts the target's encoder and decoder fresh, the shared middle from
    pretraining; Fig. 4)."""
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
        "seeds": 1,
    },
    "mini": {
        "pretrain": ("halfcheetah-medium", "walker2d-medium"),
        "target": "hopper-medium",
        "pretrain_steps": 10_000,
        "finetune_steps": 5_000,
        "eval_every": 500,
        "eval_episodes": 5,
        "seeds": 3,
    },
    "full": {
        "pretrain": ("halfcheetah-medium", "walker2d-medium", "ant-medium"),
        "target": "hopper-medium",
        "pretrain_steps": 1_000_000,
        "finetune_steps": 200_000,
        "eval_every": 10_000,
        "eval_episodes": 10,
        "seeds": 4,
    },
}
COUNTS = ("pretrain_steps", "finetune_steps", "eval_every", "eval_episodes", "last_k", "seeds")


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
    from genworld.algos.agnostic_iql import NETWORKS

    if cfg.networks not in NETWORKS:
        raise GenworldError(f"--networks {cfg.networks!r}: use {' or '.join(NETWORKS)}")
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


def stage_configs(cfg: AgnosticTransferConfig, out: Path, seed: int) -> dict[str, Any]:
    """Seed ``seed``'s DD-IQL run of each stage (in ``out``, that seed's folder): pretrain,
    finetune (from pretrain's networks), scratch."""
    from genworld.train.dd_iql import iql_run_config

    common = {
        "scale": cfg.scale,
        "seed": seed,
        "device": cfg.device,
        "threads": cfg.threads,
        "eval_episodes": cfg.eval_episodes,
    }
    if cfg.networks != "agnostic":
        common["agent"] = {"networks": cfg.networks}
    target = {**common, "datasets": (cfg.target,), "steps": cfg.finetune_steps}
    target["eval_at_start"] = True  # the curves start before any update on the target
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
    cfg: AgnosticTransferConfig,
    out: Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
) -> dict[str, Any]:
    """Every seed's three runs (each resumes from its folder), then the comparison.
    ``report_only``: train nothing; compare the seeds whose three runs are finished (a running
    or stopped study, or seed folders of other runs' logs copied into ``out``), and name the
    others. The seed range is not part of the resume check: a study may add seeds."""
    from genworld.train.dd_iql import train_agnostic_iql

    validate(cfg)
    out = Path(out)
    started = time.perf_counter()
    seeds = list(range(cfg.seed, cfg.seed + cfg.seeds))
    if report_only:
        check_report_folder(out, cfg, ignore=("seed", "seeds"))
        return _comparison(cfg, out, seeds, started, report_only=True)
    with claim_folder(out, "genworld train agnostic-transfer", cfg):
        check_or_write_config(out, cfg, ignore=("seed", "seeds"))
        for seed in seeds:
            folder = out / f"seed{seed}"
            for name, stage in stage_configs(cfg, folder, seed).items():
                if show_progress:
                    print(f"agnostic-transfer: {name} → {folder / name}", flush=True)
                train_agnostic_iql(stage, folder / name, show_progress=show_progress)
        return _comparison(cfg, out, seeds, started)


def _comparison(
    cfg: AgnosticTransferConfig,
    out: Path,
    seeds: list[int],
    started: float,
    report_only: bool = False,
) -> dict[str, Any]:
    """report.json's data from the evaluation logs of the ``seeds`` whose three runs reached
    their last update; the others are listed under ``unfinished_seeds``. ``report_only``
    (marked in the report): the runs were trained by other commands, whose code the report's
    provenance does not name."""
    from genworld.train.loop import finished_log

    logs, unfinished = {}, []
    for seed in seeds:
        folder = out / f"seed{seed}"
        stages = stage_configs(cfg, folder, seed)
        seed_logs = {
            name: finished_log(folder / name, stage.steps) for name, stage in stages.items()
        }
        if any(log is None for log in seed_logs.values()):
            unfinished.append(seed)
            continue
        for name, stage in stages.items():  # init_from: the folder it was trained in
            check_run_config(folder / name, stage, ignore=("eval_at_start", "init_from"))
        logs[seed] = seed_logs
    seeds = [s for s in seeds if s not in unfinished]
    if not seeds:
        raise GenworldError(
            f"no seed of {out} has finished its three runs yet: rerun without --report-only"
        )
    per_seed = {s: {name: curve(logs[s][name]) for name in ("finetune", "scratch")} for s in seeds}
    summaries = {
        name: [summarize(per_seed[s][name], cfg.last_k) for s in seeds]
        for name in ("finetune", "scratch")
    }
    pretrain = [logs[s]["pretrain"][-1] for s in seeds]
    report = {
        "config": asdict(cfg),
        "target": parse_dataset_id(cfg.target).spec.name,
        "seeds": seeds,
        "pretrain_score": mean_std([r["eval/normalized_score_mean"] for r in pretrain]),
        "curves": {name: mean_curve([per_seed[s][name] for s in seeds]) for name in summaries},
        "per_seed": {str(s): per_seed[s] for s in seeds},
        "summary": {name: _over_seeds(rows) for name, rows in summaries.items()},
        "lead_per_seed": [
            f["last_k"] - c["last_k"]
            for f, c in zip(summaries["finetune"], summaries["scratch"], strict=True)
        ],
    }
    if unfinished:
        report["unfinished_seeds"] = unfinished
    if report_only:
        report["report_only"] = True
        stages = ("pretrain", "finetune", "scratch")
        finished = {f"seed{s}/{n}": out / f"seed{s}" / n for s in seeds for n in stages}
        report["runs_provenance"] = runs_provenance(finished)
    # a report-only render times nothing: its runs were timed (or not) by their own commands
    report["wall_seconds"] = None if report_only else round(time.perf_counter() - started, 1)
    report["provenance"] = provenance()
    return report


def mean_std(values: list[float]) -> dict[str, float]:
    """``{"mean", "std"}`` of ``values`` (std 0 for one value)."""
    mean = sum(values) / len(values)
    return {"mean": mean, "std": (sum((v - mean) ** 2 for v in values) / len(values)) ** 0.5}


def mean_curve(curves: list[list[dict[str, float]]]) -> list[dict[str, float]]:
    """The seeds' curves averaged at each step all of them reached."""
    steps = [
        p["step"] for p in curves[0] if all(p["step"] in {q["step"] for q in c} for c in curves)
    ]
    at = [{p["step"]: p["score"] for p in c} for c in curves]
    return [{"step": step, "score": sum(a[step] for a in at) / len(at)} for step in steps]


def _over_seeds(rows: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    """Each summary figure as mean ± std over the seeds."""
    return {key: mean_std([row[key] for row in rows]) for key in rows[0]}


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
