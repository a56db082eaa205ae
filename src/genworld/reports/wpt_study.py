"""``genworld wpt-study``'s report: per target task and variant the final return (the mean of a
run's last k evaluations) with a 95% bootstrap CI over seeds, the learning curves (mean return
against environment steps, with the same CI per evaluation), the Meta-World success rates, and
the issue's claims checked on the numbers (wpt_study.md / .json / .png)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from genworld.reports.table import bootstrap_reps
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure
from genworld.utils.provenance import cells_code_line, provenance

NAMES = {"scratch": "scratch (DreamerV3)", "p": "P", "p+er": "P+ER", "p+er+g": "P+ER+G (WPT)"}


def mean_ci(values: list[float], reps: int, seed: int = 0) -> tuple[float, float, float]:
    """The mean and its 95% percentile-bootstrap interval over ``values`` (seeded: the same
    numbers give the same interval); one value has no interval (its mean twice)."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()), float(x.mean()), float(x.mean())
    rng = np.random.default_rng(seed)
    means = x[rng.integers(0, len(x), (reps, len(x)))].mean(1)
    return float(x.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def _returns(report: dict[str, Any]) -> tuple[list[int], list[float], list[float] | None]:
    task = report["config"]["task"]
    curve = report["curve"]
    steps = [r["env_steps"] for r in curve]
    returns = [r[f"eval/{task}/return"] for r in curve]
    key = f"eval/{task}/success_rate"
    success = [r[key] for r in curve] if curve and key in curve[0] else None
    return steps, returns, success


def summarize(cfg, reports: list[dict], reps: int) -> dict[str, dict[str, dict]]:
    """``{task: {variant: row}}``: per-seed finals, their mean and CI, the success rate (mean of
    the last k, Meta-World) and the curve (mean and CI per evaluation over the seeds that
    reached it)."""
    out: dict[str, dict[str, dict]] = {}
    k = cfg.last_k
    for task in cfg.tasks:
        for variant in cfg.variants:
            runs = [
                r for r in reports
                if r["config"]["task"] == task and r["config"]["variant"] == variant
            ]  # fmt: skip
            if not runs:
                continue
            finals, rates, by_step = [], [], {}
            for r in sorted(runs, key=lambda r: r["config"]["seed"]):
                steps, returns, success = _returns(r)
                finals.append(float(np.mean(returns[-k:])))
                if success is not None:
                    rates.append(float(np.mean(success[-k:])))
                for step, value in zip(steps, returns, strict=True):
                    by_step.setdefault(step, []).append(value)
            mean, low, high = mean_ci(finals, reps)
            curve = []
            for step, values in sorted(by_step.items()):
                m, lo, hi = mean_ci(values, reps)
                curve.append(
                    {"env_steps": step, "mean": m, "low": lo, "high": hi, "n": len(values)}
                )
            out.setdefault(task, {})[variant] = {
                "seeds": len(finals),
                "seed_ids": sorted(r["config"]["seed"] for r in runs),
                "per_seed": finals,
                "final_return": mean,
                "ci": [low, high],
                "success_rate": float(np.mean(rates)) if rates else None,
                "same_embodiment_share": _retrieval_share(runs),
                "retrieval_contested": _contested(runs),
                "sparse_hits": _sparse_hits(runs),
                "curve": curve,
            }
    return out


def _sparse_hits(runs: list[dict]) -> int | None:
    """The paid control steps of a hard task over the runs' online episodes (None: not a hard
    task, or runs made before genworld counted them)."""
    hits = [r.get("sparse_hits") for r in runs]
    return None if any(h is None for h in hits) else int(sum(hits))


def _retrieval_share(runs: list[dict]) -> float | None:
    shares = [r["retrieval"]["same_embodiment_share"] for r in runs if r.get("retrieval")]
    return float(np.mean(shares)) if shares else None


def _contested(runs: list[dict]) -> bool | None:
    """Whether the retrieval chose among several embodiments of the target's action size (None
    without retrieval); with one, every retrieval is of it by construction."""
    found = [r["retrieval"] for r in runs if r.get("retrieval")]
    return len(found[0].get("candidate_embodiments", [])) > 1 if found else None


def complete(cfg, rows: dict[str, dict], variants: tuple[str, ...]) -> bool:
    """Whether every one of ``variants`` has all the study's seeds finished on a task (so a
    comparison is on the same seeds, not on whichever finished first)."""
    seeds = list(range(cfg.seeds))
    return all(v in rows and rows[v]["seed_ids"] == seeds for v in variants)


def paired_ci(row: dict, other: dict, reps: int) -> list[float]:
    """The 95% bootstrap CI of the mean of ``row`` − ``other``'s per-seed finals, seed by seed
    (the rows of :func:`summarize`, both with the same seeds)."""
    gaps = np.subtract(row["per_seed"], other["per_seed"])
    return list(mean_ci(list(gaps), reps)[1:])


def claims(cfg, summary: dict) -> dict[str, dict[str, Any]]:
    """The issue's three claims that can fail here, each with its numbers and a verdict
    (``holds``: True / False, or None while the study lacks what it needs). A task counts once
    the compared variants have every seed finished (``unfinished``: those that have not yet).
    The first claim leaves the hard tasks out: their action penalty lets a policy that keeps
    still beat a random one by about 140 return without running."""
    dmc = [t for t in cfg.tasks if t.startswith("dmc-") and not t.endswith("-hard")]
    gaps = {
        task: summary[task]["p+er+g"]["final_return"] - summary[task]["scratch"]["final_return"]
        for task in dmc
        if complete(cfg, summary.get(task, {}), ("p+er+g", "scratch"))
    }
    wins, pending = sum(g >= 100 for g in gaps.values()), len(dmc) - len(gaps)
    reps = bootstrap_reps(cfg.scale)
    beats = {
        "claim": "WPT (P+ER+G) beats the from-scratch RSSM by ≥ 100 return on at least 2 DMC tasks",
        "gaps": gaps,
        # seed k of both variants met the same evaluation episodes: the CI of the paired gaps
        "gap_ci": {t: paired_ci(summary[t]["p+er+g"], summary[t]["scratch"], reps) for t in gaps},
        "unfinished": [t for t in dmc if t not in gaps],
        # decided once 2 tasks win, or once the unfinished ones could no longer make 2
        "holds": None if len(dmc) < 2 else True if wins >= 2 else
        False if wins + pending < 2 else None,
    }  # fmt: skip
    order: dict[str, Any] = {"claim": "on a sparse (hard) task, P+ER+G ≥ P+ER ≥ P", "tasks": {}}
    hard = [t for t in cfg.tasks if t.endswith("-hard")]
    order["no_signal"] = []  # no run of any compared variant was ever paid: an empty ranking
    for task in hard:
        if complete(cfg, summary.get(task, {}), ("p", "p+er", "p+er+g")):
            if all(summary[task][v]["sparse_hits"] == 0 for v in ("p", "p+er", "p+er+g")):
                order["no_signal"].append(task)
                continue
            order["tasks"][task] = [
                summary[task][v]["final_return"] for v in ("p+er+g", "p+er", "p")
            ]
    order["unfinished"] = [
        t for t in hard if t not in order["tasks"] and t not in order["no_signal"]
    ]
    order["separated"] = {  # (P+ER+G vs P+ER, P+ER vs P): the paired gap's CI excludes 0
        task: [
            not low <= 0.0 <= high
            for low, high in (
                paired_ci(summary[task][a], summary[task][b], reps)
                for a, b in (("p+er+g", "p+er"), ("p+er", "p"))
            )
        ]
        for task in order["tasks"]
    }
    ordered = [a >= b >= c for a, b, c in order["tasks"].values()]
    order["holds"] = (
        False if not all(ordered) else True if ordered and not order["unfinished"] else None
    )
    shares, unmeasured = {}, []  # one retrieval per task: the variants with one share it
    for task, rows in summary.items():
        row = next((r for r in rows.values() if r["same_embodiment_share"] is not None), None)
        if row is not None and row["retrieval_contested"]:
            shares[task] = row["same_embodiment_share"]
        elif row is not None:
            unmeasured.append(task)
    retrieval = {
        "claim": "retrieval finds trajectories of the right embodiment in ≥ 95% of retrievals",
        "tasks": shares,
        "share": min(shares.values()) if shares else None,  # the worst task's
        "not_measured": unmeasured,  # one embodiment of the target's action size: 1 by design
        "holds": min(shares.values()) >= 0.95 if shares else None,
    }
    return {"wpt_beats_scratch": beats, "guidance_order_sparse": order, "retrieval": retrieval}


def write_wpt_study_report(
    cfg, reports: list[dict], planned: int, out: Path, failed: list[dict] = ()
) -> dict[str, Any]:
    """wpt_study.json / .md / .png in ``out``; returns the JSON. ``failed``: the records of
    the runs that failed (:mod:`genworld.train.failures`), named in the report."""
    out = Path(out)
    reps = bootstrap_reps(cfg.scale)
    summary = summarize(cfg, reports, reps)
    report = {
        "config": asdict(cfg),
        "planned_runs": planned,
        "finished_runs": len(reports),
        "failed_runs": [{"folder": f["folder"], "error": f["error"]} for f in failed],
        "summary": summary,
        "claims": claims(cfg, summary),
        "provenance": provenance(),
    }
    atomic_write_json(out / "wpt_study.json", report)
    plot = out / "wpt_study.png"
    if summary:
        _plot(summary, plot)
    text = _markdown(cfg, report, reports, plot.name if summary else None)
    atomic_write_bytes(out / "wpt_study.md", text.encode())
    return report


def _unfinished_line(c: dict) -> list[str]:
    """A line naming the tasks a claim still waits for (not every seed finished), if any."""
    waiting = [
        f"{name}: {', '.join(claim['unfinished'])}"
        for name, claim in (("first claim", c["wpt_beats_scratch"]),
                            ("second claim", c["guidance_order_sparse"]))
        if claim.get("unfinished")
    ]  # fmt: skip
    return (
        [f"Tasks without every seed of the compared variants ({'; '.join(waiting)}).", ""]
        if (waiting)
        else []
    )


def _failed_lines(failed: list[dict]) -> list[str]:
    """The runs that failed, each with its error (the traceback is in its ``error.json``)."""
    if not failed:
        return []
    runs = "; ".join(f"`{f['folder']}`: {f['error']}" for f in failed)
    return [f"**Failed runs ({len(failed)})**, retried by a rerun: {runs}.", ""]


def _verdict(holds: bool | None) -> str:
    return "not measured" if holds is None else "holds" if holds else "**fails**"


def _markdown(cfg, report: dict, reports: list[dict], plot: str | None) -> str:
    summary, c = report["summary"], report["claims"]
    lines = [
        f"# WPT study ({cfg.scale}): {report['finished_runs']} of {report['planned_runs']} runs",
        "",
        f"Fine-tuning of one pre-trained world model (`{cfg.world_model or 'pretrain/'}`) on each "
        f"target task; final return = the mean of a run's last {cfg.last_k} evaluations; mean "
        "over seeds with a 95% percentile-bootstrap CI (few seeds: a wide, rough interval).",
        "",
        "| task | variant | seeds | final return [95% CI] | success rate | same-embodiment "
        "retrievals |",
        "|---|---|---|---|---|---|",
    ]
    for task, rows in summary.items():
        for variant, row in rows.items():
            low, high = row["ci"]
            rate = "" if row["success_rate"] is None else f"{row['success_rate']:.2f}"
            share = row["same_embodiment_share"]
            lines.append(
                f"| {task} | {NAMES[variant]} | {row['seeds']} | {row['final_return']:.1f} "
                f"[{low:.1f}, {high:.1f}] | {rate} | {'' if share is None else f'{share:.0%}'} |"
            )
    gap_ci = c["wpt_beats_scratch"].get("gap_ci", {})
    gaps = ", ".join(
        f"{t} {g:+.1f}" + (f" [{gap_ci[t][0]:+.1f}, {gap_ci[t][1]:+.1f}]" if t in gap_ci else "")
        for t, g in c["wpt_beats_scratch"]["gaps"].items()
    )
    separated = c["guidance_order_sparse"].get("separated", {})
    share = c["retrieval"]["share"]
    lines += [
        "",
        "## Claims",
        "",
        f"- {c['wpt_beats_scratch']['claim']}: {_verdict(c['wpt_beats_scratch']['holds'])}"
        + (f" (P+ER+G − scratch, with the 95% CI of the seed-paired gaps: {gaps})" if gaps else ""),
        f"- {c['guidance_order_sparse']['claim']}: {_verdict(c['guidance_order_sparse']['holds'])}"
        + "".join(
            f" ({t}: P+ER+G / P+ER / P {a:.1f} / {b:.1f} / {p:.1f}"
            + ("" if all(separated.get(t, [True])) else "; inside the noise: a paired gap's CI "
               "holds 0") + ")"
            for t, (a, b, p) in c["guidance_order_sparse"]["tasks"].items()
        )
        + "".join(
            f" ({t}: no run of P, P+ER or P+ER+G was ever paid its sparse reward, so its "
            "returns rank only the action penalty)"
            for t in c["guidance_order_sparse"].get("no_signal", [])
        ),
        f"- {c['retrieval']['claim']}: {_verdict(c['retrieval']['holds'])}"
        + (" (per task: " + ", ".join(f"{t} {v:.0%}" for t, v in c["retrieval"]["tasks"].items())
           + "; the worst decides)" if share is not None else "")
        + (f"; not measured on {', '.join(c['retrieval']['not_measured'])}: the pre-training "
           "data has one embodiment of its action size" if c["retrieval"]["not_measured"] else ""),
        "",
        *_unfinished_line(c),
        *_failed_lines(report["failed_runs"]),
        "Caveats:",
        "- The first claim is judged on the DMC tasks without `-hard`: a hard task's action "
        "penalty lets a policy that keeps still beat a random one by about 140 return.",
        "- Retrieval: each stored trajectory's key is encoded with its own body's input layer "
        "and statistics, the query with the target's, so the share measures whether the "
        "per-body layers keep the bodies apart. There is one retrieval per task (its queries "
        "start from fixed reset seeds, the same for every seed): one trajectory of another "
        "body among those kept lowers the share by 1/kept.",
        "- Scratch is DreamerV3's architecture and actor-critic; its reward head's gradient "
        "reaches the latents, as in DreamerV3 (the pre-trained variants' reward head trains on "
        "detached latents, as WPT's code does), and it uses the pre-trained model's "
        "observation statistics.",
        "- Every seed fine-tunes the same pre-trained model and the same retrieval: the CIs "
        "cover fine-tuning's variation, not pre-training's.",
        "- The pre-training presets use Gaussian latents, so unimix 0.01 (a categorical "
        "latent's) does not apply; `genworld pretrain world-model --rssm.latent categorical` "
        "pre-trains categorical latents with it.",
        "",
        cells_code_line([{"provenance": r["provenance"]} for r in reports], noun="run"),
        "",
    ]  # fmt: skip
    if plot:
        lines += [f"![{plot}]({plot})", ""]
    return "\n".join(lines)


def _plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = list(summary)
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.2 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for variant, row in summary[task].items():
            steps = [p["env_steps"] for p in row["curve"]]
            ax.plot(steps, [p["mean"] for p in row["curve"]], label=NAMES[variant])
            low, high = [p["low"] for p in row["curve"]], [p["high"] for p in row["curve"]]
            ax.fill_between(steps, low, high, alpha=0.2)
        ax.set_title(task)
        ax.set_xlabel("environment steps")
        ax.set_ylabel("return")
    axes[0][0].legend(fontsize=8)
    save_figure(fig, path)
