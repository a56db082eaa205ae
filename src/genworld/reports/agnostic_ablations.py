"""``genworld train agnostic-ablations``' report: report.json (what
:func:`genworld.train.agnostic_ablations.run_ablations` returned), report.md (each env's
last-k normalized score per variant) and curves.png (each env's score against updates)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from genworld.reports.transfer import one_seed_footer
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure

LABELS = {
    "agnostic": "agnostic (one agent)",
    "bigru": "Bi-GRU encoder",
    "env-specific": "env-specific agents",
}


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
    variants = [v for v in cfg["variants"] if v in summary]
    lines = [
        f"# Agnostic agent and its ablations ({cfg['scale']}, seed {cfg['seed']})",
        "",
        f"DD-IQL on {', '.join(cfg['datasets'])}, {cfg['steps']:,} updates per run; each env's "
        f"normalized score is the mean of the last {cfg['last_k']} evaluations (D4RL-normalized "
        "on genworld's regenerated datasets, not D4RL's). Env-specific agents get as many rows "
        "of their env per update as the one agent gives each env.",
        "",
        "| env | " + " | ".join(LABELS[v] for v in variants) + " |",
        "|---|" + "---|" * len(variants),
    ]
    for env in envs:
        cells = [f"{summary[v][env]:.1f}" if env in summary[v] else "—" for v in variants]
        lines.append(f"| {env} | " + " | ".join(cells) + " |")
    means = [f"{np.mean([summary[v][e] for e in envs if e in summary[v]]):.1f}" for v in variants]
    lines.append("| **mean** | " + " | ".join(means) + " |")
    return "\n".join(lines + one_seed_footer(report, plot))


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = report["envs"]
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for variant, per_env in report["curves"].items():
            points = per_env.get(env, [])
            ax.plot([p["step"] for p in points], [p["score"] for p in points], marker="o",
                    label=LABELS[variant])  # fmt: skip
        ax.set_title(env)
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
