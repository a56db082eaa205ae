"""``genworld unseen``: does one world model generalise to tasks it has not seen? (seed 000 §6.2,
Fig. 4, on cheetah-vel / ant-dir, data made here).

Stages, each resumable in ``out``:

1. **experts** — a SAC expert per task (the 10 tasks of the split), ``genworld.train.behaviour``;
2. **references** — per task: uniform-random policy return (→ 0) and the expert's best evaluated
   return (→ 100), in ``references.json``; every score below is normalized with them;
3. **data** — per training task a *mixed* dataset (rollouts of the expert's snapshot sequence,
   equal shares: the replay-buffer approximation of PROTOCOL's medium-replay), per task a
   *small* expert dataset (the prompt / fine-tuning data of an unseen task); Minari datasets
   under ``out/datasets``;
4. **world model** — one TGW model on the training tasks' mixed data. The tasks of a family are
   one robot, so they are one env for the model: the task is known only through the prompt
   (the task-state prompter's job);
5. **policies** — per method, task and seed, a SAC policy trained in the world model from that
   task's start states and prompts (training tasks: their mixed data; unseen tasks: their small
   data), evaluated in the task's real env:

   - ``tgw``: the world model as it is (zero-shot on unseen tasks: prompts only);
   - ``tgw-finetune``: its reward module (``rew_net``) fine-tuned on the task's
     small dataset first;
   - ``tgw-newr``: the task's true reward function on imagined transitions. The simulator's
     velocity is the displacement over the frame, and positions are not observed, so it is
     estimated as the mean of the observed velocities before and after the step (cheetah-vel:
     observation 8, ``qvel[0]``; ant-dir: observations 13–14, the torso's planar velocity):
     its mean absolute error against the simulator's reward stays well below the reward's
     per-step spread (tests/test_unseen.py; measured: docs/RESULTS.md). ant-dir's
     contact term is not observable and is left out (it is ~1e-3).

6. **Prompt-DT baseline** (:mod:`genworld.algos.prompt_dt`), one model per seed trained on the
   training tasks' mixed data with the same number of updates as a TGW policy, prompts taken
   from each task's small expert dataset (as the reference, which prompts with expert
   demonstrations). The tasks share all parameters (``DTConfig.shared_params``: no task id, one
   normaliser fitted on the family's data), so a task is known only through its prompt:

   - ``prompt-dt``: the trained model, prompted with the task's small expert data and aiming at
     its best return (no training on the task, but the task's demonstrations: not zero-shot in
     the CMT paper's sense); its score is the final model over ``eval_episodes × last_k``
     episodes;
   - ``prompt-dt-finetune``: a copy fine-tuned ``finetune_steps`` updates on the task's small
     dataset (the reference's few-shot fine-tuning), scored as the other cells (last-k
     evaluations).

7. **BC floor** (``bc``, not in the default methods): behaviour cloning of the task's own data
   (training tasks: mixed; unseen tasks: the two expert episodes every TGW policy also sees
   through its behaviour term), ``policy_updates`` updates, scored as the TGW cells: how far
   copying the task's data alone goes.
8. **CMT** (seed 001 §4.2, not in the default methods): one CMT per seed trained on the
   training tasks' mixed data, one env per task, every parameter shared (with as many updates
   as a TGW policy): its trajectory encoder reads a context segment of the row's task, a
   learned [SEP] token and the history, and a task-level contrastive term pulls the task
   prompts of one task together. Then it acts in each task's env with no training on the task,
   scored as ``prompt-dt`` (the final model over ``eval_episodes × last_k`` episodes):

   - ``cmt``: zero-shot, the task prompt drawn from its own interactions so far;
   - ``cmt-context=none|medium|expert``: the same model with no task prompt, or one from the
     task's mixed or small expert data (Fig. 5 Q4; ``medium`` only where every task trains);
   - ``cmt-no-pt``, ``cmt-beta=<β>``, ``cmt-gamma=<γ>``: models trained without prompt
     tuning, or with another behaviour-constraint or contrastive weight (Fig. 5 Q1–Q3).

   The ablation study of Fig. 5 is this study on ``ant-fwd-back``, whose two tasks both train.
9. **FOCAL** (``focal``, :mod:`genworld.algos.focal`; CMT's offline meta-RL baseline): one
   model per seed trained like CMT's (one env per task, shared parameters), then acting in each
   task with its task code inferred from a context set of the task's small expert data.

A finished study takes more methods or seeds later (``methods`` and ``seeds`` are not part of
the resume check): a rerun with them trains only the cells it lacks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from genworld.config import check_scale, resolve
from genworld.data.tasks import build_task_datasets
from genworld.envs.tasks import get_family, split
from genworld.errors import GenworldError
from genworld.train.policy_learner import check_policy_learner
from genworld.train.task_experts import best_expert, references, train_experts
from genworld.train.unseen_cells import (
    cell_folder,
    cmt_method,
    meta_job,
    meta_models,
    prompt_dt_job,
    run_cell,
    split_tasks,
    world_model,
)
from genworld.train.world_model import world_model_steps
from genworld.utils.io import check_or_write_config, check_report_folder, claim, claim_folder
from genworld.utils.parallel import finish_held, finished, map_unfinished, process_map

DEFAULT_METHODS = ("tgw", "tgw-finetune", "tgw-newr", "prompt-dt", "prompt-dt-finetune")
METHODS = (*DEFAULT_METHODS, "tgw-no-bounds", "bc", "cmt", "focal")
"""Every named method; ``tgw-no-bounds`` (TGW with model rollouts not clipped to the data's
observation range) and ``bc`` (the floor of copying the task's data) run when asked for, and
so do CMT's variants (:func:`genworld.train.unseen_cells.cmt_method`)."""


@dataclass(frozen=True)
class UnseenConfig:
    family: str = "cheetah-vel"
    """Task family: cheetah-vel (target speeds), ant-dir (directions) or ant-fwd-back (two
    directions, both trained and evaluated: CMT's ablation family)."""
    split: str = "paper"
    """paper (10 tasks at equal intervals, first 5 train) or prompt-dt (its test list)."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Methods compared (``METHODS``); a finished study takes more later."""
    seeds: int = 5
    """Seeds per (method, task); a finished study takes more later."""
    scale: str = "mini"
    """tiny, mini or full: the preset below."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda: world model, experts and cells."""
    experts: str = "auto"
    """Where each task's expert (and its snapshot sequence, the mixed data's source) comes from:
    ``sac`` trains a SAC expert per task (``expert_steps``); ``turned`` (ant-dir only) turns the
    shipped Ant SAC expert and its training snapshots into each task's direction
    (:func:`genworld.envs.tasks.turn_ant_policy`: the simulator is exactly symmetric under turns
    about z); ``auto``: ``turned`` for ant-dir, ``sac`` otherwise, because a 30k-step SAC expert
    on ant-dir does worse than standing still while the turned shipped expert runs in every
    direction tried (measured: docs/RESULTS.md, "Unseen tasks: ant-dir")."""
    expert_steps: int = 30_000
    """SAC steps per task expert (``experts`` = sac)."""
    expert_hidden: tuple[int, ...] = (256, 256)
    """Hidden widths of a task expert's SAC networks."""
    mixed_steps: int = 20_000
    """Transitions per training task's mixed dataset."""
    small_steps: int = 400
    """Transitions of each task's small expert dataset (2 episodes at 200 steps)."""
    wm_steps: int = 0
    """World-model updates; 0 = the TGW world model's preset for the scale
    (``config_for_scale`` writes that number here)."""
    finetune_steps: int = 300
    """Fine-tuning steps of tgw-finetune (reward module) and prompt-dt-finetune (the model)."""
    policy_updates: int = 10_000
    """Per (method, task, seed): a TGW policy's SAC updates, and Prompt-DT's training updates."""
    cmt_pretrain_updates: int = 0
    """CMT's pretraining updates of its ``policy_updates`` (the rest tune its prompt); 0 = CMT's
    preset for the scale (mini: 7,000 of 10,000). Full: 70,000 of 100,000 (CMT's full preset
    pretrains 100,000 updates, a table's budget of 1M)."""
    eval_every: int = 1_000
    """Updates between a cell's evaluations in its task's env."""
    policy_init_alpha: float = 0.1
    """SAC's initial temperature. The task rewards are ~−1 a step, so SAC's default 1.0 makes
    the entropy bonus (α·H, H up to ~4 here) outweigh them: the soft Q turns positive while
    every reward is negative and the policy stands still on every task; α₀ = 0.1, with the
    RL-term weight below, lets it move (measured: docs/RESULTS.md, "Unseen tasks:
    cheetah-vel"). Full scale: 1.0 (plain MBPO)."""
    policy_bc_alpha: float = 2.5
    """Weight of the RL term against the behaviour term (``SACConfig.bc_alpha``; 2.5 is TD3+BC's
    published value; the table's mini policy learner uses 1.0). Full scale: 0 (plain MBPO)."""
    eval_episodes: int = 3
    """Episodes per evaluation."""
    last_k: int = 3
    """A cell's score: the mean of its last k evaluations."""
    workers: int = 1
    """Experts and cells run side by side in this many processes. Not part of the resume
    check."""
    threads: int = 1
    """torch threads per process (each worker's, or this one's when workers = 1): two 1-thread
    processes on 2 cores each run at full speed, two 2-thread ones stall each other."""
    shipped_experts: bool = True
    """Use the shipped expert of a task (``assets/tasks/<task>``) when it was trained with this
    config's recipe, instead of training it (same weights, so the same datasets and scores).
    Not part of the resume check."""
    wait_for_others: bool = True
    """At the end, wait for the cells other processes sharing ``out`` are training, so that the
    report covers the whole study (True); or leave them to those processes, report what has
    finished and exit (False: the process that ends last reports the whole study)."""

    def validate(self) -> None:
        get_family(self.family)
        if self.experts not in ("auto", "sac", "turned"):
            raise GenworldError(f"experts must be auto, sac or turned, got {self.experts!r}")
        if self.experts == "turned" and not get_family(self.family).directions:
            raise GenworldError(
                f"experts=turned needs a family whose tasks are turns of one robot's task "
                f"(ant-dir, ant-fwd-back), not {self.family}; use experts=sac"
            )
        split(self.family, scheme=self.split)
        for m in self.methods:
            if m.startswith("cmt"):
                cmt_method(m)  # names the bad variant or source
            elif m not in METHODS:
                raise GenworldError(
                    f"unknown method {m!r}: choose from {', '.join(METHODS)}, cmt-no-pt, "
                    "cmt-beta=<β>, cmt-gamma=<γ> or cmt-context=<online|none|medium|expert>"
                )
        if "cmt-context=medium" in self.methods and split(self.family, scheme=self.split)[1]:
            raise GenworldError(
                "cmt-context=medium prompts with a task's mixed data, which unseen tasks do not "
                f"have: use it on a family whose tasks all train (ant-fwd-back), not {self.family}"
            )
        for name in (
            "seeds",
            "expert_steps",
            "mixed_steps",
            "small_steps",
            "finetune_steps",
            "policy_updates",
            "eval_every",
            "eval_episodes",
            "last_k",
            "workers",
            "threads",
        ):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")
        check_policy_learner(self.policy_init_alpha, self.policy_bc_alpha)


SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "expert_steps": 400,
        "expert_hidden": (32, 32),
        "mixed_steps": 400,
        "small_steps": 200,
        "wm_steps": 20,
        "finetune_steps": 10,
        "policy_updates": 20,
        "eval_every": 10,
        "eval_episodes": 1,
        "last_k": 2,
    },
    "mini": {},
    "full": {
        "expert_steps": 300_000,
        "mixed_steps": 100_000,
        "small_steps": 1_000,
        "wm_steps": 50_000,
        "finetune_steps": 2_000,
        "policy_updates": 100_000,
        "cmt_pretrain_updates": 70_000,
        "eval_every": 5_000,
        "eval_episodes": 10,
        "last_k": 10,
        "policy_init_alpha": 1.0,
        "policy_bc_alpha": 0.0,
    },
}


def config_for_scale(scale: str, **overrides: Any) -> UnseenConfig:
    """The scale's preset, then ``overrides`` (None = keep)."""
    check_scale(scale)
    preset = {"scale": scale, "wm_steps": world_model_steps(scale), **SCALES[scale]}
    return resolve(UnseenConfig, preset, overrides)


def prepare_tasks(
    cfg: UnseenConfig, train: list[str], tasks: list[str], out: Path, show_progress: bool
) -> dict[str, list[float]]:
    """Stages 1–3, each resumable in ``out``: every task's expert, its reference returns and its
    datasets (``train``'s mixed ones, every task's small one). Returns the references. One
    process makes them; another sharing the study waits, then reads them."""
    with claim(out / "tasks.claim", wait=True):
        train_experts(cfg, tasks, out, show_progress)
        refs = references(cfg, tasks, out)
        build_task_datasets(
            out / "datasets",
            out / "experts",
            train,
            tasks,
            refs,
            small_steps=cfg.small_steps,
            mixed_steps=cfg.mixed_steps,
            best_expert=lambda task: best_expert(out, task),
        )
    return refs


@dataclass(frozen=True)
class UnseenResults:
    """What a study produced: its task split, the per-task reference returns, and one result per
    finished (method, task, seed) cell out of ``planned``."""

    train: list[str]
    test: list[str]
    references: dict[str, list[float]]
    results: list[dict]
    planned: int
    failed: list[dict] = field(default_factory=list)
    """The records of the cells that failed this run (:mod:`genworld.train.failures`)."""


IGNORED = ("workers", "shipped_experts", "methods", "seeds", "wait_for_others")
"""Fields left out of the resume check: how the study runs, and the methods and seeds, which key
their own cells (a finished study takes more of either later)."""


def run_unseen(
    cfg: UnseenConfig, out: Path, *, show_progress: bool = True, report_only: bool = False
) -> UnseenResults:
    """Every stage (each resumes), then the report. ``report_only``: train nothing, write the
    report from the cells finished so far."""
    cfg.validate()
    train, test = split_tasks(cfg)
    from genworld.utils.device import torch_threads

    if not report_only:
        # several processes may share the study (its stages' models and its cells are claimed
        # one by one); a command wanting the folder alone is refused
        with claim_folder(out, "genworld unseen", cfg, shared=True), torch_threads(cfg.threads):
            check_or_write_config(out, cfg, ignore=IGNORED)
            return _run_stages(cfg, out, train, test, show_progress)
    if not (out / "references.json").exists():
        raise GenworldError(f"{out} has no finished references stage: run it first")
    check_report_folder(out, cfg, ignore=IGNORED)  # writes nothing
    tasks = train + test
    refs = json.loads((out / "references.json").read_text())
    planned = [(m, t, s) for s in range(cfg.seeds) for m in cfg.methods for t in tasks]
    paths = [out / cell_folder(m, t, s) / "result.json" for m, t, s in planned]
    results = [json.loads(p.read_text()) for p in paths if p.exists()]
    return UnseenResults(train, test, refs, results, planned=len(planned))


def _run_stages(
    cfg: UnseenConfig, out: Path, train: list[str], test: list[str], show_progress: bool
) -> UnseenResults:
    from genworld.train.failures import split_failures
    from genworld.utils.progress import progress_bar

    tasks = train + test
    refs = prepare_tasks(cfg, train, tasks, out, show_progress)
    if any(m.startswith("tgw") for m in cfg.methods):
        world_model(cfg, train, out, show_progress)  # trained here, loaded by the cells
    seeds = range(cfg.seeds)
    if any(m.startswith("prompt-dt") for m in cfg.methods):  # each seed's model, before its cells
        process_map(
            prompt_dt_job,
            [(cfg, out, train, refs, s) for s in seeds],
            cfg.workers,
            threads=cfg.threads,
        )
    models = meta_models(cfg.methods)  # each seed's CMT and FOCAL models, before their cells
    jobs = [(cfg, out, train, refs, s, model) for s in seeds for model in models]
    process_map(meta_job, jobs, cfg.workers, threads=cfg.threads)
    # seed-major: a run stopped part-way already compares every method on the seeds it finished
    cells = [(cfg, out, train, m, t, s, refs) for s in seeds for m in cfg.methods for t in tasks]
    done = finished([out / cell_folder(m, t, s) / "result.json" for _, _, _, m, t, s, _ in cells])
    with progress_bar(
        "unseen-task cells", len(cells), done=len(done), enabled=show_progress
    ) as advance:
        results = map_unfinished(run_cell, cells, done, cfg.workers, advance, cfg.threads)
    results = finish_held(
        results,
        lambda i, wait: run_cell(*cells[i], wait=wait),
        cfg.wait_for_others,
        "unseen",
        show_progress,
    )
    ok, failed = split_failures(results)
    return UnseenResults(train, test, refs, ok, planned=len(cells), failed=failed)
