"""``genworld train agnostic-ablations`` (Kim & Joo 2023, §4.3 and Table 1): the agnostic agent
against its ablations and single-env IQL on the same datasets, budget and evaluations, each run
in its own folder per seed (``<variant>[/<env>]/seed<s>``), each resumable:

- ``agnostic``: one DD-IQL agent (:mod:`genworld.train.dd_iql`) for every dataset (the paper's
  agent);
- ``bigru``: the same with the state encoder's S4D blocks replaced by bidirectional GRUs (the
  paper's Bi-GRU ablation; ``AgnosticConfig.sequence_layer``);
- ``env-specific``: the paper's Multi-Env Specific Agent (§4.2, Fig. 3): one DD-IQL agent for
  every dataset whose networks have an encoder and a decoder per env around a shared middle
  (:mod:`genworld.nn.env_specific`), trained exactly as the agnostic agent;
- ``iql``: plain padded-MLP IQL (:mod:`genworld.algos.iql`) per dataset, the paper's single-env
  IQL reference (Table 1: DD-IQL 96.22 vs IQL 107.54), matched to the agnostic agent: its rows
  per env per update, its per-network gradient clip, its actor learning-rate schedule, its
  updates and its evaluations (episode ``i`` seeded ``seed*1000 + i``); only the networks differ.

The report compares the variants per env: the mean over seeds of each run's last-k evaluations,
the learning curves (mean over seeds), and, when ``agnostic`` and ``iql`` both ran, the ratio of
their mean scores with a bootstrap CI over seeds (:func:`score_ratio`).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genworld.config import apply, check_scale, resolve
from genworld.data.ids import parse_dataset_id
from genworld.errors import GenworldError
from genworld.utils.io import (
    check_or_write_config,
    check_report_folder,
    check_run_config,
    claim_folder,
)
from genworld.utils.provenance import provenance, record_provenance, runs_provenance

VARIANTS = ("agnostic", "bigru", "env-specific", "iql")

IGNORED = ("seed", "seeds", "variants")
"""Not part of a study's resume check: each run has its own folder, so a study may add
variants and seeds."""

RATIO_REPS = 2000
"""Bootstrap resamples of the agnostic / single-env IQL ratio's CI."""


@dataclass(frozen=True)
class AgnosticAblationsConfig:
    """The agnostic agent, its ablations and single-env IQL on ``datasets``."""

    datasets: tuple[str, ...] = ()
    """One dataset per env; empty = the scale's DD-IQL datasets."""
    variants: tuple[str, ...] = VARIANTS
    """Which of agnostic, bigru, env-specific, iql."""
    scale: str = "mini"
    """tiny | mini | full: the agent presets and DD-IQL's budget at that scale."""
    steps: int = 0
    """Updates of every run; 0 = the scale's."""
    last_k: int = 3
    """A run's score per env: the mean of its last k evaluations."""
    seed: int = 0
    """The first seed: runs are seeded ``seed … seed + seeds − 1`` (a study may add seeds)."""
    seeds: int = 1
    """Seeds per run (networks, batches, evaluation episodes); the ratio's CI needs ≥ 2."""
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
        if self.seeds <= 0:
            raise GenworldError(f"--seeds must be positive, got {self.seeds}")


@dataclass(frozen=True)
class SingleEnvIQLRun:
    """One run of the ``iql`` arm: plain padded-MLP IQL on one dataset, one seed."""

    dataset: str
    """The dataset id (one env)."""
    scale: str
    """The IQL preset's scale (tiny | mini | full)."""
    seed: int
    """Seeds the networks, the batches and the evaluation episodes."""
    steps: int
    """Gradient updates."""
    eval_every: int
    """Updates between evaluations + checkpoints."""
    eval_episodes: int
    """Episodes per evaluation."""
    dataset_steps: int
    """Transitions when the dataset is built; 0 = the dataset's default size."""
    overrides: dict[str, Any]
    """IQLConfig overrides matching the agnostic agent (batch, clip, lr schedule)."""
    device: str
    """auto (CUDA when present), cpu or cuda."""
    threads: int
    """torch threads."""


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


def matched_iql_overrides(cfg: AgnosticAblationsConfig) -> dict[str, Any]:
    """The single-env IQL settings that match the agnostic agent at ``cfg.scale``: the rows
    per update it gives each env, its gradient-norm clip and its actor lr decay."""
    from genworld.algos.agnostic_iql import PRESETS, AgnosticIQLConfig

    agnostic = resolve(AgnosticIQLConfig, PRESETS.get(cfg.scale, {}))
    return {
        "batch_size": max(1, agnostic.batch_size // len(cfg.datasets)),
        "max_grad_norm": agnostic.max_grad_norm,
        # the length the agnostic agent decays over (its own, or the run's updates)
        "actor_lr_decay_steps": agnostic.actor_lr_decay_steps or cfg.steps,
    }


def stage_configs(cfg: AgnosticAblationsConfig) -> dict[str, Any]:
    """Each run's config by its folder: a DD-IQL config (``agnostic/seed<s>``, ``bigru/…``,
    ``env-specific/…``) or a :class:`SingleEnvIQLRun` (``iql/<env>/seed<s>``)."""
    from genworld.train.dd_iql import IQL_BUDGETS, iql_run_config

    matched = matched_iql_overrides(cfg)
    budget = IQL_BUDGETS[cfg.scale]
    runs: dict[str, Any] = {}
    for seed in range(cfg.seed, cfg.seed + cfg.seeds):
        common = {"scale": cfg.scale, "seed": seed, "steps": cfg.steps}
        common |= {"device": cfg.device, "threads": cfg.threads}
        if "agnostic" in cfg.variants:
            runs[f"agnostic/seed{seed}"] = iql_run_config(**common, datasets=cfg.datasets)
        if "bigru" in cfg.variants:
            bigru = {"net": {"sequence_layer": "bigru"}}
            runs[f"bigru/seed{seed}"] = iql_run_config(**common, datasets=cfg.datasets, agent=bigru)
        if "env-specific" in cfg.variants:
            specific = {"networks": "env-specific"}
            runs[f"env-specific/seed{seed}"] = iql_run_config(
                **common, datasets=cfg.datasets, agent=specific
            )
        for dataset in cfg.datasets:
            env = parse_dataset_id(dataset).env
            if "iql" in cfg.variants:
                runs[f"iql/{env}/seed{seed}"] = SingleEnvIQLRun(
                    dataset=dataset,
                    scale=cfg.scale,
                    seed=seed,
                    steps=cfg.steps or budget["steps"],
                    eval_every=budget["eval_every"],
                    eval_episodes=budget["eval_episodes"],
                    dataset_steps=budget.get("dataset_steps", 0),
                    overrides=matched,
                    device=cfg.device,
                    threads=cfg.threads,
                )
    return runs


def train_single_env_iql(
    run: SingleEnvIQLRun, out: Path, *, last_k: int, show_progress: bool = False
) -> list[dict]:
    """``run``'s IQL agent trained and evaluated in ``out`` (eval.jsonl, checkpoints; resumable,
    a finished run is not trained again); returns its evaluation records."""
    import torch

    from genworld.data.build import ensure_built
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.train.cells import build_cell_agent, train_cell
    from genworld.train.loop import log_reaches
    from genworld.utils.device import resolve_device

    out = Path(out)
    check_or_write_config(out, run)
    trains = not log_reaches(out, run.steps)  # a finished run keeps the code that made it
    torch.set_num_threads(run.threads)
    ensure_built([run.dataset], steps=run.dataset_steps or None, show_progress=show_progress)
    dataset = MultiEnvDataset.from_minari([run.dataset])
    torch.manual_seed(run.seed)
    agent = build_cell_agent(
        "iql",
        dataset,
        resolve_device(run.device),
        scale=run.scale,
        seed=run.seed,
        overrides=run.overrides,
        updates=run.steps,
    )
    records = train_cell(
        f"iql {parse_dataset_id(run.dataset).env} s{run.seed}",
        agent,
        dataset.specs,
        out,
        updates=run.steps,
        eval_every=run.eval_every,
        eval_episodes=run.eval_episodes,
        last_k=last_k,
        seed=run.seed,
        show_progress=show_progress,
    ).records
    if trains:
        record_provenance(out)
    return records


def run_ablations(
    cfg: AgnosticAblationsConfig,
    out: Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
) -> dict[str, Any]:
    """Every run (each resumes from its folder), then the comparison (report.json's data).
    ``report_only``: train nothing; compare the runs finished so far (a running or stopped
    study, or a record's evaluation logs copied into ``out``) and name the others."""
    from genworld.train.dd_iql import train_agnostic_iql

    cfg.validate()
    out = Path(out)
    started = time.perf_counter()
    runs = stage_configs(cfg)
    if report_only:
        check_report_folder(out, cfg, ignore=IGNORED)
        return _comparison(cfg, out, runs, started, report_only=True)
    with claim_folder(out, "genworld train agnostic-ablations", cfg):
        check_or_write_config(out, cfg, ignore=IGNORED)
        for name, run in runs.items():
            if show_progress:
                print(f"agnostic-ablations: {name} → {out / name}", flush=True)
            if isinstance(run, SingleEnvIQLRun):
                train_single_env_iql(
                    run, out / name, last_k=cfg.last_k, show_progress=show_progress
                )
            else:
                train_agnostic_iql(run, out / name, show_progress=show_progress)
        return _comparison(cfg, out, runs, started)


def _comparison(
    cfg: AgnosticAblationsConfig,
    out: Path,
    runs: dict[str, Any],
    started: float,
    report_only: bool = False,
) -> dict[str, Any]:
    """report.json's data from the evaluation logs of the finished ``runs`` (those whose log
    reaches their last update); the others are listed under ``unfinished``. ``report_only``
    (marked in the report): the runs were trained by other commands, whose code the report's
    provenance does not name."""
    from genworld.train.loop import finished_log

    envs = [parse_dataset_id(d).spec.name for d in cfg.datasets]
    # runs[variant][env][seed] = that run's (step, score) points
    seed_curves: dict[str, dict[str, dict[int, list[tuple[int, float]]]]] = {}
    unfinished = []
    for name, run in runs.items():
        variant = name.partition("/")[0]
        records = finished_log(out / name, run.steps)
        if records is None:
            unfinished.append(name)
            continue
        check_run_config(out / name, run, ignore=("eval_at_start",))
        for record in records:
            for env in envs:
                key = f"eval/{env}/normalized_score"
                if key in record:
                    per_seed = seed_curves.setdefault(variant, {}).setdefault(env, {})
                    per_seed.setdefault(run.seed, []).append((record["step"], record[key]))
    if not seed_curves:
        raise GenworldError(f"no run of {out} has finished yet: rerun without --report-only")
    per_seed_last_k = {
        variant: {
            env: [_last_k(points, cfg.last_k) for _, points in sorted(seeds.items())]
            for env, seeds in per_env.items()
        }
        for variant, per_env in seed_curves.items()
    }
    report = {
        "config": asdict(cfg),
        "envs": envs,
        "curves": {
            variant: {env: _mean_curve(seeds) for env, seeds in per_env.items()}
            for variant, per_env in seed_curves.items()
        },
        "summary": {
            variant: {env: float(np.mean(values)) for env, values in per_env.items()}
            for variant, per_env in per_seed_last_k.items()
        },
        "per_seed": per_seed_last_k,
    }
    if "iql" in cfg.variants:
        report["matched_iql"] = matched_iql_overrides(cfg)
    if "agnostic" in per_seed_last_k and "iql" in per_seed_last_k:
        report["ratio"] = score_ratio(per_seed_last_k["agnostic"], per_seed_last_k["iql"])
    if unfinished:
        report["unfinished"] = unfinished
    if report_only:
        report["report_only"] = True
        finished = {name: out / name for name in runs if name not in unfinished}
        report["runs_provenance"] = runs_provenance(finished)
    # a report-only render times nothing: its runs were timed (or not) by their own commands
    report["wall_seconds"] = None if report_only else round(time.perf_counter() - started, 1)
    report["provenance"] = provenance()
    return report


def score_ratio(
    numerator: dict[str, list[float]],
    denominator: dict[str, list[float]],
    *,
    reps: int = RATIO_REPS,
    seed: int = 0,
) -> dict[str, Any]:
    """The ratio of two arms' average scores (e.g. agnostic ÷ single-env IQL, the paper's
    96.22 / 107.54): ``value`` = mean over envs of the numerator's per-env seed means ÷ the same
    for the denominator; ``per_env``: each env's ratio of seed means. 95% percentile bootstrap
    CI (``ci_low``, ``ci_high``): each of ``reps`` resamples draws the seeds with replacement
    independently per (arm, env) and recomputes the ratio of the averages (numpy Generator
    seeded ``seed``). With one seed per (arm, env) the CI is the value itself. Arms take the
    envs they share; arguments map env → per-seed scores."""
    envs = [env for env in numerator if env in denominator]
    if not envs:
        raise GenworldError("the two arms share no env: run both on the same --datasets")
    rng = np.random.default_rng(seed)

    def resampled(arm: dict[str, list[float]]) -> np.ndarray:
        means = []  # (envs, reps): each env's seed mean per resample
        for env in envs:
            scores = np.asarray(arm[env], dtype=float)
            means.append(scores[rng.integers(0, len(scores), size=(reps, len(scores)))].mean(1))
        return np.mean(means, axis=0)

    top = {env: np.mean(numerator[env]) for env in envs}
    bottom = {env: np.mean(denominator[env]) for env in envs}
    with np.errstate(divide="ignore", invalid="ignore"):  # a zero mean: an infinite ratio
        value = np.mean(list(top.values())) / np.mean(list(bottom.values()))
        per_env = {env: float(top[env] / bottom[env]) for env in envs}
        ratios = resampled(numerator) / resampled(denominator)
        low, high = np.percentile(ratios, [2.5, 97.5])
    return {
        "value": float(value),
        "ci_low": float(low),
        "ci_high": float(high),
        "per_env": per_env,
        "reps": reps,
    }


def _last_k(points: list[tuple[int, float]], k: int) -> float:
    tail = [score for _, score in points][-k:]
    return sum(tail) / len(tail)


def _mean_curve(seeds: dict[int, list[tuple[int, float]]]) -> list[dict[str, float]]:
    """The mean over seeds at each step every seed reached (:func:`transfer.mean_curve`)."""
    from genworld.train.transfer import mean_curve

    return mean_curve(
        [
            [{"step": step, "score": score} for step, score in points]
            for _, points in sorted(seeds.items())
        ]
    )
