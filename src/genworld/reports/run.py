"""report.md + report.json + PNG learning curves for a `genworld run` directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genworld.eval.paper import PAPER_TGW_MULTI
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure
from genworld.utils.provenance import provenance_line


def write_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.json, report.md and three plots per (quality, group); returns the plots' paths."""
    atomic_write_json(out / "report.json", report)
    from genworld.eval.wm_metrics import plot_errors

    plots = []
    for key, result in report["results"].items():
        tag = key.replace("/", "_")
        _plot_curves(result, out / f"curves_{tag}.png", key)
        _plot_bars(result, out / f"scores_{tag}.png", key)
        plot_errors(result["world_model"], out / f"wm_errors_{tag}.png")
        plots += [f"scores_{tag}.png", f"curves_{tag}.png", f"wm_errors_{tag}.png"]
    atomic_write_bytes(out / "report.md", _markdown(report, plots).encode())
    return [out / name for name in plots]


def _markdown(report: dict[str, Any], plots: list[str]) -> str:
    cfg = report["config"]
    agent = cfg["agent"]["mbpo"]
    lines = [
        "# genworld run report",
        "",
        f"**Data**: {report['provenance']}",
        "",
        f"**Protocol** (scale `{cfg['scale']}`, setting `{cfg['setting']}`, seed {cfg['seed']} — one seed, "
        "so no spread across seeds is reported): "
        f"world model {cfg['wm_steps']} updates; TGW policy {cfg['policy_updates']} SAC updates in the model "
        f"(policy `{agent['policy']}`, rollouts of {agent['rollout_batch']} × horizon {agent['horizon']} every "
        f"{agent['rollout_every']} updates, real ratio {agent['real_ratio']}{_bc_term(agent)}"
        f"{_batch_rule(agent, len(cfg['envs']) if cfg['setting'] == 'multi' else 1)}); "
        f"BC {cfg['bc_updates']} updates; "
        f"evaluation every {cfg['eval_every']} updates with {count(cfg['eval_episodes'], 'deterministic episode')} per env. "
        f"Scores are D4RL-normalized; **last-{cfg['last_k']}** = mean of the last {count(cfg['last_k'], 'evaluation')}, "
        "**best** = the best evaluation (optimistic, labelled).",
        "",
        f"Wall time of this command: {report['wall_seconds']:.0f} s (a resumed run's earlier "
        "commands not counted).",
        "",
        *([provenance_line(report["code"]), ""] if "code" in report else []),
        "## Datasets",
        "",
        "| dataset | steps | episodes | normalized return of the data |",
        "|---|---|---|---|",
    ]
    for ds, card in report["datasets"].items():
        lines.append(
            f"| {ds} | {card['steps']} | {card['episodes']} | {card['normalized_mean']:.1f} ± {card['normalized_std']:.1f} |"
        )
    lines += [f"\n**Warning**: {w}." for w in report.get("dataset_warnings", [])]
    k = cfg["last_k"]
    for key, result in report["results"].items():
        quality = key.split("/")[0]
        tgw, bc = result["tgw"]["summary"], result["bc"]["summary"]
        lines += [
            "",
            f"## {key}",
            "",
            f"| env | TGW last-{k} | TGW best | BC last-{k} | BC best | paper TGW multi-env (D4RL data) |",
            "|---|---|---|---|---|---|",
        ]
        for env in [*result["envs"], "_mean"]:
            paper = PAPER_TGW_MULTI.get(quality, {}).get(env)
            label = "mean" if env == "_mean" else env
            lines.append(
                f"| {label} | {tgw[env]['last_k_mean']:.1f} ± {tgw[env]['last_k_std']:.1f} | {tgw[env]['best']:.1f} "
                f"| {bc[env]['last_k_mean']:.1f} ± {bc[env]['last_k_std']:.1f} | {bc[env]['best']:.1f} "
                f"| {'' if paper is None else paper} |"
            )
        lines += [
            "",
            f"(± = spread of the last {count(k, 'evaluation')} of this one seed.)",
            "",
            "World model, held-out open-loop observation error (normalised MSE; mean predictor ≈ 1):",
            "",
            "| env | TGW h1 | TGW h5 | TGW h10 | mean predictor h1 |",
            "|---|---|---|---|---|",
        ]
        wm = result["world_model"]
        for env in result["envs"]:
            t, m = wm["tgw"][env], wm["mean-predictor"][env]
            lines.append(
                f"| {env} | {t['obs_h1']:.3f} | {t['obs_h5']:.3f} | {t['obs_h10']:.3f} | {m['obs_h1']:.3f} |"
            )
    lines += ["", "## Plots", ""] + [f"![{p}]({p})" for p in plots]
    return "\n".join(lines) + "\n"


def count(n: int, noun: str) -> str:
    """``1 evaluation``, ``3 evaluations``: a number and its noun, in the number's form."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _plot_curves(result: dict[str, Any], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    envs = result["envs"]
    fig, axes = plt.subplots(1, len(envs), figsize=(4 * len(envs), 3.2), squeeze=False)
    for ax, env in zip(axes[0], envs, strict=True):
        for method in ("tgw", "bc"):
            curve = result[method]["curve"]
            ax.plot(
                [r["step"] for r in curve],
                [r[f"eval/{env}/normalized_score"] for r in curve],
                marker="o",
                label=method.upper(),
            )
        ax.set_title(f"{env} ({title})")
        ax.set_xlabel("updates")
        ax.set_ylabel("normalized score")
        ax.grid(alpha=0.3)
    axes[0][0].legend()
    save_figure(fig, path)


def _plot_bars(result: dict[str, Any], path: Path, title: str) -> None:
    """Per-env last-k normalized score, TGW vs BC, with the spread of the last k evaluations."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    envs = [*result["envs"], "_mean"]
    x = np.arange(len(envs))
    fig, ax = plt.subplots(figsize=(1.6 * len(envs) + 2, 3.2))
    for i, method in enumerate(("tgw", "bc")):
        summary = result[method]["summary"]
        ax.bar(
            x + (i - 0.5) * 0.38,
            [summary[e]["last_k_mean"] for e in envs],
            0.38,
            yerr=[summary[e]["last_k_std"] for e in envs],
            capsize=3,
            label=method.upper(),
        )
    ax.set_xticks(x, [e if e != "_mean" else "mean" for e in envs])
    ax.set_ylabel("normalized score (last-k)")
    ax.set_title(title)
    ax.axhline(0, color="grey", lw=0.8)
    ax.grid(axis="y", alpha=0.3)
    ax.legend()
    save_figure(fig, path)


def _batch_rule(agent: dict, envs: int) -> str:
    """How the per-env SACs of a multi-env run batch (a run saved before ``batch_per_env``
    shared one batch)."""
    if agent["policy"] == "shared" or envs < 2:
        return ""
    size = agent.get("sac", {}).get("batch_size", 256)
    if agent.get("batch_per_env", False):
        return f", each env's SAC a batch of {size} rows of its own env"
    return f", the envs' SACs sharing one batch of {size} rows"


def _bc_term(agent: dict) -> str:
    """The SAC actor's behaviour term, when the preset uses one (mini: TD3+BC form)."""
    alpha = agent.get("sac", {}).get("bc_alpha", 0.0)
    return f", TD3+BC-form behaviour term bc_alpha {alpha:g} on real rows" if alpha else ""
