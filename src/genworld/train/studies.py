"""Studies on top of ``genworld table``'s runner: TGW ablations (seed 000 Table 2) and the β
sweep (Fig. 5). Same cells, same resume and parallelism, other algorithm lists."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np

from genworld.errors import GenworldError
from genworld.train.table import config_for_scale, run_table
from genworld.utils.io import atomic_write_bytes

ABLATIONS = ("tgw", "tgw-no-prompt", "tgw-no-rssm", "tgw-no-ri")
"""Full TGW, w/o prompt (current step only), w/o RSSM (no stochastic state), w/o ri (β = 0)."""


def ablate(
    out: Path,
    *,
    scale: str = "mini",
    show_progress: bool = True,
    report_only: bool = False,
    **options: Any,
) -> dict:
    """Table 2: every ablation in single- and multi-env settings (unless ``settings`` given)."""
    if options.get("settings") is None:
        options["settings"] = ("multi", "single")
    cfg = config_for_scale(scale, algos=ABLATIONS, **options)
    title = "TGW ablations (seed 000, Table 2 layout)"
    return run_table(cfg, out, show_progress=show_progress, title=title, report_only=report_only)


def sweep_beta(
    values: tuple[float, ...],
    out: Path,
    *,
    algo: str = "tgw",
    scale: str = "mini",
    show_progress: bool = True,
    report_only: bool = False,
    **options: Any,
) -> dict:
    """Fig. 5: TGW's score against β (risk tolerance, eq. 6), one cell list per value."""
    if not values:
        raise GenworldError("--values is empty: give β values such as 0,0.5,1")
    if any(v < 0 for v in values):
        raise GenworldError(f"β values must be ≥ 0, got {values}")
    names = tuple(f"{algo}-beta={v:g}" for v in values)
    cfg = config_for_scale(scale, algos=names, **options)
    title = f"β sweep of {algo} (seed 000, Fig. 5)"
    summary = run_table(cfg, out, show_progress=show_progress, title=title, report_only=report_only)
    plot_sweep(summary["rows"], cfg, dict(zip(names, values, strict=True)), out / "beta_sweep.png")
    return summary


def plot_sweep(rows: list[dict], cfg, beta_of: dict[str, float], path: Path) -> None:
    """Normalized score vs β: one panel per quality, one line per env (mean ± std over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    qualities = list(cfg.qualities)
    fig, axes = plt.subplots(1, len(qualities), figsize=(4.2 * len(qualities), 3.3), squeeze=False)
    for ax, quality in zip(axes[0], qualities, strict=True):
        for setting in cfg.settings:
            for env in cfg.envs:
                xs, means, stds = [], [], []
                for name, beta in sorted(beta_of.items(), key=lambda kv: kv[1]):
                    vals = [
                        r["last_k"]
                        for r in rows
                        if (r["algo"], r["quality"], r["env"], r["setting"])
                        == (name, quality, env, setting)
                    ]
                    if vals:
                        xs.append(beta)
                        means.append(np.mean(vals))
                        stds.append(np.std(vals))
                if xs:
                    m, sd = np.array(means), np.array(stds)
                    label = env if len(cfg.settings) == 1 else f"{env} ({setting})"
                    ax.plot(xs, m, marker="o", label=label)
                    ax.fill_between(xs, m - sd, m + sd, alpha=0.2)
        ax.set_title(quality)
        ax.set_xlabel("β (risk tolerance)")
        ax.set_ylabel("normalized score (last-k)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110)
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
