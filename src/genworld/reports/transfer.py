"""``genworld train agnostic-transfer``'s report: report.json (what
:func:`genworld.train.transfer.run_transfer` returned), report.md rendered from it, and
transfer.png (the target's normalized score against updates, fine-tuned vs from scratch)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from genworld.reports.run import count
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure
from genworld.utils.provenance import cells_code_line, provenance_line

LABELS = {"finetune": "pretrained, fine-tuned", "scratch": "from scratch"}


def write_transfer_report(report: dict[str, Any], out: Path) -> list[Path]:
    """report.md (first), report.json and transfer.png in ``out``."""
    out = Path(out)
    atomic_write_json(out / "report.json", report)
    plot = out / "transfer.png"
    _plot(report, plot)
    atomic_write_bytes(out / "report.md", _markdown(report, plot.name).encode())
    return [out / "report.md", out / "report.json", plot]


def _markdown(report: dict[str, Any], plot: str) -> str:
    cfg, summary = report["config"], report["summary"]
    k, pre = cfg["last_k"], report["pretrain_score"]
    seeds = len(report["seeds"]) if "seeds" in report else cfg["seeds"]
    specific = cfg.get("networks", "agnostic") == "env-specific"
    kept = (
        "the shared middle; the target's encoders and decoders start fresh"
        if specific
        else ("every weight but the task embedding")
    )
    agent = "Env-specific agent" if specific else "Agnostic"
    starts = report["curves"]["finetune"][:1]
    from_zero = bool(starts) and starts[0]["step"] == 0
    first = "before training" if from_zero else "first evaluation"
    area = " (step 0 included)" if from_zero else ""
    lines = [
        f"# {agent} transfer to {report['target']} ({cfg['scale']}, {count(seeds, 'seed')})",
        "",
        f"Pretrained with DD-IQL on {', '.join(cfg['pretrain'])} for {cfg['pretrain_steps']:,} "
        f"updates (normalized score there {_pm(pre)}),"
        f" then {cfg['finetune_steps']:,} updates on `{cfg['target']}` starting from those "
        f"networks ({kept}), against the same run from a fresh "
        f"initialisation. Evaluations every {cfg['eval_every']:,} updates, "
        f"{count(cfg['eval_episodes'], 'deterministic episode')} each; scores are D4RL-normalized on "
        "genworld's regenerated datasets (not D4RL's).",
        "",
        f"| run | {first} | mean of all evaluations{area} | last {k} |",
        "|---|---|---|---|",
    ]
    for name, label in LABELS.items():
        s = summary[name]
        lines.append(f"| {label} | {_pm(s['first'])} | {_pm(s['area'])} | {_pm(s['last_k'])} |")
    leads = ", ".join(f"{v:+.1f}" for v in report["lead_per_seed"])
    lines += ["", f"Fine-tuned minus scratch, last {k}, per seed: {leads}."]
    if report.get("unfinished_seeds"):
        left = ", ".join(str(s) for s in report["unfinished_seeds"])
        lines += ["", f"Seeds not finished yet, left out: {left}."]
    return "\n".join(lines + seeds_footer(report, plot, seeds))


def _pm(figure: dict[str, float]) -> str:
    """``mean ± std`` (the std over seeds)."""
    return f"{figure['mean']:.1f} ± {figure['std']:.1f}"


def seeds_footer(report: dict[str, Any], plot: str, seeds: int = 1) -> list[str]:
    """A report's closing lines: what its ``seeds`` per run are worth, the wall time, the code
    and machine, the plot."""
    worth = (
        "One seed: a direction, not a result."
        if seeds == 1
        else f"{seeds} seeds per run; ± is the population standard deviation over seeds."
    )
    code = provenance_line(report["provenance"])
    wall = ""  # a report-only render times nothing
    if report.get("report_only"):  # the runs were trained by other commands
        runs = [{"provenance": p} for p in report.get("runs_provenance", {}).values()]
        made = cells_code_line(runs, noun="run")
        code = f"{made} This report: {code.removeprefix('**Code**: ')}"
    else:
        wall = f" Wall time of this command {report['wall_seconds']:.0f} s."
    return [
        "",
        worth + wall,
        "",
        code,
        "",
        f"![{plot}]({plot})",
        "",
    ]


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, label in LABELS.items():
        points = report["curves"][name]
        ax.plot([p["step"] for p in points], [p["score"] for p in points], marker="o", label=label)
    ax.set_xlabel("updates on the target")
    ax.set_ylabel(f"{report['target']} normalized score")
    ax.set_title(f"transfer to {report['target']}")
    ax.legend()
    save_figure(fig, path)
