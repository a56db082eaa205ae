"""``genworld train agnostic-ablations`` (Kim & Joo 2023, §4.3): the agnostic agent against
its ablations on the same datasets, budget and evaluations, each a DD-IQL run
(:mod:`genworld.train.dd_iql`) in its own folder, each resumable:

- ``agnostic``: one agent for every dataset (the paper's agent);
- ``bigru``: the same with the state encoder's S4D blocks replaced by bidirectional GRUs (the
  paper's Bi-GRU ablation; ``AgnosticConfig.sequence_layer``);
- ``env-specific``: one agnostic agent per dataset (the environment-specific-agent baseline),
  each trained on its own with as many rows per update of its env as the multi-env agent
  gives each env (``batch_size / datasets``).

The report compares the variants per env: the mean of each run's last k evaluations and the
learning curves (the env's normalized score against updates).
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

VARIANTS = ("agnostic", "bigru", "env-specific")


@dataclass(frozen=True)
class AgnosticAblationsConfig:
    """The agnostic agent and its ablations on ``datasets``."""

    datasets: tuple[str, ...] = ()
    """One dataset per env; empty = the scale's DD-IQL datasets."""
    variants: tuple[str, ...] = VARIANTS
    """Which of agnostic, bigru, env-specific."""
    scale: str = "mini"
    """tiny | mini | full: the agent preset and DD-IQL's budget at that scale."""
    steps: int = 0
    """Updates of every run; 0 = the scale's."""
    last_k: int = 3
    """A run's score per env: the mean of its last k evaluations."""
    seed: int = 0
    """Seeds every run (networks, batches, evaluation episodes)."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """torch threads."""

    def validate(self) -> None:
        check_scale(self.scale)
        for v in self.variants:
            if v not in VARIANTS:
                raise GenworldError(f"unknown variant {v!r}: choose from {', '.join(VARIANTS)}")
        if not self.variants:
            raise GenworldError("--variants is empty: give at least one")
        if self.last_k <= 0:
            raise GenworldError(f"--last_k must be positive, got {self.last_k}")


def ablations_config(**fields: Any) -> AgnosticAblationsConfig:
    """The scale's datasets and budget under ``fields`` (``steps`` given as 0 is an error)."""
    from genworld.train.dd_iql import IQL_BUDGETS, check_given_counts

    check_given_counts(fields, ("steps",))
    cfg = apply(AgnosticAblationsConfig(), fields)
    check_scale(cfg.scale)
    budget = IQL_BUDGETS[cfg.scale]
    cfg = apply(cfg, {k: budget[k] for k in ("datasets", "steps") if not getattr(cfg, k)})
    cfg.validate()
    return cfg


def stage_configs(cfg: AgnosticAblationsConfig) -> dict[str, Any]:
    """Each run's DD-IQL config, by its folder (``env-specific/<env>`` per dataset)."""
    from genworld.algos.agnostic_iql import PRESETS
    from genworld.train.dd_iql import iql_run_config

    common = {"scale": cfg.scale, "seed": cfg.seed, "device": cfg.device, "threads": cfg.threads}
    common["steps"] = cfg.steps
    runs: dict[str, Any] = {}
    if "agnostic" in cfg.variants:
        runs["agnostic"] = iql_run_config(**common, datasets=cfg.datasets)
    if "bigru" in cfg.variants:
        bigru = {"net": {"sequence_layer": "bigru"}}
        runs["bigru"] = iql_run_config(**common, datasets=cfg.datasets, agent=bigru)
    if "env-specific" in cfg.variants:
        batch = PRESETS[cfg.scale].get("batch_size", 256)  # the multi-env agent's rows
        rows = {"batch_size": max(1, batch // len(cfg.datasets))}
        for dataset in cfg.datasets:
            env = parse_dataset_id(dataset).env
            runs[f"env-specific/{env}"] = iql_run_config(**common, datasets=(dataset,), agent=rows)
    return runs


def run_ablations(
    cfg: AgnosticAblationsConfig, out: Path, *, show_progress: bool = True
) -> dict[str, Any]:
    """Every run (each resumes from its folder), then the comparison (report.json's data)."""
    from genworld.train.dd_iql import train_agnostic_iql
    from genworld.train.loop import read_eval

    cfg.validate()
    out = Path(out)
    started = time.perf_counter()
    with claim_folder(out, "genworld train agnostic-ablations", cfg):
        check_or_write_config(out, cfg)
        runs = stage_configs(cfg)
        for name, run in runs.items():
            if show_progress:
                print(f"agnostic-ablations: {name} → {out / name}", flush=True)
            train_agnostic_iql(run, out / name, show_progress=show_progress)
        envs = [parse_dataset_id(d).spec.name for d in cfg.datasets]
        curves: dict[str, dict[str, list[dict[str, float]]]] = {}
        for name in runs:
            variant = name.partition("/")[0]
            for record in read_eval(out / name):
                for env in envs:
                    key = f"eval/{env}/normalized_score"
                    if key in record:
                        point = {"step": record["step"], "score": record[key]}
                        curves.setdefault(variant, {}).setdefault(env, []).append(point)
        summary = {
            variant: {env: _last_k(points, cfg.last_k) for env, points in per_env.items()}
            for variant, per_env in curves.items()
        }
        return {
            "config": asdict(cfg),
            "envs": envs,
            "curves": curves,
            "summary": summary,
            "wall_seconds": round(time.perf_counter() - started, 1),
            "provenance": provenance(),
        }


def _last_k(points: list[dict[str, float]], k: int) -> float:
    tail = [p["score"] for p in points][-k:]
    return sum(tail) / len(tail)
