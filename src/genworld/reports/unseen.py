"""The unseen-task report: a Fig. 4-style plot (score per task id, seen vs unseen, mean ± std
across seeds) and a table, per method."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from genworld.envs.tasks import get_family, unseen_distances
from genworld.eval.scores import precision_counts, precision_note
from genworld.reports.table import (
    PROMPT_TUNING_TEXT,
    RELABEL_HEADER,
    bootstrap_reps,
    claim_lines,
    iqm_with_ci,
    paired_difference_ci,
    relabel_cells,
    relabel_means,
    seed_ordered,
    seeds_text,
)
from genworld.utils.io import atomic_write_bytes, atomic_write_json, last_logged, save_figure
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


CMT_CLAIMS: tuple[tuple[str, str | None, str, str, str, int, str], ...] = (
    # (name, family (None: any), task group, method, reference, expected sign of method −
    #  reference, the paper's words): seed 001 §5.2 (Fig. 3) and §5.3 (Fig. 5, Ant-Fwd-Back)
    ("cmt_beats_prompt_dt", None, "unseen", "cmt", "prompt-dt", 1,
     "zero-shot CMT beats Prompt-DT on unseen tasks (§5.2, Fig. 3)"),
    ("q1_tuning_helps", "ant-fwd-back", "seen", "cmt", "cmt-no-pt", 1,
     "prompt tuning raises the return (Fig. 5 Q1: +65.8%)"),
    ("q2_no_contrastive_hurts", "ant-fwd-back", "seen", "cmt-gamma=1e-6", "cmt", -1,
     "γ = 1e-6 (both InfoNCE terms, the task-level one too) lowers the return (Fig. 5 Q2: "
     "−50.9%)"),
    ("q2_strong_contrastive_hurts", "ant-fwd-back", "seen", "cmt-gamma=1", "cmt", -1,
     "γ = 1 lowers the return (Fig. 5 Q2: −11.1%)"),
    ("q3_no_constraint_hurts", "ant-fwd-back", "seen", "cmt-beta=0", "cmt", -1,
     "β = 0 lowers the return (Fig. 5 Q3: −128%)"),
    ("q3_no_constraint_below_untuned", "ant-fwd-back", "seen", "cmt-beta=0", "cmt-no-pt", -1,
     "β = 0 is worse than no prompt tuning (Fig. 5 Q3: −128% against CMT, itself +65.8% above "
     "no tuning)"),
    ("q3_strong_constraint_hurts", "ant-fwd-back", "seen", "cmt-beta=50", "cmt", -1,
     "β = 50 lowers the return (Fig. 5 Q3: −36.4%)"),
    ("q3_strong_constraint_above_untuned", "ant-fwd-back", "seen", "cmt-beta=50", "cmt-no-pt", 1,
     "β = 50 is still above no prompt tuning (Fig. 5 Q3)"),
    ("q4_no_context_hurts", "ant-fwd-back", "seen", "cmt-context=none", "cmt", -1,
     "no task prompt lowers the return (Fig. 5 Q4: −18%)"),
    ("q4_medium_context_helps", "ant-fwd-back", "seen", "cmt-context=medium", "cmt", 1,
     "a task prompt from the task's mixed training data (the 'medium' context, the data "
     "tuning saw) raises the return (Fig. 5 Q4: +4%)"),
    ("q4_expert_context_helps", "ant-fwd-back", "seen", "cmt-context=expert", "cmt", 1,
     "a task prompt from the task's expert data raises the return (Fig. 5 Q4: +7%)"),
)  # fmt: skip
"""The CMT paper's meta-RL claims a study can test: each compares two methods' mean score over a
task group (``seen``: the training tasks, as Fig. 5 evaluates Ant-Fwd-Back; ``unseen``). The
paper's percentages are of raw returns; a report's are of the reference's normalized score."""


def cmt_claims(cfg, results: list[dict], groups: dict[str, list[str]]) -> dict[str, dict]:
    """The :data:`CMT_CLAIMS` whose methods and tasks the study has, each with both methods'
    means over the group's tasks that both have finished with every seed, the method's change
    against its reference in % of the reference's magnitude, ``holds`` (the sign of the change,
    judged once every task of the group is finished: None before), and the 95% bootstrap CI of
    the mean paired difference (:func:`paired_difference_ci`: ``inside_noise`` when it holds
    0, so the sign is not evidence)."""
    scores = seed_ordered(
        ((r["method"], r["task"]), r["seed"], r["last_k"]) for r in results if r["seed"] < cfg.seeds
    )
    claims = {}
    for name, family, group, method, reference, sign, text in CMT_CLAIMS:
        tasks = groups.get(group, [])
        if family not in (None, cfg.family) or not tasks:
            continue
        if not {method, reference} <= set(cfg.methods):
            continue
        pair = (method, reference)
        done = [t for t in tasks if all(len(scores.get((m, t), [])) == cfg.seeds for m in pair)]
        mean = {m: _task_mean(scores, m, done) for m in pair} if done else {}
        gap = mean[method] - mean[reference] if done else 0.0
        ci = paired_difference_ci(scores, pair, done) if done else None
        claims[name] = {
            "claim": text,
            "averages": mean,
            "change_pct": 100.0 * gap / abs(mean[reference]) if done and mean[reference] else None,
            "tasks": len(done),
            "of": len(tasks),
            "seeds": cfg.seeds,
            "difference_ci": ci,
            "inside_noise": None if ci is None else bool(ci[0] <= 0.0 <= ci[1]),
            "holds": bool(np.sign(gap) == sign) if len(done) == len(tasks) else None,
        }
    return claims


def _task_mean(scores: dict[tuple[str, str], list[float]], method: str, tasks) -> float:
    """``method``'s mean over ``tasks`` of its mean over seeds."""
    return float(np.mean([np.mean(scores[(method, t)]) for t in tasks]))


def meta_prompt_tuning(out: Path, seeds: int) -> list[dict[str, Any]]:
    """Per CMT model of the study (``<model>/seed<S>/eval.jsonl``, trained once per seed on the
    training tasks) that logged its relabelling: the means over seeds of its relabelling
    metrics (see :func:`genworld.reports.table.prompt_tuning`)."""
    rows = []
    for folder in sorted(d for d in out.glob("cmt*") if d.is_dir()):
        logs = [last_logged([folder / f"seed{s}" / "eval.jsonl"], "relabel/") for s in range(seeds)]
        logs = [g for g in logs if "prompt_effect" in g and "policy_change" in g]
        if logs:
            rows.append({"model": folder.name, "seeds": len(logs), **relabel_means(logs)})
    return rows


def meta_prompt_tuning_lines(rows: list[dict[str, Any]]) -> list[str]:
    """unseen.md's check of CMT's improvement stage (one row per CMT model)."""
    lines = ["## CMT's prompt tuning: does the generator read its prompt?", "", PROMPT_TUNING_TEXT]
    lines += ["", f"| model | seeds | {RELABEL_HEADER} |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['model']} | {r['seeds']} | {relabel_cells(r)} |" for r in rows]
    return [*lines, ""]


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
    summary["claims"] = cmt_claims(cfg, results, dict(groups))
    if summary["claims"]:
        lines += ["", *claim_lines(summary["claims"], "The CMT paper's claims")[:-1]]
    summary["prompt_tuning"] = meta_prompt_tuning(out, cfg.seeds)
    if summary["prompt_tuning"]:
        lines += ["", *meta_prompt_tuning_lines(summary["prompt_tuning"])[:-1]]
    if results:
        lines += ["", precision_note(results)]
        summary["precision"] = precision_counts(results)
    if planned is not None and planned > len(results):
        lines += [
            "",
            f"**Partial report**: {len(results)} of {planned} cells finished; "
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
        "task prompt from its own interactions in the task (zero-shot): a segment of the steps "
        "the task's evaluation episodes, run side by side, have taken so far (none at the "
        "first step), `cmt-context=none` from nothing, `cmt-context=medium|expert` from "
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
