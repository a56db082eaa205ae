"""``genworld train agnostic-ablations``' report: report.json (what
:func:`genworld.train.agnostic_ablations.run_ablations` returned), report.md (each env's
last-k normalized score per variant over seeds, and the agnostic / single-env IQL ratio) and
curves.png (each env's score against updates, mean over seeds)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genworld.reports.run import count
from genworld.reports.transfer import seeds_footer
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure

LABELS = {
    "agnostic": "agnostic (one agent)",
    "bigru": "Bi-GRU encoder",
    "env-specific": "env-specific agent (per-env encoders/decoders)",
    "iql": "single-env IQL (padded MLP)",
}

PAPER_DD_IQL, PAPER_IQL = 96.22, 107.54
"""Kim & Joo 2023, Table 1: average normalized score of DD-IQL and of single-env IQL over its
eight datasets."""
PAPER_TABLE_1 = {  # dataset: (single-env IQL, DD-IQL), Kim & Joo 2023, Table 1
    "halfcheetah-medium-expert": (94.74, 82.07),
    "hopper-medium-expert": (107.42, 64.35),
    "walker2d-medium-expert": (111.72, 105.08),
}
"""The paper's Table 1 rows of the datasets genworld regenerates (its other five are AntMaze
and Adroit)."""


def write_ablations_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.md (first), report.json and curves.png in ``out``."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    plot = out / "curves.png"
    _plot(report, plot)
    atomic_write_bytes(out / "report.md", _markdown(report, plot.name).encode())
    return [out / "report.md", out / "report.json", plot]


def _markdown(report: dict[str, Any], plot: str) -> str:
    cfg, summary, envs = report["config"], report["summary"], report["envs"]
    per_seed = report["per_seed"]
    seeds = finished_seeds(report)
    variants = [v for v in cfg["variants"] if v in summary]
    lines = [
        f"# Agnostic agent and its ablations ({cfg['scale']}, {count(seeds, 'seed')})",
        "",
        f"On {', '.join(cfg['datasets'])}, {cfg['steps']:,} updates per run, "
        f"{count(seeds, 'seed')} per run; each env's normalized score is the mean of the last "
        f"{cfg['last_k']} evaluations (D4RL-normalized on genworld's regenerated datasets, not "
        "D4RL's)" + (", averaged over seeds" if seeds > 1 else "") + ".",
    ]
    dd_iql = [LABELS[v] for v in variants if v != "iql"]
    if dd_iql:
        lines[-1] += f" DD-IQL runs: {', '.join(dd_iql)}."
    if "env-specific" in variants:
        lines[-1] += (
            " The env-specific agent is the paper's Multi-Env Specific Agent: one agent whose "
            "networks have an encoder and a decoder per env (two-layer MLPs; the paper's "
            "depth is not given) around a shared residual-MLP middle, trained as the agnostic "
            "agent is."
        )
    if "matched_iql" in report:
        m = report["matched_iql"]
        lines += [
            "",
            "Single-env IQL (`genworld.algos.iql`, one agent per dataset) is matched to the "
            f"agnostic agent: {count(m['batch_size'], 'row')} of its env per update (what the one "
            "agent gives each env), the same per-network gradient-norm clip "
            f"({m['max_grad_norm']:g}), the same cosine actor-lr decay (over "
            f"{m['actor_lr_decay_steps']:,} updates), the same updates and the same evaluations "
            "(steps and episode seeds). Only the networks differ: IQL's MLPs (the scale's "
            "preset, a state-independent log-std clamped to [−20, 2], one agent per env) "
            "instead of the agnostic networks (a state-dependent log-std clamped to [−5, 2], a "
            "task embedding per env, one set of weights for all envs).",
        ]
    lines += [
        "",
        "| env | " + " | ".join(LABELS[v] for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for env in envs:
        cells = [_cell(per_seed[v][env]) if env in per_seed[v] else "—" for v in variants]
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    means = [  # over every env, or none (a variant missing an env has no comparable mean)
        f"{np.mean([summary[v][e] for e in envs]):.1f}" if set(envs) <= set(summary[v]) else "—"
        for v in variants
    ]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    if "ratio" in report:
        lines += ["", _ratio_line(report)]
    if report.get("unfinished"):
        lines += ["", f"Not finished yet, left out: {', '.join(report['unfinished'])}."]
    return "\n".join(lines + seeds_footer(report, plot, seeds))


def _cell(values: list[float]) -> str:
    """One seed: the score; several: ``mean ± std (n seeds)``."""
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{np.mean(values):.1f} ± {np.std(values):.1f} ({len(values)} seeds)"


def finished_seeds(report: dict[str, Any]) -> int:
    """The most seeds any (variant, env) has finished (the config's, when all have)."""
    return max(len(s) for envs in report["per_seed"].values() for s in envs.values())


def _ratio_line(report: dict[str, Any]) -> str:
    r, summary, seeds = report["ratio"], report["summary"], finished_seeds(report)
    interval = (
        f"95% bootstrap CI {r['ci_low']:.2f}–{r['ci_high']:.2f} over seeds, {r['reps']:,} "
        f"resamples; with {seeds} seeds per arm and env, a rough interval"
        if seeds > 1
        else "one seed per run: no interval"
    )
    per_env = ", ".join(f"{env} {value:.2f}" for env, value in r["per_env"].items())
    datasets = report["config"]["datasets"]
    rows = [PAPER_TABLE_1[d] for d in datasets if d in PAPER_TABLE_1]
    same = (
        f"; on the same datasets {sum(d for _, d in rows):.2f} / {sum(i for i, _ in rows):.2f} = "
        f"{sum(d for _, d in rows) / sum(i for i, _ in rows):.2f}"
        if rows and len(rows) == len(datasets)
        else ""
    )
    line = (
        f"**Agnostic ÷ single-env IQL** (mean over envs): **{r['value']:.2f}** ({interval}); "
        f"per env: {per_env}. For context, the paper's Table 1: DD-IQL {PAPER_DD_IQL} / IQL "
        f"{PAPER_IQL} = {PAPER_DD_IQL / PAPER_IQL:.2f} over its eight datasets{same} (D4RL's "
        "datasets, its own budgets)."
    )
    iql_mean = np.mean(list(summary["iql"].values()))
    if iql_mean <= 0:
        line += (
            f" Single-env IQL's mean score is {iql_mean:.1f}, not positive: the ratio is not a "
            "fraction of it."
        )
    return line


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = report["envs"]
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for variant, per_env in report["curves"].items():
            points = per_env.get(env, [])  # the mean over seeds at each step
            ax.plot([p["step"] for p in points], [p["score"] for p in points], marker="o",
                    label=LABELS[variant])  # fmt: skip
        ax.set_title(env)
        ax.set_xlabel("updates")
        ylabel = "normalized score"
        ax.set_ylabel(ylabel if report["config"]["seeds"] == 1 else f"{ylabel} (mean over seeds)")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
