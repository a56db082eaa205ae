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


def write_calibration(named: dict[str, Any], out: Path) -> list[Path]:
    """penalty_calibration.md / .json; returns the Markdown."""
    atomic_write_bytes(out / "penalty_calibration.md", (calibration_table(named) + "\n").encode())
    atomic_write_json(out / "penalty_calibration.json", named)
    return [out / "penalty_calibration.md"]
