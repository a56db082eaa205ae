"""World-model reports: k-step open-loop errors and the penalty check, as Markdown, JSON and a
plot in a run's ``eval/`` folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genworld.eval.wm_metrics import calibration_table, error_table, plot_errors
from genworld.utils.io import atomic_write_bytes, atomic_write_json


def write_errors(named: dict[str, Any], out: Path) -> list[Path]:
    """k_step_errors.md / .json / .png; returns the Markdown and the plot."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "k_step_errors.md", (error_table(named) + "\n").encode())
    atomic_write_json(out / "k_step_errors.json", named)
    plot_errors(named, out / "k_step_errors.png")
    return [out / "k_step_errors.md", out / "k_step_errors.png"]


def write_sensitivity(named: dict[str, Any], out: Path) -> list[Path]:
    """stochastic_state.md / .json: how much resampling u moves each model's predictions."""
    lines = [
        "Resampling the stochastic state u (prior draws) vs the observation head's own variance, "
        "per-dim variances in units of the training data's (held-out start states):",
        "",
        "| model | env | Var over u of the decoded mean | head variance | ratio |",
        "|---|---|---|---|---|",
    ]
    for model, envs in named.items():
        for env, r in envs.items():
            lines.append(
                f"| {model} | {env} | {r['u_var']:.3g} | {r['head_var']:.3g} | "
                f"{r['ratio_to_head']:.3g} |"
            )
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out / "stochastic_state.md", ("\n".join(lines) + "\n").encode())
    atomic_write_json(out / "stochastic_state.json", named)
    return [out / "stochastic_state.md"]


def write_calibration(named: dict[str, Any], out: Path) -> list[Path]:
    """penalty_calibration.md / .json; returns the Markdown."""
    atomic_write_bytes(out / "penalty_calibration.md", (calibration_table(named) + "\n").encode())
    atomic_write_json(out / "penalty_calibration.json", named)
    return [out / "penalty_calibration.md"]
