"""``genworld table``: every (algorithm, dataset group, setting, seed) cell, resumable, in
parallel, written as the paper's Table 1 (Markdown/CSV/JSON), IQM with bootstrap CIs and a
performance profile.

A cell is one ``train_offline`` run in ``out/cells/<quality>/<setting>-<group>/<algo>/seed<k>``;
it is done when its ``result.json`` exists (skipped on rerun), and a killed cell resumes from its
last checkpoint. Datasets are built (or found) once, before any cell starts.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from genworld.config import check_scale, from_dict, resolve
from genworld.data.ids import QUALITIES, parse_dataset_id
from genworld.envs.registry import get_env_spec
from genworld.errors import GenworldError
from genworld.train.failures import guarded
from genworld.utils.io import (
    atomic_write_json,
    check_or_write_config,
    check_report_folder,
    claimed_result,
    last_logged,
)

SETTINGS = ("multi", "single")


@dataclass(frozen=True)
class Budget:
    """What one cell may spend (the same for every algorithm: a fair comparison)."""

    updates: int
    """Policy gradient steps (world-model training of model-based methods comes on top)."""
    eval_every: int
    """Updates between evaluations (and checkpoints)."""
    eval_episodes: int
    """Deterministic episodes per env per evaluation."""
    last_k: int
    """A cell's score: the mean of its last k evaluations."""
    dataset_steps: int
    """Transitions per dataset: built at this size when missing; one of another size (built
    for another scale) is refused, with the command that rebuilds it."""


# tiny: seconds, for tests. mini: the protocol a 2-core CPU runs (a cell in minutes; the
# report states each algorithm's mean time per cell). full: the paper-scale protocol
# (PROTOCOL.md: 1M updates, 10 episodes, last 10; GPU).
BUDGETS: dict[str, Budget] = {
    "tiny": Budget(updates=20, eval_every=10, eval_episodes=1, last_k=2, dataset_steps=3_000),
    "mini": Budget(
        updates=10_000, eval_every=1_000, eval_episodes=5, last_k=3, dataset_steps=100_000
    ),
    "full": Budget(
        updates=1_000_000,
        eval_every=10_000,
        eval_episodes=10,
        last_k=10,
        dataset_steps=1_000_000,
    ),
}


HOW_RUN = ("workers", "executor", "reuse", "wait_for_others")
"""TableConfig fields that say how the cells are run, not what they compute: they may change
between a run and its resume."""


@dataclass(frozen=True)
class TableConfig:
    envs: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d")
    """Robots of the table (registry names)."""
    qualities: tuple[str, ...] = ("random", "medium", "medium-replay", "medium-expert")
    """Data qualities (the table's row blocks)."""
    algos: tuple[str, ...] = ("tgw", "cql", "mopo", "morel", "prompt-dt")
    """Registered algorithms or variants (``tgw-no-prompt``, ``mopo-beta=2``, …), yours too
    (``genworld algos list``; docs/EXTENDING.md)."""
    settings: tuple[str, ...] = ("multi",)
    """multi (one agent for all envs of a quality) and/or single (one per env)."""
    seeds: int = 3
    """Seeds per cell (0 .. seeds-1)."""
    scale: str = "mini"
    """tiny, mini or full: the budget below and every algorithm's own preset."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    workers: int = 1
    """Cells run side by side (processes; Ray actors when ``executor=ray``)."""
    executor: str = "auto"
    """auto (Ray if installed and workers > 1, else a local process pool), local or ray."""
    threads: int = 1
    """torch threads per cell."""
    wait_for_others: bool = True
    """At the end, wait for the cells that other processes sharing ``out`` are training, so
    that the report is the whole table (True); or leave them to those processes, report what
    has finished and exit (False: the process that ends last reports the whole table), so a
    process that ran out of cells frees its core for other work."""
    budget: Budget = field(default_factory=lambda: BUDGETS["mini"])
    """What every cell may spend (the same for every algorithm: a fair comparison)."""
    reuse: tuple[str, ...] = ()
    """Other tables' folders whose finished cells this table takes instead of training them:
    a cell at the same path (quality, setting, env, algorithm, seed) made with the same
    scale, budget, device, matmul precision and data (its fingerprint), for a multi-env cell
    the same envs, and, where the cell records its agent's ``numerics``, the precisions this
    table's agent resolves to here (CQL's ``ood_precision``), is copied here with its own
    provenance. Not part of the resume check."""

    def validate(self) -> None:
        from genworld.algos.registry import resolve_variant

        if not self.envs:
            raise GenworldError("--envs is empty: give at least one env")
        for env in self.envs:
            get_env_spec(env)
        for q in self.qualities:
            if q not in QUALITIES:
                raise GenworldError(f"unknown quality {q!r}: choose from {', '.join(QUALITIES)}")
        for a in self.algos:
            resolve_variant(a)
        for s in self.settings:
            if s not in SETTINGS:
                raise GenworldError(f"unknown setting {s!r}: choose multi or single")
        if self.executor not in ("auto", "local", "ray"):
            raise GenworldError(f"--executor {self.executor!r}: choose auto, local or ray")
        for name in ("seeds", "workers", "threads"):
            if getattr(self, name) <= 0:
                raise GenworldError(f"--{name} must be positive, got {getattr(self, name)}")
        for name, value in asdict(self.budget).items():
            if value <= 0:
                raise GenworldError(f"budget {name} must be positive, got {value}")
        for folder in self.reuse:
            if not (Path(folder) / "config.json").is_file():
                raise GenworldError(
                    f"--reuse {folder}: not a genworld table folder (no config.json); give "
                    "the --out of a finished or running table"
                )


EXTENDABLE = ("seeds", "algos", "qualities", "settings")
"""Fields a rerun on a table's folder may change: they choose cells, whose folders name their
quality, setting, algorithm and seed. The envs (a multi-env cell's folder does not name them),
the budget and the scale may not."""


def config_for_scale(scale: str, **overrides: Any) -> TableConfig:
    """The scale's budget, then ``overrides`` (None = keep)."""
    check_scale(scale)
    return resolve(TableConfig, {"scale": scale, "budget": asdict(BUDGETS[scale])}, overrides)


@dataclass(frozen=True)
class Cell:
    algo: str
    quality: str
    setting: str
    group: str
    """``multi`` for all envs together, otherwise the env's name (single-env setting)."""
    envs: tuple[str, ...]
    seed: int

    @property
    def folder(self) -> str:
        return f"cells/{self.quality}/{self.setting}-{self.group}/{self.algo}/seed{self.seed}"

    @property
    def dataset_ids(self) -> list[str]:
        """The datasets the cell trains on: its quality of each of its envs."""
        return [str(parse_dataset_id(f"{env}-{self.quality}")) for env in self.envs]


def cells(cfg: TableConfig) -> list[Cell]:
    """Seed-major: every algorithm's seed 0 cells come first, so a table stopped part-way (and
    resumed later) already compares all algorithms on the seeds it finished."""
    out = []
    for seed in range(cfg.seeds):
        for quality in cfg.qualities:
            for setting in cfg.settings:
                groups = (
                    [("multi", cfg.envs)] if setting == "multi" else [(e, (e,)) for e in cfg.envs]
                )
                for group, envs in groups:
                    for algo in cfg.algos:
                        out.append(Cell(algo, quality, setting, group, envs, seed))
    return out


def run_cell(
    cfg: TableConfig, cell: Cell, out: Path, *, wait: bool = True, show_progress: bool = False
) -> dict | None:
    """Train and evaluate one cell (resumes a killed one); writes and returns its result.

    One process at a time trains a cell: it holds the cell's claim (a lock next to its folder,
    released when the process ends, even killed), so several ``genworld table`` processes, on
    this machine or on others sharing ``out``, split a table between them. A cell claimed
    elsewhere returns None at once (``wait=False``), or after the other process lets it go
    (``wait=True``): its result, or, if that process died, this one trains it. So does a cell
    whose shared prefix (CMT's pretraining) another process is making: it starts from that
    prefix once it is made, instead of making the same steps beside it."""
    folder = out / cell.folder

    def work() -> dict | None:
        if reused := reuse_cell(cfg, cell, out):
            return reused
        # a failing cell is recorded; the table goes on without it, and a rerun retries it
        # None: another process is making the pretraining this cell shares (a prefix)
        return guarded(
            folder,
            cell.folder,
            "the table",
            lambda: _train_cell(cfg, cell, out, show_progress, wait=wait),
        )

    return claimed_result(folder, "result.json", work, wait=wait)


def _train_cell(
    cfg: TableConfig, cell: Cell, out: Path, show_progress: bool = False, *, wait: bool = True
) -> dict | None:
    """Train ``cell`` and write its result; None, without training, when ``wait`` is False and
    another process is making the prefix the cell starts from (:func:`prefix.making`)."""
    import torch

    from genworld.algos.registry import plugin_stamp
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.train.cells import result_stamp, train_cell
    from genworld.train.prefix import making, prefix_of
    from genworld.utils.device import resolve_device

    folder = out / cell.folder
    torch.set_num_threads(cfg.threads)
    started = time.perf_counter()
    ids = cell.dataset_ids
    dataset = MultiEnvDataset.from_minari(ids)
    torch.manual_seed(cell.seed)
    agent = cell_agent(
        cfg,
        cell,
        dataset,
        out=folder,
        shared=out / "world_models",
        show_progress=show_progress,  # its world model's fit, as a line under the table's bar
    )
    budget = cfg.budget
    prefix = prefix_of(  # e.g. CMT's pretraining, shared by its prompt-tuning variants
        agent,
        out / "prefixes" / cell.quality / f"{cell.setting}-{cell.group}",
        seed=cell.seed,
        data=dataset.fingerprint(),
        budget=asdict(budget),
        device=resolve_device(cfg.device).type,
    )
    with making(prefix, folder / "policy", wait=wait) as free:
        if not free:
            return None
        trained = train_cell(
            f"{cell.algo} {cell.quality} {cell.group} s{cell.seed}",
            agent,
            dataset.specs,
            folder / "policy",
            updates=budget.updates,
            eval_every=budget.eval_every,
            eval_episodes=budget.eval_episodes,
            last_k=budget.last_k,
            seed=cell.seed,
            started=started,
            show_progress=show_progress,
            prefix=prefix,
        )
    result = {
        **asdict(cell),
        "datasets": ids,
        "data": dataset.fingerprint(),
        "summary": trained.summary,
        "updates": budget.updates,
        "world_model": world_model_budget(folder),
        "policy_learner": policy_learner(agent),
        **result_stamp(trained.seconds, agent),
    }
    if plugin := plugin_stamp(cell.algo):
        result["plugin"] = plugin
    atomic_write_json(folder / "result.json", result)
    return result


def world_model_budget(folder: Path) -> dict[str, Any] | None:
    """The world model a cell trained or shared (its ``world_model.json`` names a shared one):
    its kind, updates and batch size; None for a model-free cell."""
    link = folder / "world_model.json"
    model = Path(json.loads(link.read_text())["path"]) if link.exists() else folder / "world_model"
    if not (model / "config.json").exists():
        return None
    config = json.loads((model / "config.json").read_text())
    return {k: config[k] for k in ("model", "steps", "batch_size")}


def policy_learner(agent) -> dict[str, Any] | None:
    """An MBPO-based agent's rollout and SAC settings, or CMT's two stages (what its report
    states beside the world model's budget); None for other agents."""
    from genworld.algos.cmt_config import CMTConfig
    from genworld.algos.mbpo import MBPOConfig

    cfg = getattr(getattr(agent, "mbpo", agent), "cfg", None)
    if isinstance(cfg, CMTConfig):
        keys = ("pretrain_updates", "prompt_tuning", "relabel_states", "planner_horizon")
        keys += ("beam_width", "behaviour_weight", "contrastive_weight", "context_len")
        return {"cmt": {k: getattr(cfg, k) for k in keys}}
    if not isinstance(cfg, MBPOConfig):
        return None
    keys = ("rollout_batch", "horizon", "rollout_every", "real_ratio", "beta", "policy")
    keys += ("batch_per_env",)
    return {
        **{k: getattr(cfg, k) for k in keys},
        **{k: getattr(cfg.sac, k) for k in ("actor_lr", "critic_lr", "bc_alpha")},
    }


def _run_cell_in_worker(cfg_json: str, cell_json: str, out: str) -> dict | None:
    """Process-pool entry point (arguments as JSON: safe across spawn); None: the cell is
    claimed by another process (``run_cell(wait=False)``)."""
    from genworld.utils.parallel import prepare_worker

    prepare_worker()  # a Ray task has no pool initializer (the cell sets its own threads)
    cfg = config_from_json(json.loads(cfg_json))
    cell_data = json.loads(cell_json)
    cell_data["envs"] = tuple(cell_data["envs"])
    return run_cell(cfg, Cell(**cell_data), Path(out), wait=False)


def config_from_json(data: dict) -> TableConfig:
    return from_dict(TableConfig, data)


def _ray_available() -> bool:
    try:
        import ray  # noqa: F401
    except ImportError:
        return False
    return True


def reuse_cell(cfg: TableConfig, cell: Cell, out: Path) -> dict | None:
    """The result of ``cell`` copied from the first of ``cfg.reuse``'s tables that finished the
    same computation (:attr:`TableConfig.reuse`), its folder copied beside it; None when none
    did."""
    import shutil

    import torch

    from genworld.data.multi_env import MultiEnvDataset

    dataset, numerics = None, _UNASKED
    for source in map(Path, cfg.reuse):
        found = source / cell.folder / "result.json"
        if not found.exists():
            continue
        saved = json.loads((source / "config.json").read_text())
        result = json.loads(found.read_text())
        same = (
            saved.get("scale") == cfg.scale
            and saved.get("budget") == asdict(cfg.budget)
            and saved.get("device") == cfg.device
            and (cell.setting == "single" or tuple(saved.get("envs", ())) == cfg.envs)
            and result.get("matmul_precision") == torch.get_float32_matmul_precision()
        )
        if not same:
            continue
        if dataset is None:  # the data this table would train the cell on, from today's store
            dataset = MultiEnvDataset.from_minari(cell.dataset_ids)
        if result.get("data") != dataset.fingerprint():
            continue
        if "numerics" in result:
            if numerics is _UNASKED:  # builds the agent: once per cell, not once per source
                numerics = numerics_here(cfg, cell, dataset)
            if result["numerics"] != numerics:
                continue
        folder = out / cell.folder
        staging = folder.with_name(folder.name + ".reusing")
        shutil.rmtree(staging, ignore_errors=True)
        shutil.copytree(found.parent, staging, ignore=shutil.ignore_patterns("*.claim"))
        result["reused_from"] = str(source)  # the table: the cell is at the same path there
        atomic_write_json(staging / "result.json", result)
        shutil.rmtree(folder, ignore_errors=True)  # a killed run's partial cell
        staging.rename(folder)
        return result
    return None


_UNASKED = object()
"""``reuse_cell``'s placeholder for numerics not yet asked (None is an answer: unknown)."""


class _NeedsWorldModel(Exception):
    """Raised instead of training a world model where only an agent's numerics are asked."""


def numerics_here(cfg: TableConfig, cell: Cell, dataset) -> dict[str, str] | None:
    """The precisions (``numerics``, :func:`genworld.train.cells.result_stamp`) that this table's
    agent of ``cell`` resolves to on this machine; None for an agent that needs a world model
    (it is not built for this: the answer is unknown)."""
    from genworld.train.cells import agent_numerics

    def no_world_model(ctx, name):
        raise _NeedsWorldModel(name)

    try:
        return agent_numerics(cell_agent(cfg, cell, dataset, world_models=no_world_model))
    except _NeedsWorldModel:
        return None


def cell_agent(cfg: TableConfig, cell: Cell, dataset, **kwargs: Any):
    """The agent of ``cell`` on ``dataset`` for ``cfg``'s scale, device and budget
    (:func:`genworld.train.cells.build_cell_agent`; ``kwargs``: its other arguments)."""
    from genworld.train.cells import build_cell_agent
    from genworld.utils.device import resolve_device

    return build_cell_agent(
        cell.algo,
        dataset,
        resolve_device(cfg.device),
        scale=cfg.scale,
        seed=cell.seed,
        updates=cfg.budget.updates,
        **kwargs,
    )


def run_cells(cfg: TableConfig, out: Path, *, show_progress: bool = True) -> list[dict]:
    """Run every cell of ``cfg`` not finished in ``out`` (resumable; several processes on one
    ``out`` split the work) and return every cell's result."""
    from genworld.data.build import ensure_built
    from genworld.utils.parallel import finish_held, finished, rejoin
    from genworld.utils.progress import progress_bar

    cfg.validate()
    if cfg.workers > 1 and cfg.executor == "ray" and not _ray_available():
        raise GenworldError(
            "--executor ray needs Ray, which is not installed: pip install -e '.[ray]' (the "
            "pinned ray extra), or run the cells in local processes with --executor local"
        )
    ids = [f"{env}-{quality}" for quality in cfg.qualities for env in cfg.envs]
    # the budget states the size: a dataset built at another one (for another scale) is refused,
    # before the run's folder is written
    ensure_built(ids, steps=cfg.budget.dataset_steps, show_progress=show_progress, exact=True)
    # how the cells are run (not what they compute) may change between a run and its resume,
    # and a rerun may ask for more (or fewer) cells: each cell's folder names what it computes
    check_or_write_config(out, cfg, ignore=HOW_RUN, extendable=EXTENDABLE)
    todo = cells(cfg)
    done = finished([out / cell.folder / "result.json" for cell in todo])
    rest = [cell for i, cell in enumerate(todo) if i not in done]
    fresh: list[dict | None] = []
    cfg_json = json.dumps(asdict(cfg))
    with progress_bar("table cells", len(todo), done=len(done), enabled=show_progress) as advance:
        if cfg.workers == 1:
            for cell in rest:
                fresh.append(run_cell(cfg, cell, out, wait=False, show_progress=show_progress))
                advance(1)
        elif cfg.executor == "ray" or (cfg.executor == "auto" and _ray_available()):
            fresh = _run_with_ray(cfg_json, rest, out, advance)
        else:
            fresh = _run_with_pool(cfg_json, cfg.workers, rest, out, advance)
    results = finish_held(
        rejoin(done, fresh),
        lambda i, wait: run_cell(cfg, todo[i], out, wait=wait, show_progress=show_progress),
        cfg.wait_for_others,
        "table",
        show_progress,
    )
    return [
        r if r.get("failed") else with_relabelling(r, out / c.folder)
        for r, c in zip(results, todo, strict=True)
        if r is not None  # without wait_for_others: still training in another process
    ]


def finished_results(cfg: TableConfig, out: Path) -> list[dict]:
    """The results of the cells of ``cfg`` finished in ``out``, each with its relabelling
    metrics (CMT, :func:`with_relabelling`) where its log has them. ``out`` must hold a run of
    the same envs, budget and scale; the ``EXTENDABLE`` fields may differ from its last run's,
    as a report may cover the cells of several runs (each cell's folder names what it
    computes)."""
    check_report_folder(out, cfg, ignore=(*HOW_RUN, *EXTENDABLE))
    folders = [out / cell.folder for cell in cells(cfg)]
    results = [
        with_relabelling(json.loads((f / "result.json").read_text()), f)
        for f in folders
        if (f / "result.json").exists()
    ]
    if not results:
        raise GenworldError(f"{out}: none of its {len(folders)} cells has finished yet")
    return results


RELABEL_PREFIX = "relabel/"
"""The metrics CMT logs with every prompt-tuning update (``algos/cmt.py``)."""


def with_relabelling(result: dict, folder: Path) -> dict:
    """``result`` with ``relabel``: a CMT cell's last relabelling metrics (``prompt_effect``,
    ``policy_change``, …), when its log has them (``policy/eval.jsonl`` in a run folder, or the
    ``eval.jsonl`` a record keeps beside the result)."""
    found = last_logged([folder / "policy" / "eval.jsonl", folder / "eval.jsonl"], RELABEL_PREFIX)
    return {**result, "relabel": found} if found else result


def _run_with_pool(cfg_json: str, workers: int, todo: list[Cell], out: Path, advance) -> list:
    from genworld.utils.parallel import process_map

    jobs = [(cfg_json, json.dumps(asdict(c)), str(out)) for c in todo]
    return process_map(_run_cell_in_worker, jobs, workers, advance)


def _run_with_ray(cfg_json: str, todo: list[Cell], out: Path, advance) -> list:
    """Each cell of ``todo`` as a Ray task of 1 CPU; their results in ``todo``'s order (tasks
    finish in any order). Ray is started here unless the caller started it: on an existing
    cluster when ``RAY_ADDRESS`` is set (``ray.init()`` reads it; the cluster's CPUs), else on
    this machine with ``workers`` CPUs."""
    import ray

    if not ray.is_initialized():
        if os.environ.get("RAY_ADDRESS"):
            ray.init()
        else:
            ray.init(num_cpus=json.loads(cfg_json)["workers"], include_dashboard=False)
    remote = ray.remote(num_cpus=1)(_run_cell_in_worker)
    refs = [remote.remote(cfg_json, json.dumps(asdict(c)), str(out)) for c in todo]
    index = {ref: i for i, ref in enumerate(refs)}
    results: list = [None] * len(refs)
    pending = list(refs)
    while pending:
        done, pending = ray.wait(pending, num_returns=1)
        for ref in done:
            results[index[ref]] = ray.get(ref)
        advance(len(done))
    return results
