"""DD-IQL (Kim & Joo 2023, §3.3, Algorithm 2): IQL with agnostic networks over several offline
datasets, one env per dataset, the envs sharded over processes (:mod:`genworld.train.distributed`).

``genworld train agnostic-iql`` runs :func:`train_agnostic_iql`, under ``torchrun`` or in one
process. Per-env statistics (observation / reward normalisers) are fitted by the process holding
the env and summed over processes (:func:`global_statistics`).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import torch
import torch.distributed as dist

from genworld.config import apply, check_scale
from genworld.errors import GenworldError
from genworld.train.distributed import (
    Dist,
    barrier,
    ddp_wrapper,
    gather_objects,
    setup,
    shard,
    teardown,
)


@dataclass(frozen=True)
class AgnosticIQLRunConfig:
    """A DD-IQL run: IQL with agnostic networks over several datasets, sharded over processes."""

    datasets: tuple[str, ...] = ()
    """Dataset ids (one env each); empty = the scale's default."""
    scale: str = "mini"
    """tiny | mini | full: the agent preset and the run budget below."""
    steps: int = 0
    """Gradient updates; 0 = the scale's budget."""
    eval_every: int = 0
    """Updates between evaluations + checkpoints; 0 = the scale's."""
    eval_episodes: int = 0
    """Episodes per env per evaluation; 0 = the scale's."""
    log_every: int = 0
    """Updates between ``metrics.jsonl`` records; 0 = the scale's."""
    seed: int = 0
    """Seeds the networks' initialisation, the batch sampling and the evaluation episodes."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """torch threads per process."""
    agent: dict[str, Any] = field(default_factory=dict)
    """AgnosticIQLConfig overrides (nested dicts for ``net``)."""
    dataset_steps: int = 0
    """Transitions per dataset when a missing one is built; 0 = the scale's (tiny: 2,000,
    mini/full: the dataset's default size)."""
    init_from: str = ""
    """A finished ``genworld train agnostic-iql`` folder whose networks start this run
    (transfer: every shared weight; the weights of the other run's envs start fresh)."""
    eval_at_start: bool = False
    """Also evaluate before the first update (step 0): a transferred agent's score before
    it trains."""


IQL_BUDGETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "datasets": ("halfcheetah-random", "hopper-random", "walker2d-random"),
        "steps": 20,
        "eval_every": 10,
        "eval_episodes": 1,
        "log_every": 5,
        "dataset_steps": 2_000,
    },
    "mini": {
        "datasets": ("halfcheetah-medium", "hopper-medium", "walker2d-medium"),
        "steps": 10_000,
        "eval_every": 2_000,
        "eval_episodes": 5,
        "log_every": 100,
    },
    "full": {
        "datasets": ("halfcheetah-medium", "hopper-medium", "walker2d-medium"),
        "steps": 1_000_000,
        "eval_every": 50_000,
        "eval_episodes": 10,
        "log_every": 1_000,
    },
}


BUDGET_FIELDS = ("steps", "eval_every", "eval_episodes", "log_every", "dataset_steps")
"""The fields whose 0 means "the scale's budget"."""


def iql_run_config(**fields: Any) -> AgnosticIQLRunConfig:
    """The run config of ``fields``, zero fields filled from the scale's budget
    (:func:`resolve_iql_run`). A budget field *given* as 0 (or negative, or absurd) is an error:
    0 stands for "the scale's" only when the field is left out."""
    check_given_counts(fields, BUDGET_FIELDS)
    return resolve_iql_run(apply(AgnosticIQLRunConfig(), fields))


def check_given_counts(fields: dict[str, Any], names: tuple[str, ...]) -> None:
    """Each of ``names`` present in ``fields`` is a positive count of at most ``MAX_STEPS``."""
    from genworld.data.build import MAX_STEPS

    for name in names:
        value = fields.get(name)
        if value is not None and not 0 < value <= MAX_STEPS:
            raise GenworldError(
                f"--{name} must be a positive number, at most {MAX_STEPS:,}; got {value}"
            )


def resolve_iql_run(cfg: AgnosticIQLRunConfig) -> AgnosticIQLRunConfig:
    """Fill the zero / empty fields from the scale's budget (a new frozen config)."""
    from dataclasses import replace

    from genworld.data.ids import parse_dataset_id

    check_scale(cfg.scale)
    budget = IQL_BUDGETS[cfg.scale]
    filled = {k: v for k, v in budget.items() if not getattr(cfg, k)}
    cfg = replace(cfg, **filled)
    check_given_counts({k: getattr(cfg, k) for k in BUDGET_FIELDS if k in budget}, BUDGET_FIELDS)
    if len({parse_dataset_id(x).env for x in cfg.datasets}) != len(cfg.datasets):
        raise GenworldError("--datasets names one env twice; give one dataset per env")
    return cfg


def global_statistics(local, held: list[int], specs, d: Dist, normalize_reward: bool = True):
    """The per-env observation normaliser and IQL reward scales of *all* envs: each process
    fits its held envs' rows, the rows are summed over processes."""
    from genworld.algos.iql import reward_scales
    from genworld.data.normalization import Normalizer

    num_envs, obs_max = len(specs), max(s.obs_dim for s in specs)
    fitted = Normalizer.fit(local)
    norm = Normalizer(num_envs, obs_max)
    stats = [torch.zeros(num_envs, obs_max), torch.zeros(num_envs, obs_max)]
    stats += [torch.zeros(num_envs) for _ in range(3)]
    scales = reward_scales(local) if normalize_reward else torch.ones(local.num_envs)
    for i, g in enumerate(held):
        w = specs[g].obs_dim
        stats[0][g, :w], stats[1][g, :w] = fitted.obs_mean[i, :w], fitted.obs_std[i, :w]
        stats[2][g], stats[3][g], stats[4][g] = (
            fitted.reward_mean[i],
            fitted.reward_std[i],
            scales[i],
        )
    if d.world_size > 1:
        for s in stats:
            dist.all_reduce(s)
    norm.obs_mean.copy_(stats[0])
    norm.obs_std.copy_(torch.where(stats[1] > 0, stats[1], torch.ones_like(stats[1])))
    norm.reward_mean.copy_(stats[2])
    norm.reward_std.copy_(stats[3])
    return norm, stats[4]


def build_dd_iql(
    local, specs, held: list[int], d: Dist, scale: str, seed: int, overrides=None, *, updates: int
):
    """The AgnosticIQL agent of this process (``local`` = the held envs' data) for a run of
    ``updates`` updates, DDP-wrapped when there are several processes."""
    from genworld.algos.agnostic_iql import PRESETS, AgnosticIQL, AgnosticIQLConfig
    from genworld.algos.registry import resolve_config, schedule_length

    ctx = SimpleNamespace(scale=scale, overrides=dict(overrides or {}))
    cfg = resolve_config(AgnosticIQLConfig, PRESETS, ctx)
    norm, scales = global_statistics(local, held, specs, d, cfg.normalize_reward)
    torch.manual_seed(seed)  # identical initial weights everywhere (DDP also broadcasts rank 0's)
    agent = AgnosticIQL(
        local,
        cfg,
        d.device,
        specs=specs,
        env_ids=held,
        normalizer=norm,
        reward_scale=scales,
        actor_lr_decay_steps=schedule_length(
            cfg.actor_lr_decay_steps, updates, "actor_lr_decay_steps"
        ),
    )
    if d.world_size > 1:
        agent.use_ddp(ddp_wrapper(d), d.world_size)
    return agent


def train_agnostic_iql(
    cfg: AgnosticIQLRunConfig, out: Path, *, show_progress: bool = False
) -> list[dict]:
    """DD-IQL on ``cfg.datasets`` (one or several processes); resumable from ``out``. Returns
    the evaluation records on rank 0 (``[]`` on the others)."""
    from genworld.data.build import ensure_built
    from genworld.data.ids import parse_dataset_id
    from genworld.data.multi_env import MultiEnvDataset
    from genworld.utils.io import check_or_write_config, claim_folder

    cfg = resolve_iql_run(cfg)
    d = setup(cfg.device)
    folder_claim = contextlib.ExitStack()
    try:
        torch.set_num_threads(cfg.threads)
        out = Path(out)
        if d.is_main:  # the main process holds the folder for all of them
            folder_claim.enter_context(claim_folder(out, "genworld train agnostic-iql"))
            # eval_at_start adds a step-0 evaluation and changes no update: a run saved
            # without it resumes
            check_or_write_config(out, cfg, ignore=("eval_at_start",))
        barrier(d)
        specs = [parse_dataset_id(x).spec for x in cfg.datasets]
        held = shard(len(specs), d)
        # each process builds the missing datasets it holds (distinct ids)
        ensure_built(
            [cfg.datasets[i] for i in held],
            steps=cfg.dataset_steps or None,
            show_progress=show_progress,
        )
        local = MultiEnvDataset.from_minari([cfg.datasets[i] for i in held])
        agent = build_dd_iql(
            local, specs, held, d, cfg.scale, cfg.seed, cfg.agent, updates=cfg.steps
        )
        if cfg.init_from:  # a checkpoint of this run, if any, takes over when the loop resumes
            agent.start_from(pretrained_networks(Path(cfg.init_from)))
        return _offline_loop(agent, cfg, specs, held, out, d, show_progress)
    finally:
        folder_claim.close()
        teardown(d)


def pretrained_networks(run: Path) -> dict[str, torch.Tensor]:
    """The networks of a ``genworld train agnostic-iql`` folder's last checkpoint."""
    from genworld.train.checkpoint import latest_checkpoint, load_checkpoint
    from genworld.utils.io import read_run_config

    fix = "give the output folder of a finished `genworld train agnostic-iql`"
    read_run_config(run, "genworld train agnostic-iql", fix)
    latest = latest_checkpoint(run / "checkpoints")
    if latest is None:
        raise GenworldError(f"{run} has no checkpoint yet; {fix}")
    _, state = load_checkpoint(latest)
    return state["agent"]["nets"]


def _offline_loop(agent, cfg, specs, held, out: Path, d: Dist, show_progress: bool) -> list[dict]:
    from genworld.train.loop import AgentTrainer, Hook, log_reaches, read_eval, run_loop
    from genworld.utils.provenance import record_provenance

    trains = not log_reaches(out, cfg.steps)  # a finished run keeps the code that made it

    def log(step: int, metrics: dict) -> dict:
        return {**d.reduce(metrics), "processes": d.world_size}

    hooks = (
        Hook(cfg.log_every, log, log="metrics.jsonl", rate="time/updates_per_s"),
        Hook(
            cfg.eval_every,
            lambda step, m: _evaluate_held(agent, specs, held, cfg, d),
            "eval.jsonl",
            at_start=cfg.eval_at_start,
        ),
    )
    run_loop(
        "dd-iql",
        AgentTrainer(agent),
        out,
        steps=cfg.steps,
        seed=cfg.seed,
        checkpoint_every=cfg.eval_every,
        hooks=hooks,
        show_progress=show_progress,
        processes=d,
        unit="update",
    )
    if d.is_main and trains:
        record_provenance(out)
    return read_eval(out) if d.is_main else []


def _evaluate_held(agent, specs, held, cfg, d: Dist) -> dict[str, float]:
    """Each process runs its held envs' episodes; rank 0 gets everything."""
    from genworld.eval.rollout import evaluate_agent, first_episode_seed
    from genworld.train.loop import eval_record

    global_idx = torch.tensor(held, device=d.device)

    def act(obs, local_idx):
        return agent.act(obs, global_idx[local_idx.to(d.device)])

    held_specs = [specs[g] for g in held]
    returns = evaluate_agent(act, held_specs, cfg.eval_episodes, first_episode_seed(cfg.seed))
    merged = {k: v for part in gather_objects(returns, d) for k, v in part.items()}
    return eval_record(specs, merged)
