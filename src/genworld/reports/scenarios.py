"""The report of ``genworld scenarios`` (MrCoM's studies, seed 002 §5 and App. C): a table per
study (a row per setting, task and split; a column per method, mean ± std across seeds of the
mean over the row's target scenarios), IQM with bootstrap CIs per split, a bar chart per method,
and the data and protocol caveats. scenarios.md / scenarios.json / scenarios.png."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from genworld.eval.scores import precision_counts, precision_note
from genworld.reports.table import (
    bootstrap_reps,
    difference_ci_text,
    iqm_with_ci,
    paired_difference_ci,
    seeds_text,
)
from genworld.utils.io import atomic_write_bytes, atomic_write_json, save_figure
from genworld.utils.provenance import cells_code, cells_code_line, provenance

TITLES = {
    "multi": "multi-scenario (Table 1)",
    "dynamics": "dynamics changed only (Table 2)",
    "perturb": "observation perturbations (Table 3)",
    "single": "single scenario (Table 4)",
    "behaviour": "behaviour-data quality (Table 5)",
    "ablation": "each regulariser's ablation (multi-scenario data)",
}
PAPER = {
    "multi": "the paper's means over all of Table 1's cells, its sub-tables (a)–(d): MrCoM 49.7, "
    "DreamerV3 43.0, CaDM 39.4, MAMBA 34.8; over its out-of-distribution sub-table (d) alone: "
    "46.8 / 36.1 / 29.5 / 21.7",
    "dynamics": "the paper's means over Table 2's cells: MrCoM 56.9, DreamerV3 50.6, CaDM 51.3, "
    "MAMBA 46.6",
    "perturb": "the paper's means over Table 3's cells: MrCoM 61.2, DreamerV3 57.2, CaDM 52.3, "
    "MAMBA 58.7",
    "single": "the paper's means over Table 4's cells (its sub-tables (a)–(d)): MrCoM 51.5, "
    "DreamerV3 50.6, CaDM 45.6, MAMBA 40.3",
    "behaviour": "the paper's means over Table 5's cells: MrCoM 52.7, DreamerV3 51.8, CaDM 42.1, "
    "MAMBA 45.0; over its walker and cheetah cells alone (hopper-stand has no target speed to "
    "draw, so this study leaves it out): 51.5 / 51.1 / 41.1 / 44.1. The paper adapts online "
    "(100k environment steps); this study adapts offline from each target's data",
}
SPLITS = {"id": "in distribution", "ood": "out of distribution"}
ERROR_SPLITS = {"train": "training scenarios", **SPLITS}
"""The world-model error table's columns: the training scenarios, then the held-out ones."""


def row_keys(cfg, groups) -> list[tuple[str, str, str]]:
    """(group, env, split) of every row, in the study's order (the splits it runs cells on)."""
    return [
        (g.name, env, split)
        for g in groups
        for env in g.envs
        for split in g.splits
        if split in cfg.splits
    ]


def row_targets(cells, key) -> int:
    """How many target scenarios the row ``key`` (group, env, split) has in the study."""
    return len({c.target for c in cells if (c.group, c.env, c.split) == key})


def row_stats(results: list[dict], key, method: str, seeds: int, targets: int) -> dict:
    """Mean ± std across the seeds that finished all ``targets`` of the row, of each seed's mean
    over them (``n`` seeds). A seed part-way through its targets does not count; when no seed
    has finished, ``partial`` holds the most-advanced seed's mean over its finished targets
    (``{"mean", "targets"}``), else None."""
    group, env, split = key
    per_seed, finished, partial = [], [], None
    for seed in range(seeds):
        values = [
            r["last_k"]
            for r in results
            if (r["group"], r["env"], r["split"], r["method"], r["seed"])
            == (group, env, split, method, seed)
        ]
        if len(values) >= targets:
            per_seed.append(float(np.mean(values)))
            finished.append(seed)
        elif values and (partial is None or len(values) > partial["targets"]):
            partial = {"mean": float(np.mean(values)), "targets": len(values)}
    if not per_seed:
        return {"mean": float("nan"), "std": float("nan"), "n": 0, "partial": partial, "seeds": {}}
    mean, std = float(np.mean(per_seed)), float(np.std(per_seed))
    by_seed = dict(zip(finished, per_seed, strict=True))
    return {"mean": mean, "std": std, "n": len(per_seed), "partial": None, "seeds": by_seed}


def row_text(stats: dict, seeds: int, targets: int) -> str:
    """A row entry: mean ± std over the finished seeds (:func:`seeds_text`), or a seed's mean
    over the targets it has finished, marked ``(k of T targets)``."""
    if stats["n"] == 0 and stats["partial"]:
        return (
            f"{stats['partial']['mean']:.1f} ({stats['partial']['targets']} of {targets} targets)"
        )
    return seeds_text(stats["mean"], stats["std"], stats["n"], seeds)


def common_seeds(row: dict, methods: list[str]) -> list[int]:
    """The seeds every method has finished on ``row`` (all its targets)."""
    sets = [set(row["methods"][m].get("seeds", {})) for m in methods]
    return sorted(set.intersection(*sets)) if sets else []


def split_averages(rows: list[dict], methods: list[str], split: str) -> dict:
    """Each method's mean over the split's rows that every compared method has finished for a
    seed or more, each row on the seeds they have all finished (the same rows and seeds for all,
    so a method ahead on easy tasks or with more seeds is not favoured); ``rows`` / ``of``: how
    many rows that is, of the split's. A method with no finished row in the split is not
    compared (``without``; its average is NaN) rather than blanking every other's."""
    split_rows = [r for r in rows if r["split"] == split]
    compared = [m for m in methods if any(r["methods"][m].get("seeds") for r in split_rows)]
    common = [(r, common_seeds(r, compared)) for r in split_rows] if compared else []
    common = [(r, seeds) for r, seeds in common if seeds]

    def row_mean(row: dict, method: str, seeds: list[int]) -> float:
        return float(np.mean([row["methods"][method]["seeds"][s] for s in seeds]))

    means = {
        m: float(np.mean([row_mean(r, m, seeds) for r, seeds in common]))
        if common and m in compared
        else float("nan")
        for m in methods
    }
    without = [m for m in methods if m not in compared]
    return {"methods": means, "rows": len(common), "of": len(split_rows), "without": without}


def split_iqms(cfg, cells, results: list[dict], split: str, reps: int) -> dict[str, dict]:
    """IQM (0–100) with 95% stratified bootstrap CIs over the split's targets × seeds, for each
    method with every such cell finished."""
    scores = {
        (r["group"], r["env"], r["target"], r["method"], r["seed"]): r["last_k"] for r in results
    }
    targets = sorted({(c.group, c.env, c.target) for c in cells if c.split == split})
    matrices = {
        m: np.array([[scores[(*t, m, s)] / 100.0 for t in targets] for s in range(cfg.seeds)])
        for m in cfg.methods
        if targets and all((*t, m, s) in scores for t in targets for s in range(cfg.seeds))
    }
    return iqm_with_ci(matrices, reps) if matrices else {}


CLAIM_MARGIN = 5.0
"""The claim under test: MrCoM beats the context-free RSSM out of distribution by ≥ 5 points."""
ABLATIONS = ("mrcom-no-meta-state", "mrcom-no-meta-value")


def paired_claim(cfg, cells, results, split: str, first: str, second: str, claim: str,
                 margin: float = 0.0) -> dict | None:  # fmt: skip
    """``first``'s mean over ``split``'s targets minus ``second``'s, > ``margin`` (≥ when the
    margin is not 0), over the seeds both have finished on every target (``seeds``), with the
    95% CI of the seed-paired differences (per target, resampled over seeds); judged once that
    is every seed. None when the study runs neither method on the split."""
    targets = sorted({(c.group, c.env, c.target) for c in cells if c.split == split})
    if not targets or first not in cfg.methods or second not in cfg.methods:
        return None
    scores = {
        (r["method"], (r["group"], r["env"], r["target"]), r["seed"]): r["last_k"]
        for r in results
        if r["split"] == split
    }
    pair = (first, second)
    common = [
        s for s in range(cfg.seeds)
        if all((m, t, s) in scores for m in pair for t in targets)
    ]  # fmt: skip
    ordered = {(m, t): [scores[(m, t, s)] for s in common] for m in pair for t in targets}
    means = {m: float(np.mean([ordered[(m, t)] for t in targets])) for m in pair} if common else {}
    ci = paired_difference_ci(ordered, pair, targets) if len(common) > 1 else None
    holds = None
    if len(common) == cfg.seeds:
        gap = means[first] - means[second]
        holds = bool(gap >= margin if margin else gap > 0.0)
    return {
        "claim": f"{claim} ({SPLITS[split]})",
        "averages": means,
        "targets": len(targets),
        "seeds": len(common),
        "of_seeds": cfg.seeds,
        "difference_ci": ci,
        "inside_noise": None if ci is None else bool(ci[0] <= 0.0 <= ci[1]),
        "holds": holds,
    }


def paired_claim_line(c: dict) -> str:
    verdict = "holds" if c["holds"] else "**fails**" if c["holds"] is False else "not judged yet"
    on = f"{c['seeds']} of {c['of_seeds']} seeds on all {c['targets']} targets"
    if not c["averages"]:
        return f"- {c['claim']}: {verdict} ({on})"
    numbers = ", ".join(f"{m} {v:.1f}" for m, v in c["averages"].items())
    if c["difference_ci"] is None:
        return f"- {c['claim']}: {verdict} ({on}: {numbers}; one seed, no CI)"
    return (
        f"- {c['claim']}: {verdict} ({on}: {numbers}"
        f"{difference_ci_text(c['difference_ci'], c['inside_noise'])})"
    )


def scenario_claims(cfg, cells, results: list[dict]) -> dict[str, dict]:
    """The claims under test that the study's cells can judge: MrCoM beats the context-free RSSM
    by ≥ 5 out of distribution, and each regulariser's ablation scores below full MrCoM (on
    every split the study runs)."""
    splits = list(dict.fromkeys(c.split for c in cells))
    claims = {}
    if "ood" in splits and (
        c := paired_claim(cfg, cells, results, "ood", "mrcom", "rssm",
                          f"MrCoM ≥ the context-free RSSM + {CLAIM_MARGIN:g}", CLAIM_MARGIN)
    ):  # fmt: skip
        claims["mrcom_beats_rssm_ood"] = c
    for ablation in ABLATIONS:
        for split in splits:
            text = f"MrCoM > MrCoM without {ablation.removeprefix('mrcom-no-')}"
            if c := paired_claim(cfg, cells, results, split, "mrcom", ablation, text):
                claims[f"mrcom_beats_{ablation}_{split}"] = c
    return claims


def error_claims(table: dict, horizon: int = 5) -> tuple[list[str], dict]:
    """MrCoM's ``horizon``-step error on each held-out split below the context-free RSSM's and
    CaDM's, per setting (the world models of seed 0), the RSSM that filters MrCoM's context
    shown beside them: markdown lines and the JSON verdicts."""
    verdicts, lines = {}, []
    for group, kinds in table.items():
        for split in SPLITS:
            if not all(split in kinds.get(k, {}) for k in ("mrcom", "rssm", "cadm")):
                continue
            errors = {k: kinds[k][split] for k in ("mrcom", "rssm", "cadm", "rssm-context")
                      if split in kinds.get(k, {})}  # fmt: skip
            holds = errors["mrcom"] < min(errors["rssm"], errors["cadm"])
            verdicts[f"{group}/{split}"] = {**errors, "holds": holds}
            numbers = ", ".join(f"{k} {v:.3f}" for k, v in errors.items())
            lines.append(
                f"- MrCoM's {horizon}-step error below the context-free RSSM's and CaDM's "
                f"({group}, {SPLITS[split]}): {'holds' if holds else '**fails**'} ({numbers}; "
                "seed 0's world models)"
            )
    return lines, verdicts


def protocol_lines(cfg, scenario_names: dict, policy: dict | None = None) -> list[str]:
    """The data and protocol paragraphs; ``policy``: the SAC settings the model-based cells
    adapt with (its temperature lr is stated when given)."""
    splits = [s for s in SPLITS if s in cfg.splits and (cfg.study not in ("perturb", "behaviour")
              or s == "id")]  # fmt: skip
    counts = ", ".join(
        f"{env}: {len(v['train'])} training, "
        + " and ".join(f"{len(v[s])} {SPLITS[s]}" for s in splits)
        + " targets"
        for env, v in scenario_names.items()
    )
    quality = (
        f"qualities {', '.join(cfg.qualities)} (a world model each; every group adapts from "
        f"the same `{cfg.quality}` target data, so only the world model's data changes)"
        if cfg.study == "behaviour"
        else f"quality `{cfg.quality}`"
    )
    ranges = (
        "torso and length fixed at 1, speed drawn from [0.5, 1.0]"
        if cfg.study == "behaviour"
        else "training ranges torso and length [0.8, 1.2], speed [0.5, 1.0]"
        + (", out of distribution outside them" if "ood" in splits else "")
    )
    wm = f"{cfg.wm_steps} updates" if cfg.wm_steps else "each model's preset updates"
    return [
        "**Data**: made by genworld in the DeepMind Control Suite (dm_control, state "
        "observations) with genworld's own scenario-conditioned SAC behaviour policy, "
        f"{quality}: {cfg.train_steps} transitions per training scenario, {cfg.target_steps} "
        "per target (its small adaptation dataset). Not the paper's data. Scores are normalized "
        "as return / 10 (DMC returns are in [0, 1000]); the paper's normalization is not given, "
        "so its numbers are context, not a target.",
        "",
        f"**Protocol**: scale `{cfg.scale}`; {cfg.seeds} seed(s); scenarios drawn with seed "
        f"{cfg.scenario_seed} ({counts}; {ranges}; ours: the seed text lost the paper's"
        + (
            f"; the target speed fixed at {cfg.fixed_speed:g} where a task has one"
            if cfg.study == "dynamics"
            else ""
        )
        + "). One world model per setting, model kind and seed, "
        f"{wm} (a cell of seed k adapts in seed k's model: the spread over seeds holds the "
        "world model's and the adaptation's); a policy per (method, "
        f"target, seed): {cfg.policy_updates} SAC updates of offline MBPO from the target's "
        "data in that model, scored in the target's real env as the mean of the last "
        f"{cfg.last_k} evaluations ({cfg.eval_episodes} episode(s) each); mean ± std "
        "(population, ddof 0) across seeds of the mean over a row's targets; an average row "
        "compares the methods on the rows and seeds they have all finished; SAC's initial "
        "temperature "
        f"{cfg.policy_init_alpha:g}"
        + (f", its lr {policy['alpha_lr']:g}" if policy and "alpha_lr" in policy else "")
        + "."
        + (
            " Below full scale the policy learner is the one every model-based method shares "
            "(half real rows, a TD3+BC-form behaviour term, the RL term weighted "
            f"{cfg.policy_bc_alpha:g}), not the paper's plain SAC."
            if cfg.scale != "full"
            else ""
        )
        + (
            f" `td3bc` (not in the paper) is TD3+BC trained {cfg.policy_updates} updates on the "
            "target's data alone, no world model: what a method's model rollouts have to beat."
            if "td3bc" in cfg.methods
            else ""
        ),
    ]


def error_lines(errors: dict, horizon: int = 5) -> tuple[list[str], dict]:
    """The world models' ``horizon``-step observation error on held-out scenarios, per setting,
    model and split, averaged over tasks: markdown lines and the JSON table."""
    table: dict = {}
    lines = []
    for group, kinds in errors.items():
        for kind, splits in kinds.items():
            for split, per_task in splits.items():
                values = [e[f"obs_h{horizon}"] for e in per_task.values()]
                table.setdefault(group, {}).setdefault(kind, {})[split] = float(np.mean(values))
    if not table:
        return [], table
    found = {s for kinds in table.values() for k in kinds.values() for s in k}
    splits = [s for s in ERROR_SPLITS if s in found]
    lines += [
        "",
        f"World models' {horizon}-step observation error on their training scenarios and on the "
        "held-out target scenarios (open loop on the data's actions, deterministic; MSE in units "
        "of the training data's per-dim variance, mean over tasks; the mean predictor scores "
        "about 1, `copy` is the predictor of no change):",
        "",
        "| setting | world model | " + " | ".join(ERROR_SPLITS[s] for s in splits) + " |",
        "|---|---|" + "---|" * len(splits),
    ]
    for group, kinds in table.items():
        for kind, values in kinds.items():
            cells = [f"{values[s]:.3f}" if s in values else "—" for s in splits]
            lines.append(f"| {group} | {kind} | " + " | ".join(cells) + " |")
    return lines, table


WINDOW_FIELDS = {"mrcom": "context_len", "rssm": "seq_len", "cadm": "history", "tgw": "context_len"}
"""The field of each world model's config that says how many steps a training row holds."""


def world_model_budget_line(out: Path, groups) -> list[str]:
    """What each of the study's world models trained on (seed 0's config): updates × batch ×
    steps a row, which the models share in updates but not in data per update."""
    import json

    parts = []
    for group in groups:
        for path in sorted((out / "world_models" / group.name).glob("*/config.json")):
            if "-seed" in path.parent.name:
                continue
            cfg = json.loads(path.read_text())
            window = cfg.get(cfg["model"], {}).get(WINDOW_FIELDS.get(cfg["model"], ""), 1)
            name = path.parent.name if len(groups) == 1 else f"{group.name}/{path.parent.name}"
            parts.append(f"`{name}` {cfg['steps']:,} × {cfg['batch_size']} rows of {window} steps")
    if not parts:
        return []
    return ["", "World models (updates × batch, steps a row): " + "; ".join(parts) + "."]


def write_scenarios_report(
    cfg,
    groups,
    cells,
    scenario_names: dict,
    results: list[dict],
    out: Path,
    planned=None,
    errors: dict | None = None,
    policy: dict | None = None,
) -> dict:
    """scenarios.md / scenarios.json / scenarios.png from the finished cells ``results`` and the
    world models' held-out ``errors``; ``planned``: the study's cell count when they are the
    cells finished so far; ``policy``: the model-based cells' SAC settings."""
    methods = list(cfg.methods)
    lines = [f"# Scenarios: {TITLES[cfg.study]}", "", *protocol_lines(cfg, scenario_names, policy)]
    lines += world_model_budget_line(out, groups)
    lines += ["", cells_code_line(results), ""]
    if cfg.study in PAPER:
        lines += [f"For context, {PAPER[cfg.study]}.", ""]
    lines += ["| setting | task | split | " + " | ".join(methods) + " |"]
    lines += ["|---|---|---|" + "---|" * len(methods)]
    rows = []
    for key in row_keys(cfg, groups):
        targets = row_targets(cells, key)
        stats = {m: row_stats(results, key, m, cfg.seeds, targets) for m in methods}
        rows.append({"group": key[0], "env": key[1], "split": key[2], "methods": stats})
        texts = [row_text(s, cfg.seeds, targets) for s in stats.values()]
        lines.append(f"| {key[0]} | {key[1]} | {SPLITS[key[2]]} | " + " | ".join(texts) + " |")
    summary: dict = {"rows": rows, "averages": {}, "average_rows": {}, "iqm": {}}
    reps = bootstrap_reps(cfg.scale)
    iqm_lines, iqm_missing = [], []
    for split in dict.fromkeys(k[2] for k in row_keys(cfg, groups)):
        average = split_averages(rows, methods, split)
        summary["averages"][split] = average["methods"]
        summary["average_rows"][split] = {
            "rows": average["rows"],
            "of": average["of"],
            "without": average["without"],
        }
        texts = ["—" if np.isnan(v) else f"{v:.1f}" for v in average["methods"].values()]
        label = "**average**" + (
            f" ({average['rows']} of {average['of']} rows: those every method has finished)"
            if 0 < average["rows"] < average["of"]
            else ""
        )
        if average["without"] and average["rows"]:
            label += f" (without {', '.join(average['without'])}: no finished row)"
        lines.append(f"| {label} | | {SPLITS[split]} | " + " | ".join(texts) + " |")
        iqms = split_iqms(cfg, cells, results, split, reps)
        summary["iqm"][split] = iqms
        if results and (left_out := [m for m in methods if m not in iqms]):
            iqm_missing.append(f"{SPLITS[split]}: {', '.join(left_out)}")
        iqm_lines += [
            f"| {SPLITS[split]} | {m} | {v['iqm']:.1f} | [{v['ci_low']:.1f}, {v['ci_high']:.1f}] |"
            for m, v in iqms.items()
        ]
    if iqm_lines:
        lines += [
            "",
            f"IQM over each split's targets × {cfg.seeds} seed(s), 95% stratified bootstrap CIs "
            f"({reps} resamples, rliable); only methods with every cell of the split finished:",
            "",
            "| split | method | IQM | 95% CI |",
            "|---|---|---|---|",
            *iqm_lines,
        ]
    if iqm_missing:
        lines += ["", "Not in the IQM (a cell of the split unfinished): " + "; ".join(iqm_missing)]
    wm_lines, summary["world_model_error_h5"] = error_lines(errors or {})
    summary["claims"] = scenario_claims(cfg, cells, results)
    error_text, summary["error_claims"] = error_claims(summary["world_model_error_h5"])
    claims_text = [*map(paired_claim_line, summary["claims"].values()), *error_text]
    if claims_text:
        lines += ["", "## Claims under test (seed 002)", "", *claims_text]
    lines += wm_lines
    lines += ["", "Scenarios (`<task>@<parameter>=<scale>`; parameters at 1 are left out):", ""]
    used = ("train", *dict.fromkeys(k[2] for k in row_keys(cfg, groups)))
    for env, names in scenario_names.items():
        for part in used:
            lines.append(f"- {env} {part}: " + ", ".join(f"`{n}`" for n in names[part]))
    if results:
        lines += ["", precision_note(results)]
        summary["precision"] = precision_counts(results)
    stale = [
        r
        for r in results
        if r.get("world_model")
        and r["seed"] > 0
        and not r["world_model"].endswith(f"-seed{r['seed']}")
    ]
    if stale:
        lines += [
            "",
            f"**{len(stale)} cells of seeds ≥ 1 adapted in seed 0's world model** (made by an "
            "older genworld, which shared one model across seeds): their rows mix two protocols; "
            "rerun the study in a new --out.",
        ]
    if not cfg.cells:
        lines += ["", "World models only (`--cells false`): no adaptation cell was run."]
    elif planned is not None and planned > len(results):
        lines += [
            "",
            f"**Partial report**: {len(results)} of {planned} cells finished; an entry is the "
            "mean over the seeds that have finished all the row's targets (n), else one seed's "
            "mean over the targets it has finished (k of T targets), — where none has; an "
            "average compares the methods on the rows and seeds they have all finished.",
        ]
    lines += ["", "![scores per setting and method](scenarios.png)", ""]
    plot(rows, methods, out / "scenarios.png", TITLES[cfg.study])
    atomic_write_bytes(out / "scenarios.md", "\n".join(lines).encode())
    report = {
        "config": cfg.__dict__,
        "scenarios": scenario_names,
        "cells_code": cells_code(results),
        "report": provenance(),
        "results": results,
        "world_model_errors": errors or {},
        **summary,
    }
    atomic_write_json(out / "scenarios.json", report)
    return report


def plot(rows: list[dict], methods: list[str], path: Path, title: str) -> None:
    """Bars per method for every row (mean ± std across seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = np.arange(len(rows))
    width = 0.8 / max(1, len(methods))
    fig, ax = plt.subplots(figsize=(1.2 * len(rows) + 4.5, 3.6))
    for i, method in enumerate(methods):
        means = [r["methods"][method]["mean"] for r in rows]
        stds = [np.nan_to_num(r["methods"][method]["std"]) for r in rows]
        offset = (i - (len(methods) - 1) / 2) * width
        ax.bar(x + offset, means, width, yerr=stds, capsize=2, label=method)
    labels = [f"{r['group']}\n{r['env'].removeprefix('dmc-')}\n{r['split']}" for r in rows]
    ax.set_xticks(x, labels, fontsize=8)
    ax.set_ylabel("normalized score (return / 10)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.005, 1.0))
    ax.grid(axis="y", alpha=0.3)
    save_figure(fig, path)
