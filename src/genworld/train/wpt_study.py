"""``genworld wpt-study``: WPT's comparison (seed 004, §4, Fig. 3–4) as one resumable study.

Every (target task, variant, seed) is one ``genworld finetune`` run (:mod:`genworld.train.
finetune`) in ``out/cells/<task>/<variant>/seed<k>``, all fine-tuning the same pre-trained world
model: the one given (``--world_model``), or one pre-trained here at the scale's preset into
``out/pretrain`` (:mod:`genworld.train.pretrain`). Variants: ``scratch`` (the same RSSM
untrained: DreamerV3), ``p`` (pre-trained), ``p+er`` (+ experience rehearsal), ``p+er+g``
(+ execution guidance: WPT). A cell is done when its ``report.json`` exists; a killed cell
resumes from its checkpoint. Several processes (or machines sharing ``out``) may run one study:
the first to arrive pre-trains while the others wait for its model, and each cell is claimed by
one of them (a lock next to its folder that dies with its process), as a table's cells are.
The report (:mod:`genworld.reports.wpt_study`) gives the learning
curves with confidence intervals over seeds and checks the issue's claims.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from genworld.config import apply, check_scale
from genworld.envs.registry import get_env_spec
from genworld.errors import GenworldError
from genworld.utils.io import (
    atomic_write_json,
    check_or_write_config,
    check_report_folder,
    claim,
    claim_file,
    claim_folder,
    claimed_result,
)

VARIANTS = ("scratch", "p", "p+er", "p+er+g")


@dataclass(frozen=True)
class WPTStudyConfig:
    """Target tasks × variants × seeds, all fine-tuning one pre-trained world model."""

    world_model: str = ""
    """A finished ``genworld pretrain world-model`` folder; empty = pre-train one here
    (``out/pretrain``) with the scale's preset."""
    tasks: tuple[str, ...] = ()
    """Target tasks (DMC ``dmc-…`` or Meta-World ``mw-…``); empty = the scale's; a finished
    study takes more later (each task's cells are its own)."""
    variants: tuple[str, ...] = VARIANTS
    """Which of scratch, p, p+er, p+er+g; a finished study takes more later."""
    seeds: int = 3
    """Seeds per (task, variant) (0 .. seeds-1); a finished study takes more later."""
    scale: str = "mini"
    """tiny | mini | full: the pre-training and fine-tuning presets."""
    last_k: int = 3
    """A run's final score: the mean return of its last k evaluations."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    workers: int = 1
    """Runs side by side (processes). Not part of the resume check."""
    threads: int = 1
    """torch threads per process (each worker's, or this one's when workers = 1): two 1-thread
    processes on 2 cores each run at full speed, two 2-thread ones stall each other."""
    wait_for_others: bool = True
    """At the end, wait for the runs other processes sharing ``out`` are training, so that the
    report covers the whole study (True); or leave them to those processes, report what has
    finished and exit (False: the process that ends last reports the whole study)."""

    def validate(self) -> None:
        check_scale(self.scale)
        for task in self.tasks:
            get_env_spec(task)
        for v in self.variants:
            if v not in VARIANTS:
                raise GenworldError(f"unknown variant {v!r}: choose from {', '.join(VARIANTS)}")
        for name in ("seeds", "last_k", "workers", "threads"):
            if getattr(self, name) <= 0:
                raise GenworldError(f"--{name} must be positive, got {getattr(self, name)}")


STUDY_TASKS: dict[str, tuple[str, ...]] = {
    "tiny": ("dmc-cheetah-run",),
    "mini": ("dmc-cheetah-run", "dmc-walker-walk", "dmc-cheetah-run-hard", "mw-reach-v3",
             "mw-push-v3", "mw-door-open-v3"),
    "full": ("dmc-walker-run", "dmc-cheetah-run", "dmc-quadruped-walk", "dmc-walker-walk-hard",
             "mw-reach-v3", "mw-push-v3", "mw-door-open-v3"),
}  # fmt: skip
"""The ``tasks`` default at each scale: DMC bodies the pre-training data has, a hard (sparse)
variant (``dmc-…-hard``, WPT's code), and three Meta-World tasks (the paper's walker-run and
quadruped need their exploration data at mini)."""


def config_for_scale(scale: str, **overrides: Any) -> WPTStudyConfig:
    check_scale(scale)
    cfg = apply(WPTStudyConfig(scale=scale), {k: v for k, v in overrides.items() if v is not None})
    if not cfg.tasks:
        cfg = apply(cfg, {"tasks": STUDY_TASKS[scale]})
    cfg.validate()
    return cfg


@dataclass(frozen=True)
class Cell:
    task: str
    variant: str
    seed: int

    @property
    def folder(self) -> str:
        return f"cells/{self.task}/{self.variant}/seed{self.seed}"


def cells(cfg: WPTStudyConfig) -> list[Cell]:
    """Seed-major: a study stopped part-way already compares every variant on its seeds."""
    return [
        Cell(task, variant, seed)
        for seed in range(cfg.seeds)
        for task in cfg.tasks
        for variant in cfg.variants
    ]


def world_model_folder(cfg: WPTStudyConfig, out: Path) -> Path:
    return Path(cfg.world_model) if cfg.world_model else out / "pretrain"


def run_cell(cfg: WPTStudyConfig, out: Path, cell: Cell, wait: bool = False) -> dict | None:
    """One fine-tuning run (resumes); its report (what ``genworld finetune`` reports), or,
    when it fails, the failure's record (the study goes on; a rerun retries the run). The run
    is claimed first: None, at once, while another process trains it (``wait=False``), else,
    once that process lets it go, its report, or this process trains it if that one died."""
    from genworld.train.failures import guarded

    folder = out / cell.folder
    work = functools.partial(_finetune_cell, cfg, out, cell)
    return claimed_result(
        folder, "report.json", lambda: guarded(folder, cell.folder, "the study", work), wait=wait
    )


def _finetune_cell(cfg: WPTStudyConfig, out: Path, cell: Cell) -> dict[str, Any]:
    from genworld.train.finetune import config_for_scale as finetune_config
    from genworld.train.finetune import finetune

    folder = out / cell.folder
    run = finetune_config(
        cfg.scale,
        world_model=str(world_model_folder(cfg, out)),
        task=cell.task,
        variant=cell.variant,
        seed=cell.seed,
        device=cfg.device,
        threads=cfg.threads,
    )
    report = finetune(run, folder, show_progress=False)
    atomic_write_json(folder / "report.json", report)
    return report


IGNORED = ("workers", "tasks", "variants", "seeds", "wait_for_others")
"""Fields left out of the resume check: tasks, variants and seeds key their own cells, so a study
may grow."""


def run_study(
    cfg: WPTStudyConfig, out: Path, *, show_progress: bool = True, report_only: bool = False
) -> tuple[list[dict], int, list[dict]]:
    """Pre-training (unless given), then every missing cell; returns the finished cells'
    reports, the planned count and the records of the cells that failed this run
    (:mod:`genworld.train.failures`). ``report_only``: train nothing."""
    from genworld.train.failures import split_failures
    from genworld.utils.parallel import finish_held, finished, map_unfinished
    from genworld.utils.progress import progress_bar

    cfg.validate()
    out = Path(out)
    todo = cells(cfg)
    if report_only:
        check_report_folder(out, cfg, ignore=IGNORED)  # writes nothing
        paths = [out / c.folder / "report.json" for c in todo]
        return [json.loads(p.read_text()) for p in paths if p.exists()], len(todo), []
    with claim_folder(out, "genworld wpt-study", cfg, shared=True):
        check_or_write_config(out, cfg, ignore=IGNORED)
        if not cfg.world_model:
            with claim(claim_file(out / "pretrain"), wait=True):  # one process pre-trains
                _pretrain(cfg, out, show_progress)
        done = finished([out / c.folder / "report.json" for c in todo])
        with progress_bar(
            "wpt-study runs", len(todo), done=len(done), enabled=show_progress
        ) as advance:
            jobs = [(cfg, out, c) for c in todo]
            reports = map_unfinished(run_cell, jobs, done, cfg.workers, advance, cfg.threads)
        reports = finish_held(
            reports,
            lambda i, wait: run_cell(cfg, out, todo[i], wait=wait),
            cfg.wait_for_others,
            "wpt-study",
            show_progress,
        )
    ok, failed = split_failures(reports)
    return ok, len(todo), failed


def _pretrain(cfg: WPTStudyConfig, out: Path, show_progress: bool) -> None:
    from genworld.train.pretrain import config_for_scale as pretrain_config
    from genworld.train.world_model import train_world_model

    folder = out / "pretrain"
    if not (folder / "provenance.json").exists():  # written when its training has finished
        pretrain = pretrain_config(cfg.scale, device=cfg.device, threads=cfg.threads)
        train_world_model(pretrain, folder, show_progress=show_progress)
