"""The headline of docs/RESULTS.md, rendered from the study records under ``docs/results/``.

Each record folder is a study's small record (``docs/results/README.md``): its config, every
finished cell's ``result.json`` and the report written from them, or a benchmark's JSON. A row
per folder gives the study's numbers, computed here from the cells (not copied from a report),
its protocol in brief (from its config), the code that made it and a link to the folder. An
optional ``record.json`` beside the record holds what the files cannot say: the row's ``title``,
a ``caveat`` a reader needs at a glance, and ``code`` (the commit) for records made before the
cells carried their provenance.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from genworld.errors import GenworldError
from genworld.reports.run import count
from genworld.reports.scenarios import ERROR_SPLITS, SPLITS
from genworld.reports.table import rows as table_rows
from genworld.utils.provenance import PACKAGE_DIR, cells_code

RECORDS = PACKAGE_DIR.parents[1] / "docs" / "results"
"""The checkout's records (``docs/results/``; absent from an installed wheel)."""

NAMES = {
    "tgw": "TGW",
    "tgw-finetune": "TGW-finetune",
    "tgw-newr": "TGW-newR",
    "prompt-dt": "Prompt-DT",
    "prompt-dt-finetune": "Prompt-DT-finetune",
    "bc": "BC",
    "cmt": "CMT",
    "cmt-no-pt": "CMT w/o prompt tuning",
    "dt": "DT",
    "cql": "CQL",
    "iql": "IQL",
    "focal": "FOCAL",
    "tgw-no-prompt": "w/o prompt",
    "tgw-no-rssm": "w/o RSSM",
    "tgw-no-ri": "w/o ri (β = 0)",
}
"""Display names of methods and variants (others are shown as they are named)."""

KIND_ORDER = (
    "quick_start",
    "table",
    "ablation",
    "sweep",
    "unseen",
    "scenarios",
    "wpt",
    "agnostic",
    "world_model",
    "bench",
)
"""Rows in this order: quick start, Table 1, ablations, β, unseen tasks, scenarios, WPT, the
agnostic agent, world-model accuracy, speed."""

FOOTER = (
    "Scores are normalized: D4RL's reference returns for the MuJoCo tables, and per task "
    "(0 = a uniform-random policy, 100 = our expert for that task) in the unseen-task studies; "
    "all on datasets genworld regenerates from its own behaviour policies, not D4RL's. A seed's "
    "score is the mean of its last k evaluations; a table row's number is the mean over seeds of "
    "that score averaged over the envs, ± the population standard deviation over seeds (ddof 0); "
    "an unseen-task number is the mean over the tasks of each task's mean over seeds. "
    "Rendered by `genworld results --markdown` from the records; the method and caveats of "
    "each study are below."
)


@dataclass(frozen=True)
class Headline:
    """One study's row."""

    folder: str
    """The record folder's name under the records root."""
    kind: str
    """quick_start, table, ablation, sweep, unseen, scenarios, world_model or bench."""
    study: str
    result: str
    """The numbers, in brief."""
    protocol: str
    """Scale, seeds, budget and scoring, in brief (from the record's config)."""
    code: str
    """The commit(s) that made the cells (their provenance, else record.json's ``code``)."""
    caveat: str
    order: int = 0
    """Rank among the rows of its kind (record.json's ``order``), then the folder's name."""


def load_headlines(root: Path | None = None) -> list[Headline]:
    """A row per record folder under ``root`` (default: the checkout's ``docs/results``)."""
    root = Path(root) if root is not None else RECORDS
    if not root.is_dir():
        raise GenworldError(
            f"no study records at {root}: give the records folder (docs/results of a checkout) "
            "with --records"
        )
    found = [headline(d) for d in sorted(root.iterdir()) if d.is_dir()]
    return sorted(found, key=lambda h: (KIND_ORDER.index(h.kind), h.order, h.folder))


def headline(folder: Path) -> Headline:
    """The row of one record folder (its kind told by the files it holds)."""
    meta = _read(folder / "record.json") if (folder / "record.json").exists() else {}
    if (folder / "unseen.json").exists():
        row = _unseen(folder, meta.get("compare"))
    elif (folder / "scenarios.json").exists():
        row = _scenarios(folder)
    elif (folder / "wpt_study.json").exists():
        row = _wpt_study(folder)
    elif (folder / "table.json").exists():
        row = _table(folder)
    elif any(folder.glob("seed*/report.json")):
        row = _quick_start(folder)
    elif (folder / "k_step_errors.json").exists():
        row = _world_model(folder)
    elif (folder / "report.json").exists() and is_ablations_report(_read(folder / "report.json")):
        row = _agnostic_ablations(folder)
    elif (folder / "report.json").exists() and is_transfer_report(_read(folder / "report.json")):
        row = _agnostic_transfer(folder)
    elif any(
        _read(f).keys() & BENCH_KEYS for f in folder.glob("*.json") if f.name != "record.json"
    ):
        row = _bench(folder)
    else:
        raise GenworldError(
            f"{folder} holds no study record (unseen.json, scenarios.json, wpt_study.json, "
            "table.json, "
            "seed*/report.json, "
            "k_step_errors.json, an agnostic-ablations or agnostic-transfer report.json or a "
            "bench JSON): move it out of the records folder or teach reports/results.py its kind"
        )
    kind, study, result, protocol, code = row
    return Headline(
        folder=folder.name,
        kind=kind,
        study=meta.get("title", study),
        result=result,
        protocol=protocol,
        code=code if code != "unrecorded" else meta.get("code", "unrecorded"),
        caveat=meta.get("caveat", ""),
        order=int(meta.get("order", 0)),
    )


def markdown(headlines: list[Headline], link_prefix: str = "results/") -> str:
    """The headline table (links relative to docs/, where RESULTS.md is) and its footer."""
    lines = [
        "| study | result | protocol | read with | record |",
        "|---|---|---|---|---|",
        *(
            f"| {h.study} | {h.result} | {h.protocol}; code {h.code} | {h.caveat or '—'} | "
            f"[{h.folder}]({link_prefix}{h.folder}/) |"
            for h in headlines
        ),
        "",
        FOOTER,
    ]
    return "\n".join(lines) + "\n"


def as_dicts(headlines: list[Headline]) -> list[dict[str, Any]]:
    return [asdict(h) for h in headlines]


# ---------------------------------------------------------------- kinds
def _read(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _cells(folder: Path) -> list[dict[str, Any]]:
    return [_read(f) for f in sorted((folder / "cells").glob("**/result.json"))]


def _code(results: list[dict[str, Any]]) -> str:
    """The commits that made ``results`` (``unrecorded`` for cells made before provenance)."""
    keys = [k if k == "unrecorded" else k[:7] + k[10:] for k in cells_code(results)]
    return ", ".join(keys) or "unrecorded"


def _cells_text(found: int, planned: int, noun: str = "cell") -> str:
    return f"{found} {noun}s" if found == planned else f"{found} of {planned} {noun}s (partial)"


def _table(folder: Path) -> tuple[str, str, str, str, str]:
    """Table-runner studies (Table 1, ablations, β sweep): per quality, each algorithm's mean
    over seeds of the seed's score averaged over the envs, ± the population std over seeds."""
    cfg = _read(folder / "config.json")
    results = _cells(folder)
    long = table_rows(results)
    algos, envs, settings = cfg["algos"], cfg["envs"], cfg["settings"]
    sweep = all("-beta=" in a for a in algos)
    ablation = not sweep and any(a.startswith("tgw-no-") for a in algos)
    kind = "sweep" if sweep else "ablation" if ablation else "table"
    parts = []
    for setting in settings:
        for quality in cfg["qualities"]:
            scores = []
            for algo in algos:
                per_seed = _seed_means(long, setting, quality, algo, envs)
                name = f"β = {algo.partition('-beta=')[2]}" if sweep else NAMES.get(algo, algo)
                scores.append(f"{name} {_mean_std(per_seed, cfg['seeds'])}")
            where = f"{quality}" + (f", {setting}-env" if len(settings) > 1 else "")
            parts.append(f"{where}: " + " · ".join(scores))
    budget = cfg["budget"]
    setting_text = "/".join(f"{s}-env" for s in settings)
    protocol = (
        f"`{cfg['scale']}`, {setting_text}, {', '.join(envs)}; {cfg['seeds']} seed{'s' * (cfg['seeds'] != 1)}; "
        f"{budget['updates']:,} policy updates; last {budget['last_k']} of "
        f"{budget['eval_episodes']}-episode evaluations; "
        f"{_cells_text(len(results), _read(folder / 'table.json').get('planned_cells', len(results)))}"
    )
    titles = {"sweep": "β sweep (Fig. 5)", "ablation": "Ablations (Table 2)", "table": "Table 1"}
    study = f"{titles[kind]}, {setting_text}"
    return kind, study, "; ".join(parts), protocol, _code(results)


def _seed_means(long, setting, quality, algo, envs) -> list[float]:
    """Each seed's score averaged over ``envs`` (seeds missing an env are left out)."""
    by_seed: dict[int, dict[str, float]] = {}
    for r in long:
        if (r["setting"], r["quality"], r["algo"]) == (setting, quality, algo):
            by_seed.setdefault(r["seed"], {})[r["env"]] = r["last_k"]
    return [
        float(np.mean([s[e] for e in envs]))
        for _, s in sorted(by_seed.items())
        if all(e in s for e in envs)
    ]


def _mean_std(values: list[float], planned: int) -> str:
    if not values:
        return "—"
    text = f"{np.mean(values):.1f}" + (f" ± {np.std(values):.1f}" if len(values) > 1 else "")
    return text + (f" (n={len(values)})" if len(values) < planned else "")


def _scenarios(folder: Path) -> tuple[str, str, str, str, str]:
    """MrCoM's scenario studies: each method's average score per split (when cells ran) and
    each world model's 5-step observation error on the held-out scenarios, from the report."""
    report = _read(folder / "scenarios.json")
    cfg, results = report["config"], _cells(folder)
    parts = []
    for split, averages in report.get("averages", {}).items():
        scores = [f"{m} {v:.1f}" for m, v in averages.items() if v == v]  # NaN: no cell yet
        rows = report.get("average_rows", {}).get(split)
        on = (
            f" (on {rows['rows']} of {rows['of']} rows)"
            if rows and rows["rows"] < rows["of"]
            else ""
        )
        if scores:
            parts.append(f"{SPLITS.get(split, split)}{on}: " + " · ".join(scores))
    for group, kinds in report.get("world_model_error_h5", {}).items():
        for split, name in ERROR_SPLITS.items():
            errors = [f"{k} {v[split]:.3f}" for k, v in kinds.items() if split in v]
            if errors:
                parts.append(f"5-step observation error, {group}, {name}: " + " · ".join(errors))
    cells = f"{len(results)} policy cells" if results else "world models only (no policy cell)"
    protocol = (
        f"`genworld scenarios --study {cfg['study']}`, `{cfg['scale']}`, "
        f"{', '.join(cfg['envs'])}; {cfg['train_scenarios']} training scenarios per task, "
        f"{cfg['targets']} targets per split; {cells}"
    )
    made_by = results or [{"provenance": report.get("report", {})}]
    return "scenarios", f"Scenarios ({cfg['study']})", "; ".join(parts), protocol, _code(made_by)


def is_ablations_report(report: dict[str, Any]) -> bool:
    """Whether a report.json is ``genworld train agnostic-ablations``' (not agnostic-transfer's,
    which also has per-seed scores)."""
    return "per_seed" in report and "variants" in report.get("config", {})


def _agnostic_ablations(folder: Path) -> tuple[str, str, str, str, str]:
    """``genworld train agnostic-ablations``: each variant's mean over envs of its seed-mean
    scores, and the agnostic / single-env IQL ratio with its bootstrap CI, from report.json."""
    report = _read(folder / "report.json")
    cfg, summary = report["config"], report["summary"]
    parts = []
    if ratio := report.get("ratio"):
        parts.append(
            f"agnostic ÷ single-env IQL {ratio['value']:.2f} "
            f"[{ratio['ci_low']:.2f}, {ratio['ci_high']:.2f}]"
        )
    from genworld.reports.agnostic_ablations import LABELS, finished_seeds

    def mean(variant: str, scores: dict[str, float]) -> str:
        n = min(len(s) for s in report["per_seed"][variant].values())
        partial = f" ({count(n, 'seed')})" if n < cfg["seeds"] else ""
        if set(scores) != set(report["envs"]):
            return f"{LABELS.get(variant, variant)} — (not every env finished)"
        return f"{LABELS.get(variant, variant)} {sum(scores.values()) / len(scores):.1f}{partial}"

    means = [mean(v, s) for v, s in summary.items()]
    parts.append("mean normalized score over envs: " + " · ".join(means))
    envs = ", ".join(report["envs"])
    protocol = (
        f"`genworld train agnostic-ablations`, `{cfg['scale']}`, {envs}; {cfg['steps']:,} "
        f"updates, {finished_seeds(report)} seeds, last {cfg['last_k']} evaluations"
    )
    title = "Agnostic agent and its ablations (agnostic paper, Table 1 and §4.3)"
    return "agnostic", title, "; ".join(parts), protocol, _report_code(report)


def _wpt_study(folder: Path) -> tuple[str, str, str, str, str]:
    """``genworld wpt-study``: each task's final return per variant (mean over seeds, with the
    number of seeds where fewer than planned finished) and each claim's verdict."""
    from genworld.reports.wpt_study import NAMES

    report = _read(folder / "wpt_study.json")
    cfg, summary = report["config"], report["summary"]
    parts = []
    for task, rows in summary.items():
        finals = " · ".join(
            f"{NAMES.get(v, v)} {rows[v]['final_return']:.0f}"
            + (f" (n={rows[v]['seeds']})" if rows[v]["seeds"] < cfg["seeds"] else "")
            for v in cfg["variants"]
            if v in rows
        )
        parts.append(f"{task}: {finals}")
    verdict = {True: "holds", False: "fails", None: "not measured yet"}
    parts += [f"{c['claim']}: {verdict[c['holds']]}" for c in report["claims"].values()]
    runs = _cells_text(report["finished_runs"], report["planned_runs"], noun="run")
    protocol = (
        f"`genworld wpt-study`, `{cfg['scale']}`, {runs}, {count(cfg['seeds'], 'seed')} per "
        f"(task, variant), last {cfg['last_k']} evaluations"
    )
    reports = [_read(f) for f in sorted((folder / "cells").glob("**/report.json"))]
    title = "WPT: fine-tuning a pre-trained world model vs from scratch (seed 004)"
    return "wpt", title, "; ".join(parts), protocol, _code(reports)


def is_transfer_report(report: dict[str, Any]) -> bool:
    """Whether a report.json is ``genworld train agnostic-transfer``'s."""
    return "lead_per_seed" in report and "pretrain" in report.get("config", {})


def _agnostic_transfer(folder: Path) -> tuple[str, str, str, str, str]:
    """``genworld train agnostic-transfer``: the fine-tuned and the from-scratch run's last-k
    score on the held-out env (mean ± std over seeds) and the lead of each seed."""
    report = _read(folder / "report.json")
    cfg, summary = report["config"], report["summary"]
    k = cfg["last_k"]
    tuned, scratch = summary["finetune"]["last_k"], summary["scratch"]["last_k"]
    leads = ", ".join(f"{v:+.1f}" for v in report["lead_per_seed"])
    result = (
        f"{report['target']}, last {k}: fine-tuned {tuned['mean']:.1f} ± {tuned['std']:.1f} vs "
        f"from scratch {scratch['mean']:.1f} ± {scratch['std']:.1f}; lead per seed {leads}"
    )
    seeds = report.get("seeds", list(range(cfg["seed"], cfg["seed"] + cfg["seeds"])))
    protocol = (
        f"`genworld train agnostic-transfer`, `{cfg['scale']}`, networks "
        f"{cfg.get('networks', 'agnostic')}; pretrain {', '.join(cfg['pretrain'])} "
        f"{cfg['pretrain_steps']:,} updates, then {cfg['finetune_steps']:,} on the target; "
        f"{count(len(seeds), 'seed')}, last {k} evaluations"
    )
    title = "Agnostic agent: transfer to a held-out env (agnostic paper, §4.2)"
    return "agnostic", title, result, protocol, _report_code(report)


def _report_code(report: dict[str, Any]) -> str:
    """The commit of a DD-IQL study's report, which trained its runs; for a ``--report-only``
    report (its runs trained by other commands) the runs' own, or ``unrecorded`` where any run
    kept none (the record's record.json then names the code of them all)."""
    if not report.get("report_only"):
        return _code([report])
    made = list(report.get("runs_provenance", {}).values())
    if not made or not all(made):  # a run without its code: record.json names them all
        return "unrecorded"
    return _code([{"provenance": p} for p in made])


def _unseen(folder: Path, compare: dict | None = None) -> tuple[str, str, str, str, str]:
    """Unseen-task studies: each method's unseen (seen) average over tasks of the per-task mean
    over seeds, as the study's report computes them. ``compare`` (a probe's record.json): the
    same methods' averages in another record, ``{"folder", "seeds", "label"}``, beside them."""
    report = _read(folder / "unseen.json")
    cfg, train, test = report["config"], report["train"], report["test"]
    results = _cells(folder)
    methods = [m for m in cfg["methods"] if any(r["method"] == m for r in results)]
    other = (
        [r for r in _cells(folder.parent / compare["folder"]) if r["seed"] in compare["seeds"]]
        if compare
        else []
    )

    def averages(cells: list[dict], method: str) -> str:
        """``unseen (seen)``, or the seen tasks' alone in a family every task of trains."""
        seen = _task_average(cells, method, train)
        return f"{_task_average(cells, method, test)} ({seen})" if test else seen

    scores = []
    for method in methods:
        scores.append(f"{NAMES.get(method, method)} {averages(results, method)}")
        if compare:
            scores[-1] += f"; {compare['label']}: {averages(other, method)}"
    planned = len(cfg["methods"]) * len(train + test) * cfg["seeds"]
    learner = (  # the SAC settings of the TGW cells, where the study has any
        f" (SAC temperature {cfg['policy_init_alpha']:g}, RL-term weight α "
        f"{cfg['policy_bc_alpha']:g})"
        if any(m.startswith("tgw") for m in methods)
        else ""
    )
    protocol = (
        f"`{cfg['scale']}`, {cfg['split']} split: {len(train)} training, {len(test)} unseen "
        f"tasks; {cfg['seeds']} seed{'s' if cfg['seeds'] > 1 else ''}; "
        f"{cfg['policy_updates']:,} policy updates{learner}; last {cfg['last_k']} of "
        f"{cfg['eval_episodes']}-episode evaluations; {_cells_text(len(results), planned)}"
    )
    result = ("unseen (seen) tasks: " if test else "tasks (all train): ") + " · ".join(scores)
    return "unseen", f"Unseen tasks: {cfg['family']}", result, protocol, _code(results)


def _task_average(results, method: str, tasks: list[str]) -> str:
    means = []
    for task in tasks:
        values = [r["last_k"] for r in results if r["method"] == method and r["task"] == task]
        if values:
            means.append(np.mean(values))
    if not means:
        return "—"
    text = f"{np.mean(means):.1f}"
    return text if len(means) == len(tasks) else f"{text} ({len(means)} of {len(tasks)} tasks)"


def _quick_start(folder: Path) -> tuple[str, str, str, str, str]:
    """``genworld run`` once per seed (``seed<S>/report.json``): per data group, TGW's and BC's
    mean over seeds of the seed's score averaged over the envs, ± the population std over
    seeds, and each env's mean over seeds."""
    reports = [_read(f) for f in sorted(folder.glob("seed*/report.json"))]
    cfg = reports[0]["config"]
    parts = []
    for key, first in reports[0]["results"].items():
        envs, scores = first["envs"], []
        for method, name in (("tgw", "TGW"), ("bc", "BC")):
            runs = [r["results"][key][method]["summary"] for r in reports if key in r["results"]]
            overall = _mean_std([run["_mean"]["last_k_mean"] for run in runs], len(reports))
            per_env = ", ".join(
                f"{env} {np.mean([run[env]['last_k_mean'] for run in runs]):.1f}" for env in envs
            )
            scores.append(f"{name} {overall} ({per_env})")
        parts.append(f"{key}: " + " · ".join(scores))
    seeds = sorted(r["config"]["seed"] for r in reports)
    protocol = (
        f"`genworld run --scale {cfg['scale']}`, {', '.join(cfg['envs'])}; seeds "
        f"{', '.join(map(str, seeds))}; world model {cfg['wm_steps']:,} updates, TGW policy "
        f"{cfg['policy_updates']:,} updates, BC {cfg['bc_updates']:,}; last {cfg['last_k']} of "
        f"{cfg['eval_episodes']}-episode evaluations"
    )
    made_by = [{"provenance": r["code"]} if "code" in r else {} for r in reports]
    return "quick_start", "Quick start: TGW vs BC", " · ".join(parts), protocol, _code(made_by)


def _world_model(folder: Path) -> tuple[str, str, str, str, str]:
    """A ``genworld eval world-model`` record: each model's open-loop observation error at the
    first and last horizon per env (mean predictor ≈ 1), and how far resampling the stochastic
    state moves its predictions (``stochastic_state.json``), beside the training config."""
    errors = _read(folder / "k_step_errors.json")
    horizons = sorted(
        {int(k.removeprefix("obs_h")) for m in errors.values() for e in m.values() for k in e
         if k.startswith("obs_h")}
    )  # fmt: skip
    first, last = f"obs_h{horizons[0]}", f"obs_h{horizons[-1]}"
    parts = []
    for model, envs in errors.items():
        if model != "mean-predictor":
            per_env = ", ".join(f"{e} {v[first]:.3g} / {v[last]:.3g}" for e, v in envs.items())
            parts.append(f"`{model}` observation MSE h{horizons[0]} / h{horizons[-1]}: {per_env}")
    if mean := errors.get("mean-predictor"):
        low = min(v[first] for v in mean.values())
        high = max(v[first] for v in mean.values())
        parts.append(f"mean predictor h{horizons[0]} {low:.2f}–{high:.2f}")
    if (folder / "stochastic_state.json").exists():
        for model, envs in _read(folder / "stochastic_state.json").items():
            ratios = [v["ratio_to_head"] for v in envs.values()]
            parts.append(
                f"resampling `{model}`'s stochastic state moves its decoded mean by "
                f"{100 * min(ratios):.1f}–{100 * max(ratios):.1f}% of the head's variance"
            )
    cfg = _read(folder / "config.json") if (folder / "config.json").exists() else {}
    protocol = "k-step open-loop errors on held-out episodes, in units of the data's variance"
    if cfg:
        protocol = (
            f"`genworld train world-model --model {cfg['model']}`, {cfg['steps']:,} updates on "
            f"{', '.join(cfg['datasets'])}, seed {cfg['seed']}; {protocol}"
        )
    made_by = []
    if (folder / "provenance.json").exists():  # the evaluation's, with each model's training
        made = _read(folder / "provenance.json")
        made_by = [{"provenance": r} for r in made["runs"].values() if r]
    code = _code(made_by) if made_by else "unrecorded"
    return "world_model", "World-model accuracy", "; ".join(parts), protocol, code


BENCH_KEYS = {
    "algos",
    "matmul_peak",
    "world_model",
    "imagination",
    "data_build",
    "data_build_dmc",
    "end_to_end",
    "cmt",
    "rssm",
    "agnostic",
    "scenario_models",
}
"""The benchmark names whose figures a bench record's JSON files hold."""


def _model_bench_parts(figures: dict[str, Any]) -> list[str]:
    """The headline figures of the model benches: CMT, the RSSM, agnostic IQL, the scenario
    studies' world models."""
    parts = []
    if cmt := figures.get("cmt"):
        pre, relabel = cmt["pretraining"], cmt["relabelling"]
        parts.append(
            f"CMT pretraining {pre['mini']['fraction_of_matmul_peak']:.2f}× (mini) / "
            f"{pre['full']['fraction_of_matmul_peak']:.2f}× (full) the fp32 matmul peak; "
            f"batched relabelling {relabel['ratio']:.2f}× one state at a time"
        )
    if rssm := figures.get("rssm"):
        c = rssm["configs"]
        text = (
            f"RSSM training {c['mini']['training']['fraction_of_matmul_peak']:.2f}× (mini) / "
            f"{c['full']['training']['fraction_of_matmul_peak']:.2f}× (full) the peak, "
            f"imagination {c['mini']['imagination']['ratio']:.1f}× raw dm_control stepping (mini)"
        )
        peer = [
            k for k in ("mini-categorical", "full-categorical") if "peer_training_ratio" in c[k]
        ]
        if peer:
            ratios = " / ".join(f"{c[k]['peer_training_ratio']:.2f}×" for k in peer)
            text += f", updates/s {ratios} sheeprl's DreamerV3 world model ({', '.join(peer)})"
        parts.append(text)
    if agnostic := figures.get("agnostic"):
        full = agnostic.get("full")
        at_full = f" ({full['fraction_of_matmul_peak']:.2f}× at full size)" if full else ""
        parts.append(
            f"agnostic IQL update {agnostic['fraction_of_matmul_peak']:.2f}× the peak{at_full}, "
            f"{agnostic['tokens_per_update']:,} tokens per update "
            f"({agnostic['tokens_per_update_padded']:,} padded)"
        )
    if scenario := figures.get("scenario_models"):
        models = [m for m in ("mrcom", "rssm", "cadm") if m in scenario]
        full = [scenario[m]["full"] for m in models if "full" in scenario[m]]
        at_full = (
            " (full size " + " / ".join(f"{f['fraction_of_matmul_peak']:.2f}×" for f in full) + ")"
            if len(full) == len(models)
            else ""
        )
        parts.append(
            f"{' / '.join(models)} training "
            + " / ".join(f"{scenario[m]['fraction_of_matmul_peak']:.2f}×" for m in models)
            + f" the fp32 matmul peak{at_full}, imagination "
            + " / ".join(f"{scenario[m]['imagination_ratio']:.2f}×" for m in models)
            + " raw dm_control stepping (mini)"
        )
    return parts


def _bench(folder: Path) -> tuple[str, str, str, str, str]:
    """A ``genworld bench --json`` record (several files merge; where two files measured the
    same figure, the later file by name wins)."""
    figures: dict[str, Any] = {}
    made_by = []
    for f in sorted(folder.glob("*.json")):
        if f.name != "record.json":
            data = _read(f)
            made_by.append({"provenance": data["provenance"]} if "provenance" in data else {})
            for name, values in data.items():
                if name in BENCH_KEYS:
                    figures[name] = figures.get(name, {}) | values
    parts = []
    if algos := figures.get("algos"):
        names = {"bc": "BC", "cql": "CQL", "iql": "IQL", "td3bc": "TD3+BC"}
        ratios = " / ".join(f"{algos[a]['ratio']:.2f}×" for a in names if a in algos)
        parts.append(
            f"updates/s {' / '.join(n for a, n in names.items() if a in algos)} = {ratios} "
            "d3rlpy 2.8.1's (float32, same batch and networks)"
        )
    if wm := figures.get("world_model"):
        c = wm["configs"]
        parts.append(
            f"TGW world-model training {c['paper-default']['fraction_of_matmul_peak']:.2f}× the "
            f"fp32 matmul peak (mini {c['mini']['fraction_of_matmul_peak']:.2f}×)"
        )
    if im := figures.get("imagination"):
        parts.append(
            f"imagination {im['paper-default']['ratio']:.2f}× (paper-default) / "
            f"{im['mini']['ratio']:.2f}× (mini) real MuJoCo stepping, "
            f"{im['rollouts']:,} rollouts"
        )
    if db := figures.get("data_build"):
        parts.append(
            f"data build {db['ratio']:.2f}× raw random stepping "
            f"({db['build_end_to_end_steps_per_s'] / 1000:.1f}k steps/s, {db['env']}; "
            f"1 process {db['ratio_1_process']:.2f}×)"
        )
    if db := figures.get("data_build_dmc"):
        parts.append(
            f"DMC data build {db['ratio']:.2f}× raw dm_control stepping "
            f"({db['build_end_to_end_steps_per_s'] / 1000:.1f}k steps/s, {db['env']}; "
            f"1 process {db['ratio_1_process']:.2f}×)"
        )
    parts += _model_bench_parts(figures)
    if "quick_start_seconds" in figures.get("end_to_end", {}):
        parts.append(f"quick start {figures['end_to_end']['quick_start_seconds'] / 60:.1f} min")
    threads = figures.get("matmul_peak", {}).get("threads")
    protocol = (
        f"`genworld bench`{f', --threads {threads}' if threads else ''}; every figure a ratio "
        "to a reference measured in the same run"
    )
    return "bench", "Speed (genworld bench)", "; ".join(parts), protocol, _code(made_by)
