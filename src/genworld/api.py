"""The programmatic surface: every ``genworld`` command is one function here.

Each function takes a frozen config (built with the matching ``*_config`` function, which applies
a scale preset and overrides), works in an output folder that it resumes from when rerun, and
returns a typed result besides the files it writes::

    import genworld.api as g

    cfg = g.run_config("tiny", envs=("hopper",), deterministic=True)
    result = g.run(cfg, "runs/quick")
    print(result.summary["results"]["medium/multi"]["tgw"]["summary"])

Heavy modules are imported inside the functions, so ``import genworld.api`` stays fast.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from genworld.data.build import DATASET_SCALES, build_dataset, missing_policies
from genworld.data.ids import all_dataset_ids
from genworld.data.info import check_dataset, dataset_info, info_card, list_datasets

if TYPE_CHECKING:
    from genworld.train.agnostic_ablations import AgnosticAblationsConfig
    from genworld.train.behaviour import BehaviourConfig
    from genworld.train.dd_iql import AgnosticIQLRunConfig
    from genworld.train.dd_ppo import AgnosticPPORunConfig
    from genworld.train.finetune import FinetuneConfig
    from genworld.train.pipeline import RunConfig
    from genworld.train.scenarios import ScenarioStudyConfig
    from genworld.train.table import TableConfig
    from genworld.train.transfer import AgnosticTransferConfig
    from genworld.train.unseen import UnseenConfig
    from genworld.train.world_model import WorldModelTrainConfig
    from genworld.train.wpt_study import WPTStudyConfig

__all__ = [
    "DATASET_SCALES",
    "Result",
    "agnostic_iql_config",
    "agnostic_ppo_config",
    "agnostic_transfer",
    "algorithms",
    "check_algorithm",
    "register_algorithm",
    "agnostic_transfer_config",
    "agnostic_ablations",
    "agnostic_ablations_config",
    "wpt_study",
    "wpt_study_config",
    "build_lanes",
    "configure_process",
    "datasets_markdown",
    "missing_policies",
    "ablate",
    "ablation_config",
    "all_dataset_ids",
    "behaviour_config",
    "bench",
    "build_dataset",
    "check_dataset",
    "dataset_info",
    "evaluate_world_model",
    "export_policies",
    "export_task_experts",
    "finetune",
    "finetune_config",
    "info_card",
    "list_datasets",
    "pretrain_config",
    "pretrain_world_model",
    "results",
    "run",
    "run_config",
    "scenarios",
    "scenarios_config",
    "sweep_beta",
    "status",
    "sweep_config",
    "table",
    "table_config",
    "train_agnostic_iql",
    "train_agnostic_ppo",
    "train_policy",
    "train_world_model",
    "unseen",
    "unseen_config",
    "world_model_config",
]


@dataclass(frozen=True)
class Result:
    """What a command produced: its folder, the data of its JSON report and its main files."""

    out: Path
    """The run folder (rerun the same command on it to resume)."""
    summary: dict[str, Any]
    """The JSON the command wrote (report.json, table.json, unseen.json, …) as a dict."""
    files: tuple[Path, ...] = ()
    """The human-facing files written (Markdown report first, then plots)."""

    @property
    def markdown(self) -> str:
        """The Markdown report (the first of ``files``), or '' if the command writes none."""
        first = next((f for f in self.files if f.suffix == ".md"), None)
        return first.read_text() if first is not None else ""


def datasets_markdown(rows: list[dict] | None = None) -> str:
    """The built datasets of :func:`list_datasets` as a Markdown table."""
    from genworld.data.info import markdown_table

    return markdown_table(rows if rows is not None else list_datasets())


def build_lanes() -> int:
    """Processes a dataset build uses by default: one per collection lane, up to the cores."""
    import os

    from genworld.data.collect import LANES

    return max(1, min(LANES, os.cpu_count() or 1))


def configure_process(matmul_precision: str | None = None, *, keep_freed_memory: bool = True):
    """Process-wide settings: float32 matmul precision (also for worker processes started
    later, through the environment), an allocator that keeps freed memory mapped, and the code
    version read at launch (what every result of this process and its workers names)."""
    import os

    from genworld.utils.allocator import keep_freed_memory as keep
    from genworld.utils.device import PRECISION_ENV, set_matmul_precision
    from genworld.utils.provenance import pin_code_version

    pin_code_version()

    if matmul_precision:
        os.environ[PRECISION_ENV] = matmul_precision
    set_matmul_precision(matmul_precision)
    if keep_freed_memory:
        keep()  # no page faults per step on large tensors (utils/allocator.py)


# ---------------------------------------------------------------- configs
def run_config(scale: str = "mini", **overrides: Any) -> RunConfig:
    """``genworld run``'s config: the ``scale`` preset, then ``overrides`` (None = keep)."""
    from genworld.train.pipeline import config_for_scale

    return config_for_scale(scale, **overrides)


def table_config(scale: str = "mini", **overrides: Any) -> TableConfig:
    """``genworld table``'s config: algorithms × datasets × settings × seeds at ``scale``."""
    from genworld.train.table import config_for_scale

    return config_for_scale(scale, **overrides)


def ablation_config(scale: str = "mini", **overrides: Any) -> TableConfig:
    """``genworld ablate``'s table: TGW and its Table 2 ablations."""
    from genworld.train.studies import ablation_config as config

    return config(scale, **overrides)


def sweep_config(
    values: tuple[float, ...], scale: str = "mini", algo: str = "tgw", **overrides: Any
) -> TableConfig:
    """``genworld sweep beta``'s table: one variant ``<algo>-beta=<v>`` per value."""
    from genworld.train.studies import sweep_config as config

    return config(tuple(values), algo=algo, scale=scale, **overrides)


def unseen_config(scale: str = "mini", **overrides: Any) -> UnseenConfig:
    """``genworld unseen``'s config (family, split, methods, seeds, …) at ``scale``."""
    from genworld.train.unseen import config_for_scale

    return config_for_scale(scale, **overrides)


def scenarios_config(scale: str = "mini", **overrides: Any) -> ScenarioStudyConfig:
    """``genworld scenarios``' config (study, envs, methods, seeds, …) at ``scale``."""
    from genworld.train.scenarios import config_for_scale

    return config_for_scale(scale, **overrides)


def wpt_study_config(scale: str = "mini", **overrides: Any) -> WPTStudyConfig:
    """``genworld wpt-study``'s config (world model, tasks, variants, seeds) at ``scale``."""
    from genworld.train.wpt_study import config_for_scale

    return config_for_scale(scale, **overrides)


def world_model_config(scale: str = "mini", **overrides: Any) -> WorldModelTrainConfig:
    """``genworld train world-model``'s config (model, datasets, steps, …) at ``scale``."""
    from genworld.train.world_model import config_for_scale

    return config_for_scale(scale, **overrides)


def pretrain_config(scale: str = "mini", **overrides: Any) -> WorldModelTrainConfig:
    """``genworld pretrain world-model``'s config: the reward-free RSSM and the scale's
    reward-free, multi-embodiment datasets (``datasets`` replaces them)."""
    from genworld.train.pretrain import config_for_scale

    return config_for_scale(scale, **overrides)


def finetune_config(scale: str = "mini", **overrides: Any) -> FinetuneConfig:
    """``genworld finetune``'s config: WPT's fine-tuning preset at ``scale``, then ``overrides``
    (``world_model``, ``task``, ``variant``, ``seed``, ``wpt={...}``)."""
    from genworld.train.finetune import config_for_scale

    return config_for_scale(scale, **overrides)


# ---------------------------------------------------------------- studies
def run(cfg: RunConfig, out: str | Path, *, show_progress: bool = True) -> Result:
    """Datasets → TGW world model → TGW policy and BC → report.md / report.json / plots."""
    from genworld.reports.run import write_report
    from genworld.train.pipeline import run as run_pipeline

    out = Path(out)
    report = run_pipeline(cfg, out, show_progress=show_progress)
    plots = write_report(report, out)
    return Result(out, report, (out / "report.md", *plots))


def table(
    cfg: TableConfig,
    out: str | Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
    title: str = "genworld table",
) -> Result:
    """Every missing cell of ``cfg`` (resumable, shared with other processes on ``out``), then
    table.md / table.csv / table.json and the performance profiles. ``report_only``: train
    nothing, report the cells finished so far."""
    from genworld.reports.table import planned_cells, write_table
    from genworld.train.failures import raise_failures, split_failures
    from genworld.train.table import cells, finished_results, run_cells

    out = Path(out)
    cfg.validate()
    failed: list[dict] = []
    if report_only:  # a report over several settings plans each setting's algorithms only
        results = finished_results(cfg, out)
        planned = sum(planned_cells(cfg, results).values())
    else:
        results, failed = split_failures(run_cells(cfg, out, show_progress=show_progress))
        total = len(cells(cfg))  # more than came back: failures, or cells left to others
        planned = total if len(results) < total else None
    summary = write_table(cfg, results, out, title=title, planned=planned) if results else {}
    raise_failures(failed, planned)  # the table above holds every cell that finished
    return Result(out, summary, (out / "table.md", *sorted(out.glob("profile_*.png"))))


def ablate(
    cfg: TableConfig, out: str | Path, *, show_progress: bool = True, report_only: bool = False
) -> Result:
    """Table 2: TGW w/o prompt, w/o RSSM and w/o ri, on the table runner."""
    from genworld.train.studies import ABLATION_TITLE

    return table(
        cfg, out, show_progress=show_progress, report_only=report_only, title=ABLATION_TITLE
    )


def sweep_beta(
    cfg: TableConfig, out: str | Path, *, show_progress: bool = True, report_only: bool = False
) -> Result:
    """Fig. 5: the score against β; ``cfg`` from :func:`sweep_config`. Adds beta_sweep.png."""
    from genworld.reports.sweep import plot_sweep
    from genworld.train.studies import sweep_betas

    betas = sweep_betas(cfg.algos)
    algo = next(iter(cfg.algos)).partition("-beta=")[0]
    title = f"β sweep of {algo} (seed 000, Fig. 5)"
    result = table(cfg, out, show_progress=show_progress, report_only=report_only, title=title)
    plot_sweep(result.summary["rows"], cfg, betas, result.out / "beta_sweep.png")
    return Result(result.out, result.summary, (*result.files, result.out / "beta_sweep.png"))


def unseen(
    cfg: UnseenConfig, out: str | Path, *, show_progress: bool = True, report_only: bool = False
) -> Result:
    """Unseen-task generalisation (seed 000 Fig. 4): task experts, references, datasets, one
    world model, every (method, task, seed) cell, then unseen.md / unseen.json / the plot."""
    from genworld.reports.unseen import write_unseen_report
    from genworld.train.failures import raise_failures
    from genworld.train.unseen import run_unseen

    out = Path(out)
    done = run_unseen(cfg, out, show_progress=show_progress, report_only=report_only)
    planned = done.planned if report_only or done.failed else None
    summary = write_unseen_report(
        cfg, done.train, done.test, done.references, done.results, out, planned=planned
    )
    raise_failures(done.failed, done.planned)  # the report above holds the finished cells
    return Result(out, summary, (out / "unseen.md", out / "unseen_tasks.png"))


def scenarios(
    cfg: ScenarioStudyConfig,
    out: str | Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
) -> Result:
    """MrCoM's studies (seed 002 §5, App. C) on DMC scenarios: datasets, a world model per
    setting and kind, every (method, target, seed) adaptation cell, then scenarios.md /
    scenarios.json / scenarios.png."""
    from genworld.reports.scenarios import write_scenarios_report
    from genworld.train.failures import raise_failures
    from genworld.train.scenarios import adaptation_overrides, cells, groups, run_scenarios

    out = Path(out)
    done = run_scenarios(cfg, out, show_progress=show_progress, report_only=report_only)
    summary = write_scenarios_report(
        cfg,
        groups(cfg),
        cells(cfg),
        done.scenarios,
        done.results,
        out,
        planned=done.planned,
        errors=done.errors,
        policy=adaptation_overrides(cfg)["mbpo"]["sac"],
    )
    raise_failures(done.failed, done.planned)  # the report above holds the finished cells
    return Result(out, summary, (out / "scenarios.md", out / "scenarios.png"))


def wpt_study(
    cfg: WPTStudyConfig, out: str | Path, *, show_progress: bool = True, report_only: bool = False
) -> Result:
    """WPT's comparison (seed 004 §4): pre-training (unless a world model is given), every
    (task, variant, seed) fine-tuning run, then wpt_study.md / .json / .png: final returns with
    bootstrap CIs, learning curves and the claims checked."""
    from genworld.reports.wpt_study import write_wpt_study_report
    from genworld.train.failures import raise_failures
    from genworld.train.wpt_study import run_study

    out = Path(out)
    reports, planned, failed = run_study(
        cfg, out, show_progress=show_progress, report_only=report_only
    )
    summary = write_wpt_study_report(cfg, reports, planned, out, failed=failed)
    plot = out / "wpt_study.png"
    raise_failures(failed, planned)  # the report above holds the finished runs
    return Result(out, summary, (out / "wpt_study.md", *([plot] if plot.exists() else [])))


# ---------------------------------------------------------------- models and policies
def train_world_model(
    cfg: WorldModelTrainConfig, out: str | Path, *, show_progress: bool = True
) -> Path:
    """Train TGW or the MLP ensemble on ``cfg.datasets`` (held-out episodes kept apart);
    resumable. Under ``torchrun`` (WORLD_SIZE > 1) the processes share the batches (DDP)."""
    import os

    out = Path(out)
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        from genworld.train.distributed import train_world_model_ddp

        train_world_model_ddp(cfg, out, show_progress=show_progress)
    else:
        from genworld.train.world_model import train_world_model as train

        train(cfg, out, show_progress=show_progress)
    return out


def pretrain_world_model(
    cfg: WorldModelTrainConfig, out: str | Path, *, show_progress: bool = True
) -> Path:
    """WPT's reward-free pre-training (eq. 1): the RSSM without its reward head on
    ``cfg.datasets`` (from :func:`pretrain_config`; missing datasets are built), trained and
    resumed as :func:`train_world_model` trains."""
    from genworld.train.pretrain import check_reward_free

    check_reward_free(cfg)
    return train_world_model(cfg, out, show_progress=show_progress)


def finetune(cfg: FinetuneConfig, out: str | Path, *, show_progress: bool = True) -> Result:
    """WPT's fine-tuning of a pre-trained RSSM on a target task (resumable from ``out``):
    eval.jsonl (return, and success rate on Meta-World, against environment steps), then
    report.md / report.json / curve.png."""
    from genworld.reports.finetune import write_finetune_report
    from genworld.train.finetune import finetune as run_finetune

    out = Path(out)
    report = run_finetune(cfg, out, show_progress=show_progress)
    return Result(out, report, tuple(write_finetune_report(report, out)))


def evaluate_world_model(
    runs: list[str | Path], *, episodes_per_env: int = 256, off_data: str | None = None
) -> Result:
    """k-step open-loop errors of trained world models on the first run's held-out episodes
    (k_step_errors.{md,json,png}), beside how much their stochastic state moves the predictions
    (stochastic_state.{md,json}); with ``off_data`` (a quality such as ``random``) also whether
    the uncertainty penalty sees the one-step error there (penalty_calibration.{md,json}). All
    in ``<first run>/eval/<this evaluation>/``: a folder per set of runs and options, so no
    evaluation overwrites another."""
    import json

    from genworld.reports.world_model import write_calibration, write_errors, write_sensitivity
    from genworld.train.world_model import (
        calibrate_penalty,
        evaluate_runs,
        evaluation_folder,
        stochastic_state_sensitivity,
    )
    from genworld.utils.io import atomic_write_json
    from genworld.utils.provenance import provenance

    paths = [Path(r) for r in runs]
    out = evaluation_folder(paths, off_data=off_data, per_env=episodes_per_env)
    named = evaluate_runs(paths, per_env=episodes_per_env)
    summary: dict[str, Any] = {"k_step_errors": named}
    files = write_errors(named, out)
    summary["stochastic_state"] = stochastic_state_sensitivity(paths, per_env=episodes_per_env)
    if summary["stochastic_state"]:
        files += write_sensitivity(summary["stochastic_state"], out)
    if off_data:
        summary["penalty_calibration"] = calibrate_penalty(paths[0], off_data, episodes_per_env)
        files += write_calibration(summary["penalty_calibration"], out)
    summary["provenance"] = {
        "evaluation": provenance(),
        "runs": {  # each model's training (runs trained before it was recorded: None)
            str(p): json.loads((p / "provenance.json").read_text())
            if (p / "provenance.json").exists()
            else None
            for p in paths
        },
    }
    atomic_write_json(out / "provenance.json", summary["provenance"])
    return Result(out, summary, tuple(files))


def behaviour_config(env: str, scale: str = "full", **overrides: Any) -> BehaviourConfig:
    """A behaviour-policy SAC run's config: ``scale`` sets the env steps (``steps`` overrides),
    and the warm-up, snapshot and checkpoint cadence follow from them."""
    from genworld.train.behaviour import config_for_scale

    return config_for_scale(env, scale, **overrides)


def train_policy(cfg: BehaviourConfig, out: str | Path, *, show_progress: bool = True) -> Path:
    """Train a behaviour policy with SAC (snapshots, evaluations, checkpoints; resumable)."""
    from genworld.train.behaviour import train_behaviour_policy

    return train_behaviour_policy(cfg, Path(out), show_progress=show_progress)


def export_policies(
    run: str | Path,
    dest: str | Path | None = None,
    *,
    only: tuple[str, ...] = ("medium", "expert"),
) -> dict[str, dict]:
    """Pick the medium / expert snapshots of a behaviour run (an exploration run: its snapshot
    sequence) into ``dest`` (default: the shipped policies); returns each written policy's
    card."""
    from genworld.data.build import policy_dir
    from genworld.train.policy_export import export_policies as export

    return export(Path(run), Path(dest) if dest else policy_dir(), only=only)


def export_task_experts(run: str | Path, dest: str | Path | None = None) -> dict[str, Any]:
    """Ship the task experts and reference returns of a finished ``unseen`` run."""
    from genworld.train.task_experts import export_task_experts as export

    return export(Path(run), Path(dest) if dest else None)


def agnostic_iql_config(**fields: Any) -> AgnosticIQLRunConfig:
    """DD-IQL's run config: the scale's datasets, budget and agent preset under ``fields`` (a
    budget field given as 0 is an error; left out, it is the scale's)."""
    from genworld.train.dd_iql import iql_run_config

    return iql_run_config(**fields)


def agnostic_transfer_config(**fields: Any) -> AgnosticTransferConfig:
    """``genworld train agnostic-transfer``'s config: the scale's datasets and budgets under
    ``fields``."""
    from genworld.train.transfer import transfer_config

    return transfer_config(**fields)


def agnostic_transfer(
    cfg: AgnosticTransferConfig,
    out: str | Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
) -> Result:
    """Pretrain agnostic IQL on some envs, fine-tune it on a held-out env of other sizes and
    train that env from scratch (each resumable); report.md / report.json / transfer.png.
    ``report_only``: train nothing, compare the seeds finished so far."""
    from genworld.reports.transfer import write_transfer_report
    from genworld.train.transfer import run_transfer

    out = Path(out)
    report = run_transfer(cfg, out, show_progress=show_progress, report_only=report_only)
    return Result(out, report, tuple(write_transfer_report(report, out)))


def agnostic_ablations_config(**fields: Any) -> AgnosticAblationsConfig:
    """``genworld train agnostic-ablations``' config: the scale's datasets and budget under
    ``fields``."""
    from genworld.train.agnostic_ablations import ablations_config

    return ablations_config(**fields)


def agnostic_ablations(
    cfg: AgnosticAblationsConfig,
    out: str | Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
) -> Result:
    """The agnostic agent against its Bi-GRU-encoder ablation, the env-specific agent and matched
    single-env IQL on the same datasets and budget, each over ``cfg.seeds`` seeds (each run
    resumable); report.md / report.json / curves.png. ``report_only``: train nothing, compare
    the runs finished so far."""
    from genworld.reports.agnostic_ablations import write_ablations_report
    from genworld.train.agnostic_ablations import run_ablations

    out = Path(out)
    report = run_ablations(cfg, out, show_progress=show_progress, report_only=report_only)
    return Result(out, report, tuple(write_ablations_report(report, out)))


def agnostic_ppo_config(**fields: Any) -> AgnosticPPORunConfig:
    """DD-PPO's run config (envs, scale, timesteps, …)."""
    from genworld.train.dd_ppo import ppo_run_config

    return ppo_run_config(**fields)


def train_agnostic_iql(
    cfg: AgnosticIQLRunConfig, out: str | Path, *, show_progress: bool = True
) -> list[dict]:
    """DD-IQL: IQL with agnostic networks on several datasets (one process, or one per shard
    of the envs under ``torchrun``); returns the evaluation records."""
    from genworld.train.dd_iql import train_agnostic_iql as train

    return train(cfg, Path(out), show_progress=show_progress)


def train_agnostic_ppo(
    cfg: AgnosticPPORunConfig, out: str | Path, *, show_progress: bool = True
) -> dict[str, float]:
    """DD-PPO: PPO with agnostic networks on several envs; returns each env's eval return."""
    from genworld.train.dd_ppo import train_agnostic_ppo as train

    return train(cfg, Path(out), show_progress=show_progress)


def algorithms() -> list[dict[str, str]]:
    """Every name ``--algos`` takes (genworld's algorithms, registered plugins, named variants),
    each with its builder and where it was registered."""
    from genworld.algos.registry import algorithm_rows

    return algorithm_rows()


def register_algorithm(name: str, builder: str) -> None:
    """Make algorithm ``name`` (built by ``builder``, ``"module:function"``: a function of an
    :class:`~genworld.algos.registry.AlgoContext` returning an agent) available to every command
    of this process and the worker processes it starts, e.g. ``table(table_config(algos=(name,
    "bc")), out)``. An installed package registers its algorithms for good with an entry point
    of group ``genworld.algos`` instead (docs/EXTENDING.md)."""
    from genworld.algos.registry import register

    register(name, builder)


def check_algorithm(name: str, work_dir: str | Path | None = None) -> dict[str, Any]:
    """Whether algorithm or variant ``name`` keeps the agent contract: builds, updates, learns,
    acts with padded multi-env batches, survives a checkpoint and plays an episode in each of
    two real envs (:mod:`genworld.train.algo_check`); ``{"ok": …, "checks": [...]}``."""
    from genworld.train.algo_check import check_algorithm as check
    from genworld.train.algo_check import summary

    return summary(name, check(name, Path(work_dir) if work_dir is not None else None))


def status(out: str | Path) -> Result:
    """Where the study in ``out`` stands, read without touching it (also while its command runs,
    in one or several processes): each planned cell's state (finished, failed, training,
    stopped part-way, waiting), the counts, the finished cells' mean minutes per kind and the
    hours of cell time the rest need at that pace."""
    from genworld.train.status import study_status

    return Result(Path(out), study_status(Path(out)))


def results(records: str | Path | None = None) -> Result:
    """The headline results: a row per study record under ``records`` (default: the checkout's
    docs/results), each with its numbers computed from the record's cells, its protocol in
    brief, the code that made it and the record's folder; ``summary["markdown"]`` is the table
    docs/RESULTS.md shows, ``summary["studies"]`` the rows."""
    from genworld.reports.results import RECORDS, as_dicts, load_headlines, markdown

    root = Path(records) if records is not None else RECORDS
    headlines = load_headlines(root)
    return Result(root, {"studies": as_dicts(headlines), "markdown": markdown(headlines)})


def bench(
    names: list[str] | None = None,
    *,
    quick: bool = False,
    plot: str | Path | None = None,
    quick_start: bool = False,
    threads: int = 2,
    json_path: str | Path | None = None,
) -> dict[str, dict]:
    """Benchmarks, every figure a ratio to a reference measured in the same run."""
    from genworld.bench import run_benchmarks, write_json

    results = run_benchmarks(
        names,
        quick=quick,
        plot=Path(plot) if plot else None,
        quick_start=quick_start,
        threads=threads,
    )
    if json_path:
        write_json(results, Path(json_path))
    return results
