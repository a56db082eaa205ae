"""The unseen-task report: a Fig. 4-style plot (score per task id, seen vs unseen, mean ± std
across seeds) and a table, per method."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from genworld.envs.tasks import get_family, unseen_distances
from genworld.eval.scores import precision_note
from genworld.reports.table import bootstrap_reps, iqm_with_ci, seeds_text
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure
from genworld.utils.provenance import cells_code, cells_code_line, provenance


def _stats(results: list[dict], method: str, task: str) -> tuple[float, float, int]:
    values = [r["last_k"] for r in results if r["method"] == method and r["task"] == task]
    if not values:
        return float("nan"), float("nan"), 0
    return float(np.mean(values)), float(np.std(values)), len(values)


def group_iqms(results: list[dict], methods, tasks, seeds: int, reps: int) -> dict[str, dict]:
    """IQM (on the scores' 0–100 scale) with 95% stratified bootstrap CIs over ``tasks`` ×
    seeds, for each method whose cells are all finished on those tasks (others are left out:
    an IQM over a different set of runs would not compare)."""
    scores = {(r["method"], r["task"], r["seed"]): r["last_k"] for r in results}
    matrices = {
        m: np.array([[scores[(m, t, s)] / 100.0 for t in tasks] for s in range(seeds)])
        for m in methods
        if all((m, t, s) in scores for t in tasks for s in range(seeds))
    }
    return iqm_with_ci(matrices, reps) if matrices else {}


def write_unseen_report(
    cfg, train, test, refs, results, out: Path, planned: int | None = None
) -> dict:
    """``planned``: the run's cell count when ``results`` are the cells finished so far."""
    tasks = [*train, *test]
    methods = list(cfg.methods)
    source_text, experts_text = _experts_texts(cfg)
    lines = [
        f"# Unseen tasks: {cfg.family}",
        "",
        f"**Data**: made by genworld (Gymnasium v5 task envs, {source_text}). "
        "Scores are normalized per task: 0 = uniform-random policy, 100 = our expert for that "
        "task (`references.json`); not comparable to the paper's absolute numbers.",
        "",
        f"**Protocol**: scale `{cfg.scale}`, split `{cfg.split}` (train {train}, unseen "
        f"{test}); {cfg.seeds} seed(s); {experts_text}; world model "
        f"{cfg.wm_steps} updates on the training tasks' mixed data (one model, seed 0, shared by "
        f"every cell: the seeds vary the policies and Prompt-DT); {cfg.policy_updates} policy "
        f"updates per (method, task, seed) (TGW's SAC: initial temperature "
        f"{cfg.policy_init_alpha:g}, RL-term weight α {cfg.policy_bc_alpha:g}, TD3+BC's: larger = less behaviour cloning); score = mean of the last {cfg.last_k} evaluations "
        f"({cfg.eval_episodes} episodes each); mean ± std (population, ddof 0) across seeds."
        + (
            " `prompt-dt` is not zero-shot in the CMT sense: it is prompted with the task's "
            "expert episodes and aims at their best return (no training on the task)."
            if "prompt-dt" in methods
            else ""
        ),
        *_meta_protocol(cfg),
        "",
        cells_code_line(results),
        "",
        "| task | seen | " + " | ".join(methods) + " |",
        "|---|---|" + "---|" * len(methods),
    ]
    summary: dict = {"per_task": {}, "averages": {}}
    for task in tasks:
        cells = []
        for method in methods:
            mean, std, n = _stats(results, method, task)
            summary["per_task"].setdefault(task, {})[method] = {"mean": mean, "std": std, "n": n}
            cells.append(seeds_text(mean, std, n, cfg.seeds))
        lines.append(f"| {task} | {'yes' if task in train else 'no'} | " + " | ".join(cells) + " |")
    groups = [(group, names) for group, names in (("seen", train), ("unseen", test)) if names]
    for group, names in groups:
        row = []
        for method in methods:
            means = [summary["per_task"][t][method]["mean"] for t in names]
            value = float(np.nanmean(means)) if not np.all(np.isnan(means)) else float("nan")
            summary["averages"].setdefault(method, {})[group] = value
            row.append("—" if np.isnan(value) else f"{value:.1f}")
        lines.append(f"| **{group} average** | | " + " | ".join(row) + " |")
    reps = bootstrap_reps(cfg.scale)
    iqm_lines = []
    for group, names in groups:
        iqms = group_iqms(results, methods, names, cfg.seeds, reps)
        summary.setdefault("iqm", {})[group] = iqms
        iqm_lines += [
            f"| {group} | {m} | {v['iqm']:.1f} | [{v['ci_low']:.1f}, {v['ci_high']:.1f}] |"
            for m, v in iqms.items()
        ]
    if iqm_lines:
        lines += [
            "",
            f"IQM over each group's tasks × {cfg.seeds} seed(s), 95% stratified "
            f"bootstrap CIs ({reps} resamples, rliable); only methods with every cell of the "
            "group finished:",
            "",
            "| tasks | method | IQM | 95% CI |",
            "|---|---|---|---|",
            *iqm_lines,
        ]
    distances = unseen_distances(cfg.family, cfg.split)
    directions = get_family(cfg.family).directions
    unit = "°" if directions else " m/s"
    if distances:
        lines += [
            "",
            "How far each unseen task is from the nearest training task (goal "
            + ("direction, degrees" if directions else "velocity")
            + "):",
            "",
            "| unseen task | goal | nearest training task's distance |",
            "|---|---|---|",
            *(
                f"| {t} | {_goal_text(cfg.family, t)} | {d:.{1 if directions else 3}f}{unit} |"
                for t, d in distances.items()
            ),
        ]
    else:
        lines += ["", "Every task of this family trains: the split has no unseen task."]
    if refs:
        lines += [
            "",
            "Reference returns per task (a score's 0 and 100: uniform-random policy, our expert):",
            "",
            "| task | direction / target | random | expert |",
            "|---|---|---|---|",
            *(
                f"| {t} | {_goal_text(cfg.family, t)} | {refs[t][0]:.1f} | {refs[t][1]:.1f} |"
                for t in tasks
                if t in refs
            ),
        ]
    if results:
        lines += ["", precision_note(results)]
    if planned is not None and planned > len(results):
        lines += [
            "",
            f"**Partial report** (`--report-only`): {len(results)} of {planned} cells finished; "
            "an entry is the mean over the seeds finished so far (n), — where none has.",
        ]
    lines += ["", "![scores per task](unseen_tasks.png)", ""]
    _plot(tasks, train, methods, summary, out / "unseen_tasks.png", cfg.family)
    atomic_write_bytes(out / "unseen.md", "\n".join(lines).encode())
    report = {
        "config": cfg.__dict__,
        "train": train,
        "test": test,
        "references": refs,
        "unseen_distances": distances,
        "cells_code": cells_code(results),
        "report": provenance(),
        "results": results,
        **summary,
    }
    atomic_write_json(out / "unseen.json", report)
    return report


def _plot(tasks, train, methods, summary, path: Path, family: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(tasks))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.0 * len(tasks) + 4.5, 3.6))
    for i, method in enumerate(methods):
        means = [summary["per_task"][t][method]["mean"] for t in tasks]
        stds = [summary["per_task"][t][method]["std"] for t in tasks]
        ax.bar(
            x + (i - (len(methods) - 1) / 2) * width,
            means,
            width,
            yerr=stds,
            capsize=2,
            label=method,
        )
    if len(tasks) > len(train):
        ax.axvspan(len(train) - 0.5, len(tasks) - 0.5, color="grey", alpha=0.12, label="unseen")
    ax.set_xticks(x, [t.split("-")[-1] for t in tasks])
    ax.set_xlabel(f"{family} task id")
    ax.set_ylabel("normalized score (per task)")
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))  # beside the bars
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)


def _goal_text(family: str, task: str) -> str:
    from genworld.envs.tasks import wrap_angle

    goal = float(get_family(family).goals()[int(task.rsplit("-", 1)[1])])
    if get_family(family).directions:
        return f"{np.degrees(wrap_angle(goal)):+.0f}°"
    return f"{goal:.3f} m/s"


def _meta_protocol(cfg) -> list[str]:
    """The protocol of the study's CMT and FOCAL methods (offline meta-RL, seed 001 §4.2), when
    it has any: how their models train and how a cell scores them."""
    meta = [m for m in cfg.methods if m.startswith("cmt") or m == "focal"]
    if not meta:
        return []
    return [
        "",
        f"**Offline meta-RL** ({', '.join(meta)}): one model per seed and training variant, "
        f"{cfg.policy_updates} updates on the training tasks' mixed data with every parameter "
        "shared across tasks, then run on every task with no training on it. `cmt` takes its "
        "task prompt from its own earlier interactions in the task (zero-shot: the first "
        "episode has none), `cmt-context=none` from nothing, `cmt-context=medium|expert` from "
        "the task's mixed or expert data; FOCAL infers the task from a context set of the "
        "task's small expert data. A cell's score is the mean normalized return of its "
        f"{cfg.eval_episodes * cfg.last_k} episodes ({cfg.last_k} × {cfg.eval_episodes}).",
    ]


def _experts_texts(cfg) -> tuple[str, str]:
    """Where the experts came from: (the Data line's words, the Protocol line's words)."""
    from genworld.train.task_experts import expert_source

    if expert_source(cfg) == "turned":
        from genworld.policies import ASSETS

        steps = json.loads((ASSETS / "ant-expert.json").read_text())["train_steps"]
        return (
            "our Ant SAC expert and its snapshots, turned into each task's direction",
            f"experts: the shipped Ant SAC expert ({steps} steps) and its training snapshots, "
            "each turned into the task's direction (exact symmetry of the simulator)",
        )
    return "our own per-task SAC experts", f"experts {cfg.expert_steps} SAC steps"
