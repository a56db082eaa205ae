"""The β-sweep plot (seed 000, Fig. 5): score against β from a finished table's rows."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genworld.utils.io import save_figure


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
    save_figure(fig, path)
