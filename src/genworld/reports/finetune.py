"""``genworld finetune``'s report: report.json (what :func:`genworld.train.finetune.finetune`
returned), report.md rendered from it, and curve.png (evaluation return, and success rate on
Meta-World, against environment steps)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genworld.utils.io import atomic_write_json, save_figure
from genworld.utils.provenance import provenance_line


def write_finetune_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.md (first), report.json and curve.png in ``out``."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    plot = out / "curve.png"
    _plot_curve(report, plot)
    (out / "report.md").write_text(_markdown(report, plot.name))
    return [out / "report.md", out / "report.json", plot]


def curve_points(report: dict[str, Any]) -> list[dict[str, float]]:
    """Per evaluation: environment steps, mean return and (Meta-World) success rate."""
    task = report["config"]["task"]
    points = []
    for record in report["curve"]:
        point = {"env_steps": record["env_steps"], "return": record[f"eval/{task}/return"]}
        if f"eval/{task}/success_rate" in record:
            point["success_rate"] = record[f"eval/{task}/success_rate"]
        points.append(point)
    return points


def _markdown(report: dict[str, Any], plot: str) -> str:
    cfg, protocol, wpt = report["config"], report["protocol"], report["config"]["wpt"]
    points = curve_points(report)
    success = any("success_rate" in p for p in points)
    lines = [
        f"# WPT fine-tuning: {cfg['task']}, variant {cfg['variant']} ({cfg['scale']})",
        "",
        f"Pre-trained world model `{cfg['world_model']}` (reward-free on "
        f"{', '.join(report['pretraining']['datasets'])}; {report['pretraining']['steps']:,} "
        f"steps); seed {cfg['seed']}; {report['wall_seconds']:.0f} s.",
        "",
        "## Protocol",
        "",
        f"- {protocol['episodes']} episodes of {protocol['episode_steps']} steps "
        f"({protocol['env_steps']:,} environment steps, action repeat "
        f"{protocol['action_repeat']}); {protocol['updates_per_episode']} updates after each "
        f"episode once {wpt['warmup_steps']:,} steps are collected ({protocol['updates']:,} "
        "updates in all)",
        f"- world-model batches of {wpt['batch_size']} sequences × {protocol['seq_len']} steps"
        + (
            f", {wpt['rehearsal_ratio']:.0%} of them retrieved (experience rehearsal)"
            if "er" in cfg["variant"].split("+")
            else ""
        ),
        f"- actor-critic in imagination: horizon {wpt['horizon']}, γ {wpt['gamma']}, "
        f"λ {wpt['lam']}, entropy {wpt['actor_entropy']}, symlog two-hot critic "
        f"({wpt['bins']} bins)",
    ]
    if cfg["variant"].endswith("+g"):
        lines.append(
            f"- execution guidance: BC prior ({wpt['bc_steps']:,} updates on the retrieved "
            f"data) acts in a random window with probability linear(1, 0, "
            f"{wpt['guidance_steps']:,} steps)"
        )
    lines.append(
        f"- evaluation: {wpt['eval_episodes']} deterministic episode(s) every "
        f"{protocol['eval_every_episodes']} episode(s), reset seeds from {protocol['eval_seed']}"
    )
    retrieved = report.get("retrieval")
    if retrieved:
        per_env = ", ".join(f"{name} {n}" for name, n in retrieved["per_env"].items())
        lines += [
            "",
            "## Retrieval (eq. 5)",
            "",
            f"{retrieved['trajectories']} trajectories ({retrieved['transitions']:,} transitions;"
            f" {per_env}); {retrieved['same_embodiment_share']:.0%} of the target's embodiment; "
            f"L2 distances {retrieved['distance_min']:.3g} … {retrieved['distance_max']:.3g}.",
        ]
    lines += [
        "",
        "## Learning curve",
        "",
        "| env steps | return |" + (" success rate |" if success else ""),
        "|---:|---:|" + ("---:|" if success else ""),
    ]
    for p in points:
        row = f"| {p['env_steps']:,} | {p['return']:.1f} |"
        lines.append(row + (f" {p.get('success_rate', float('nan')):.2f} |" if success else ""))
    lines += ["", f"![learning curve]({plot})", "", "## Caveats", ""]
    lines += [f"- {note}" for note in report["caveats"]]
    lines += ["", provenance_line(report["provenance"]), ""]
    return "\n".join(lines)


def _plot_curve(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = curve_points(report)
    success = any("success_rate" in p for p in points)
    cfg = report["config"]
    fig, axes = plt.subplots(1, 2 if success else 1, figsize=(8 if success else 4.5, 3.2))
    axes = list(axes) if success else [axes]
    steps = [p["env_steps"] for p in points]
    axes[0].plot(steps, [p["return"] for p in points], marker="o", label=cfg["variant"])
    axes[0].set_ylabel("return")
    if success:
        axes[1].plot(steps, [p.get("success_rate") for p in points], marker="o")
        axes[1].set_ylabel("success rate")
        axes[1].set_ylim(-0.05, 1.05)
    for ax in axes:
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
    axes[0].set_title(f"{cfg['task']} ({cfg['scale']}, seed {cfg['seed']})")
    axes[0].legend()
    save_figure(fig, path)


__all__ = ["curve_points", "write_finetune_report"]
