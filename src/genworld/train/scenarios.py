"""``genworld scenarios``: MrCoM's studies (seed 002, §5, App. C) on DMC scenarios.

One world model per method's model kind is trained on every training scenario of the study's
tasks (one env per task: the scenarios of a task share it, so only the context tells them
apart), then, per target scenario, method and seed, a policy is adapted to the target from its
small dataset through that model (``mrcom``, ``tgw``, ``rssm``, ``rssm-context``: registered
agents, :mod:`genworld.algos`) and scored in the target's real env (normalized: return / 10).

Studies (``study``), each a set of groups, one world model per group and model kind:

- ``multi`` (Table 1): scenarios with torso, length and speed drawn from the training ranges;
  targets in distribution (new draws from the same ranges) and out of distribution (every
  parameter outside them), :func:`genworld.envs.scenarios.scenario_split`;
- ``dynamics`` (Table 2): as multi with the target speed fixed (``fixed_speed``, on the tasks
  that have one): only the dynamics change;
- ``perturb`` (Table 3): multi's scenarios with the observations perturbed (add-g, add-d, msk-r,
  msk-f; :mod:`genworld.envs.perturb`), a world model per perturbation, in-distribution targets;
- ``single`` (Table 4): a world model per task, on that task's scenarios only;
- ``behaviour`` (Table 5): the dynamics fixed (torso and length 1) and the speed drawn, a world
  model per data quality (random, medium, mixed, expert), in-distribution targets whose small
  datasets keep the study's ``quality`` (only the world model's data changes); the speed reward
  is one-sided (at least the target speed), so with the dynamics fixed running fast is good in
  every scenario and the context has little to tell;
- ``ablation``: multi's scenarios and targets, MrCoM against MrCoM with the meta-state or the
  meta-value regulariser's weight set to 0 (a world model each).

Every stage resumes in ``out``: datasets are built once (Minari, in ``out/datasets``), world
models in ``out/world_models/<group>/<model>`` (seed k > 0's in ``<model>-seed<k>``: each seed of
a cell adapts in its own seed's world model), and a cell is done when its ``result.json``
exists (``out/cells/<group>/<env>/<split>/<target>/<method>/seed<k>``). A finished study takes
more methods or seeds later (neither is part of the resume check).

Choices the seed text leaves open (documented here and in the report): one world model per
group, kind and seed (the seeds vary the world model and the adaptation; the k-step errors are
seed 0's models'); the fixed speed of the
dynamics study (1.0: the task's own target speed); the scenario ranges
(:class:`~genworld.envs.scenarios.ScenarioRanges`); perturbed data made by perturbing the
recorded observations as the perturbed env would (:func:`~genworld.envs.perturb.
perturb_episode_observations`), with an episode's own reset seed.
"""

from __future__ import annotations

import functools
import json
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from genworld.config import check_scale, resolve
from genworld.data.ids import DatasetId
from genworld.envs.perturb import KINDS, Perturbation, perturbed_name
from genworld.envs.scenarios import (
    SCENARIO_TASKS,
    SPEED_TASKS,
    parse_scenario,
    scenario_split,
    slug,
)
from genworld.errors import GenworldError
from genworld.train.policy_learner import check_policy_learner, policy_learner_overrides
from genworld.utils.io import (
    atomic_write_json,
    check_or_write_config,
    check_report_folder,
    claim,
    claim_file,
    claim_folder,
    claimed_result,
)

STUDIES = ("multi", "dynamics", "perturb", "single", "behaviour", "ablation")
METHODS = (
    "mrcom",
    "tgw",
    "rssm",
    "rssm-context",
    "cadm",
    "mrcom-no-meta-state",
    "mrcom-no-meta-value",
    "td3bc",
)
"""Every method: MrCoM, TGW (the sibling method), the context-free RSSM, the RSSM with MrCoM's
context (the paper's DreamerV3 baseline), CaDM (context-aware dynamics), MrCoM without each
regulariser, and TD3+BC on the target's data alone (``MODEL_FREE``: what the small dataset
gives with no world model; not in the paper)."""
DEFAULT_METHODS = ("mrcom", "rssm-context", "cadm", "rssm", "tgw")
"""MrCoM, the paper's two baselines (its DreamerV3: the RSSM with MrCoM's context; CaDM), the
context-free RSSM and TGW (the sibling method)."""
ABLATION_METHODS = ("mrcom", "mrcom-no-meta-state", "mrcom-no-meta-value")
"""The ablation study's default methods: MrCoM, and MrCoM with one regulariser's weight 0."""
WORLD_MODEL_OF = {
    "mrcom": "mrcom",
    "tgw": "tgw",
    "rssm": "rssm",
    "rssm-context": "rssm",
    "cadm": "cadm",
    "mrcom-no-meta-state": "mrcom-no-meta-state",
    "mrcom-no-meta-value": "mrcom-no-meta-value",
}
"""The world model each model-based method adapts in (rssm and rssm-context share one
model)."""
MODEL_FREE = tuple(m for m in METHODS if m not in WORLD_MODEL_OF)
"""Methods that adapt from the target's data alone (an algorithm of ``genworld.algos``), the
reference every world model's rollouts have to beat."""
MODEL_VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "mrcom-no-meta-state": ("mrcom", {"mrcom": {"meta_state_scale": 0.0}}),
    "mrcom-no-meta-value": ("mrcom", {"mrcom": {"meta_value_scale": 0.0}}),
}
"""World models that are another model with overrides: ``name -> (model, overrides)``."""
AGENT_OF = {"mrcom-no-meta-state": "mrcom", "mrcom-no-meta-value": "mrcom"}
"""The registered agent of a method named otherwise (an ablation adapts as MrCoM does)."""
BEHAVIOUR_QUALITIES = ("random", "medium", "mixed", "expert")
SPEED_STUDIES = ("dynamics", "behaviour")
"""Studies that fix or draw the target speed. The behaviour study varies only the speed, so it
takes only tasks with one (``SPEED_TASKS``); the dynamics study fixes it where a task has one
(a task without one, hopper-stand, varies in its dynamics only already)."""
ALPHA_REACH = 10.0
"""Nats SAC's log temperature can travel over a cell's policy updates at the default
``policy_alpha_lr``: enough for the initial temperature to fall by e^10, or rise."""
DOMAINS = ("dmc-cheetah-run", "dmc-walker-walk", "dmc-hopper-stand")
"""MrCoM's cheetah, walker and hopper (seed 002 §5: "we merge data from Hopper, Walker and
Cheetah"); hopper's task is stand, not hop (a deviation: hop's behaviour SAC never left return
0 in 60k steps here, stand's learned by 180k; docs/algorithms/mrcom.md)."""


@dataclass(frozen=True)
class ScenarioStudyConfig:
    study: str = "multi"
    """multi (Table 1), dynamics (Table 2), perturb (Table 3), single (Table 4), behaviour
    (Table 5) or ablation (each regulariser): see the module docstring."""
    envs: tuple[str, ...] = ("dmc-cheetah-run",)
    """DMC tasks whose scenarios the world model learns (``SCENARIO_TASKS`` whose
    scenario-conditioned behaviour policies are shipped). Left out, the scale's: at mini and full
    MrCoM's three domains (``DOMAINS``; the behaviour study, which varies the target speed, the
    two with one), at tiny cheetah-run alone."""
    methods: tuple[str, ...] = DEFAULT_METHODS
    """Methods compared (``METHODS``; the ablation study's default: ``ABLATION_METHODS``); a
    finished study takes more later."""
    seeds: int = 3
    """Seeds per (method, target); a finished study takes more later."""
    scale: str = "mini"
    """tiny, mini or full: the preset below, and every world model's and agent's own."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda: world models and cells."""
    quality: str = "mixed"
    """Data quality of every training scenario and target (random, medium, mixed, expert); the
    behaviour study trains on each of ``qualities`` instead (its targets keep this one)."""
    qualities: tuple[str, ...] = BEHAVIOUR_QUALITIES
    """The behaviour study's data qualities (App. C.2), one world model each."""
    perturbations: tuple[str, ...] = KINDS
    """The perturb study's observation perturbations (Table 3), one world model each."""
    train_scenarios: int = 8
    """Training scenarios per task (the world model's data)."""
    targets: int = 3
    """Target scenarios per task and split (in distribution; out of distribution where the study
    has it)."""
    scenario_seed: int = 0
    """Seeds the draw of training and target scenarios."""
    fixed_speed: float = 1.0
    """The target-speed scale every scenario of the dynamics study keeps (ours: the task's own
    target speed; the seed text lost the value)."""
    train_steps: int = 20_000
    """Transitions per training scenario's dataset (built when missing)."""
    target_steps: int = 5_000
    """Transitions of each target's small dataset: what adaptation starts its rollouts from."""
    wm_steps: int = 0
    """World-model updates; 0 = each model's preset for the scale."""
    policy_updates: int = 10_000
    """Policy updates per (method, target, seed)."""
    eval_every: int = 1_000
    """Updates between a cell's evaluations in its target's real env."""
    policy_init_alpha: float = 0.1
    """SAC's initial temperature in every cell. DMC rewards are 0 … 1 a step, so SAC's default
    1.0 makes the entropy bonus outweigh them and every policy stays at the floor (as in the
    unseen-task study, ``UnseenConfig.policy_init_alpha``). Full scale: 1.0 (plain SAC)."""
    policy_bc_alpha: float = 2.5
    """Weight of the RL term against the mini policy learner's behaviour term
    (``SACConfig.bc_alpha``; TD3+BC's 2.5, as the unseen-task study). Full scale: 0 (plain
    SAC, the paper's)."""
    policy_alpha_lr: float = 0.0
    """Adam learning rate of SAC's log temperature in every model-based cell; 0 =
    ``ALPHA_REACH / policy_updates``. Adam moves log α by about its lr per update whatever the
    gradient's size, so a cell's temperature can travel at most about updates × lr nats: a
    fixed lr would let it move ~1 nat at mini (1e-4 over 10,000 updates) and ~10 at full.
    Scaling it with the budget gives every scale the same reach. Not in the seed text (App. D
    gives the actor's and the critic's lr only)."""
    eval_episodes: int = 3
    """Episodes per evaluation."""
    last_k: int = 3
    """A cell's score: the mean of its last k evaluations."""
    workers: int = 1
    """Cells run side by side in this many processes. Not part of the resume check."""
    threads: int = 1
    """torch threads per process (each worker's, or this one's when workers = 1): two 1-thread
    processes on 2 cores each run at full speed, two 2-thread ones stall each other."""
    splits: tuple[str, ...] = ("id", "ood")
    """Held-out splits that get adaptation cells (in distribution, out of distribution; a
    group without one skips it). Not part of the resume check: a study may add the other."""
    cells: bool = True
    """False: datasets, world models and their k-step errors on the held-out scenarios only,
    no adaptation cell (the prediction-error comparison without policies). Not part of the
    resume check."""
    wait_for_others: bool = True
    """At the end, wait for the cells other processes sharing ``out`` are adapting, so that the
    report covers the whole study (True); or leave them to those processes, report what has
    finished and exit (False: the process that ends last reports the whole study)."""

    def validate(self) -> None:
        checks = [
            ("study", (self.study,), STUDIES),
            ("method", self.methods, METHODS),
            ("quality", (self.quality, *self.qualities), BEHAVIOUR_QUALITIES),
            ("perturbation", self.perturbations, KINDS),
            ("env", self.envs, SCENARIO_TASKS),
            ("split", self.splits, ("id", "ood")),
        ]
        for name, values, choices in checks:
            for value in values:
                if value not in choices:
                    raise GenworldError(
                        f"unknown {name} {value!r}: choose from {', '.join(choices)}"
                    )
        for name in ("methods", "envs", "qualities", "perturbations", "splits"):
            if not getattr(self, name):
                raise GenworldError(f"--{name} is empty: give at least one")
        for name in (
            *("seeds", "train_scenarios", "targets", "train_steps", "target_steps"),
            *("policy_updates", "eval_every", "eval_episodes", "last_k", "workers", "threads"),
        ):
            if getattr(self, name) <= 0:
                raise GenworldError(f"--{name} must be positive, got {getattr(self, name)}")
        if self.wm_steps < 0:
            raise GenworldError(f"--wm_steps must be ≥ 0 (0 = the preset), got {self.wm_steps}")
        check_policy_learner(self.policy_init_alpha, self.policy_bc_alpha)
        if self.policy_alpha_lr < 0:
            raise GenworldError(
                f"--policy_alpha_lr must be ≥ 0 (0 = {ALPHA_REACH:g} / policy_updates), got "
                f"{self.policy_alpha_lr}"
            )
        check_scale(self.scale)
        still = [env for env in self.envs if env not in SPEED_TASKS]
        if self.study == "behaviour" and still:
            raise GenworldError(
                f"the behaviour study varies the target speed, which {', '.join(still)} has "
                f"not: choose --envs from {', '.join(SPEED_TASKS)}"
            )
        if self.study == "dynamics" and len(still) < len(self.envs):
            speed = next(env for env in self.envs if env in SPEED_TASKS)
            parse_scenario(f"{speed}@speed={self.fixed_speed:g}")  # in the allowed range


SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "train_scenarios": 2,
        "targets": 1,
        "train_steps": 1_000,
        "target_steps": 1_000,
        "policy_updates": 20,
        "eval_every": 10,
        "eval_episodes": 1,
        "last_k": 2,
    },
    "mini": {},
    "full": {
        "train_scenarios": 20,
        "targets": 5,
        "train_steps": 100_000,
        "target_steps": 10_000,
        "policy_updates": 100_000,
        "eval_every": 5_000,
        "eval_episodes": 10,
        "last_k": 10,
        "policy_init_alpha": 1.0,
        "policy_bc_alpha": 0.0,
    },
}


def adaptation_overrides(cfg: ScenarioStudyConfig) -> dict[str, Any]:
    """The MBPO overrides of a model-based cell: the study's initial temperature and behaviour
    term, and its temperature lr (``policy_alpha_lr``, or the budget's)."""
    overrides = policy_learner_overrides(cfg)
    alpha_lr = cfg.policy_alpha_lr or ALPHA_REACH / cfg.policy_updates
    overrides["mbpo"]["sac"]["alpha_lr"] = alpha_lr
    return overrides


def config_for_scale(scale: str, **overrides: Any) -> ScenarioStudyConfig:
    """The scale's preset, then ``overrides`` (None = keep)."""
    check_scale(scale)
    top = {k: v for k, v in overrides.items() if v is not None}
    if top.get("study") == "ablation":
        top.setdefault("methods", ABLATION_METHODS)
    if scale != "tiny":
        speed = top.get("study", "multi") == "behaviour"
        top.setdefault("envs", tuple(d for d in DOMAINS if d in SPEED_TASKS) if speed else DOMAINS)
    return resolve(ScenarioStudyConfig, {"scale": scale, **SCALES[scale]}, top)


# ------------------------------------------------------------------ the plan: scenarios and cells
@dataclass(frozen=True)
class Group:
    """One world model's data: its name, tasks, data quality and perturbation (or none)."""

    name: str
    envs: tuple[str, ...]
    quality: str
    perturbation: str | None = None
    splits: tuple[str, ...] = ("id", "ood")


def groups(cfg: ScenarioStudyConfig) -> list[Group]:
    if cfg.study in ("multi", "dynamics", "ablation"):
        return [Group(cfg.study, cfg.envs, cfg.quality)]
    if cfg.study == "single":
        return [Group(f"single-{env}", (env,), cfg.quality) for env in cfg.envs]
    if cfg.study == "perturb":
        return [Group(k, cfg.envs, cfg.quality, k, ("id",)) for k in cfg.perturbations]
    return [Group(q, cfg.envs, q, None, ("id",)) for q in cfg.qualities]


def scenarios(cfg: ScenarioStudyConfig, env: str) -> dict[str, list[str]]:
    """``{"train": […], "id": […], "ood": […]}``: the task's seeded scenario names for the study
    (dynamics: the speed fixed; behaviour: torso and length 1, the speed drawn)."""
    n = cfg.train_scenarios
    inside, outside = scenario_split(env, n + cfg.targets, cfg.targets, seed=cfg.scenario_seed)
    names = {"train": inside[:n], "id": inside[n:], "ood": outside}
    if cfg.study == "dynamics" and env in SPEED_TASKS:
        fix = {"speed": cfg.fixed_speed}
    elif cfg.study == "behaviour":
        fix = {"torso": 1.0, "length": 1.0}
    else:
        return names
    return {k: [replace(parse_scenario(s), **fix).name for s in v] for k, v in names.items()}


@dataclass(frozen=True)
class Cell:
    group: str
    env: str
    split: str
    target: str
    method: str
    seed: int

    @property
    def folder(self) -> str:
        where = f"{self.group}/{self.env}/{self.split}/{slug(self.target)}"
        return f"cells/{where}/{self.method}/seed{self.seed}"


def cells(cfg: ScenarioStudyConfig) -> list[Cell]:
    """Seed-major: a study stopped part-way already compares every method on its first seeds."""
    out = []
    for seed in range(cfg.seeds):
        for group in groups(cfg):
            for env in group.envs:
                names = scenarios(cfg, env)
                for split in (s for s in group.splits if s in cfg.splits):
                    for target in names[split]:
                        out += [Cell(group.name, env, split, target, m, seed) for m in cfg.methods]
    return out


def dataset_ids(cfg: ScenarioStudyConfig) -> list[tuple[str, int]]:
    """Every dataset the study reads, with the transitions it is built with when missing."""
    ids: dict[str, int] = {}
    for group in groups(cfg):
        for env in group.envs:
            names = scenarios(cfg, env)
            for name in names["train"]:
                ids.setdefault(str(DatasetId(name, group.quality)), cfg.train_steps)
            for split in group.splits:
                for name in names[split]:
                    ids.setdefault(
                        str(DatasetId(name, target_quality(cfg, group))), cfg.target_steps
                    )
    return list(ids.items())


# ------------------------------------------------------------------ data
def _group_of(cfg: ScenarioStudyConfig, name: str) -> Group:
    return next(g for g in groups(cfg) if g.name == name)


def data_spec(env: str, perturbation: str | None):
    """The world model's env for a task's scenarios: the task (perturbed: its perturbed spec)."""
    from genworld.envs.registry import get_env_spec

    return get_env_spec(env if perturbation is None else perturbed_name(env, perturbation))


def scenario_episodes(name: str, quality: str, perturbation: str | None, salt: int) -> list:
    """A scenario's episodes (its Minari dataset), their observations perturbed as the perturbed
    env would give them, each with its own reset seed (``salt`` keeps scenarios apart)."""
    from genworld.data.episodes import Episode
    from genworld.data.minari_io import read_episodes
    from genworld.envs.perturb import perturb_episode_observations

    dataset = DatasetId(name, quality)
    spec = dataset.spec
    episodes = read_episodes(str(dataset), obs_dim=spec.obs_dim, act_dim=spec.act_dim)
    if perturbation is None:
        return episodes
    p = Perturbation(perturbation)
    return [
        Episode.from_arrays(
            perturb_episode_observations(ep.observations, p, salt * 100_000 + i),
            ep.actions,
            ep.rewards,
            ep.terminations,
            ep.truncations,
        )
        for i, ep in enumerate(episodes)
    ]


def group_dataset(cfg: ScenarioStudyConfig, group: Group):
    """Every training scenario's data, one env per task."""
    from genworld.data.multi_env import MultiEnvDataset

    data = []
    for env in group.envs:
        names = scenarios(cfg, env)["train"]
        episodes = [
            ep
            for i, name in enumerate(names)
            for ep in scenario_episodes(name, group.quality, group.perturbation, i)
        ]
        data.append((data_spec(env, group.perturbation), episodes))
    return MultiEnvDataset(data)


def target_quality(cfg: ScenarioStudyConfig, group: Group) -> str:
    """The quality of a group's target data: the group's, but in the behaviour study the
    study's ``quality`` for every group, so that only the world model's data changes (App. C.2
    varies the pre-training data; adaptation here is offline, from the target's data)."""
    return cfg.quality if cfg.study == "behaviour" else group.quality


def target_episodes(cfg: ScenarioStudyConfig, group: Group, env: str, split: str, target: str):
    """A target scenario's small dataset (its episodes, perturbed as the group's)."""
    salt = 10_000 + scenarios(cfg, env)[split].index(target)
    salt += 5_000 if split == "ood" else 0
    return scenario_episodes(target, target_quality(cfg, group), group.perturbation, salt)


def target_dataset(cfg: ScenarioStudyConfig, group: Group, cell: Cell):
    """The target's small dataset, under its task's env (the world model's)."""
    from genworld.data.multi_env import MultiEnvDataset

    episodes = target_episodes(cfg, group, cell.env, cell.split, cell.target)
    return MultiEnvDataset([(data_spec(cell.env, group.perturbation), episodes)])


def held_out_dataset(cfg: ScenarioStudyConfig, group: Group, split: str):
    """Every target scenario of ``split`` (in or out of distribution), one env per task as the
    group's world model has them: data no world model trained on."""
    from genworld.data.multi_env import MultiEnvDataset

    return MultiEnvDataset(
        [
            (
                data_spec(env, group.perturbation),
                [
                    ep
                    for target in scenarios(cfg, env)[split]
                    for ep in target_episodes(cfg, group, env, split, target)
                ],
            )
            for env in group.envs
        ]
    )


ERROR_STARTS = 256
"""Open-loop start states per task in the world-model error stage."""


def world_model_errors(
    cfg: ScenarioStudyConfig, out: Path, group: str, kind: str, model, normalizer=None
) -> dict:
    """``{split: {task: {obs_h1, rew_h1, obs_h5, …}}}``: ``model`` (the group's ``kind``
    model)'s k-step open-loop errors (:func:`genworld.eval.wm_metrics.k_step_errors`: the data's
    actions fed for k steps on the model's own predictions, normalised by the training data's
    statistics) on its training scenarios (``train``: how far errors compound where the model
    has seen data) and on each split's held-out target scenarios, computed once into
    ``world_models/<group>/<kind>/errors.json`` (a split missing there is added). ``model``
    may be ``COPY`` (kind ``copy``: the predictor of no change), with a model's ``normalizer``;
    a model's own is used otherwise."""
    from genworld.eval.wm_metrics import k_step_errors

    path = out / "world_models" / group / kind / "errors.json"
    spec = _group_of(cfg, group)
    splits = ("train", *spec.splits)
    # one process computes them; another sharing the study waits, then reads them
    with claim(path.with_name(".errors.claim"), wait=True):
        errors = json.loads(path.read_text()) if path.exists() else {}
        if all(split in errors for split in splits):
            return errors
        if normalizer is None:
            model.eval()
            normalizer = model.normalizer
        for split in (s for s in splits if s not in errors):
            data = (
                group_dataset(cfg, spec) if split == "train" else held_out_dataset(cfg, spec, split)
            )
            errors[split] = k_step_errors(model, data, normalizer, per_env=ERROR_STARTS, seed=0)
        errors = {split: errors[split] for split in splits}
        atomic_write_json(path, errors)
    return errors


# ------------------------------------------------------------------ world models and cells
def world_model_config(cfg: ScenarioStudyConfig, kind: str, seed: int = 0):
    from genworld.train.world_model import config_for_scale as wm_scale

    model, overrides = MODEL_VARIANTS.get(kind, (kind, {}))
    return wm_scale(
        cfg.scale,
        check_ids=False,
        model=model,
        seed=seed,
        device=cfg.device,
        steps=cfg.wm_steps or None,
        **overrides,
    )


def world_model_folder(group: str, kind: str, seed: int = 0) -> str:
    """Where a study keeps the group's ``kind`` model of ``seed`` (under its ``--out``): seed
    0's in ``world_models/<group>/<kind>``, beside it seed k's in ``<kind>-seed<k>``."""
    return f"world_models/{group}/{kind}" + (f"-seed{seed}" if seed else "")


def world_model(
    cfg: ScenarioStudyConfig,
    out: Path,
    group: str,
    kind: str,
    show_progress=False,
    seed: int = 0,
    data=None,
):
    """The group's ``kind`` model of ``seed`` on its training scenarios (trained once, then
    loaded; ``data``: the group's training data when the caller has it already). Each seed of a
    cell adapts in its own seed's model, so a study's spread over seeds holds the world model's
    as well as the adaptation's."""
    from genworld.train.world_model import fit_world_model

    data = data if data is not None else group_dataset(cfg, _group_of(cfg, group))
    folder = out / world_model_folder(group, kind, seed)
    config = world_model_config(cfg, kind, seed)
    # one process trains it; another sharing the study waits, then loads the trained model
    with claim(claim_file(folder), wait=True):
        return fit_world_model(config, data, folder, show_progress=show_progress)


@functools.lru_cache(maxsize=len(WORLD_MODEL_OF))
def _cached_model(cfg: ScenarioStudyConfig, out: str, group: str, kind: str, seed: int):
    """A world model loaded once per (worker) process for all its cells (every kind of a
    group stays loaded: the cells of a target cycle through the methods; cells run
    seed-major)."""
    return world_model(cfg, Path(out), group, kind, seed=seed)


def run_cell(cfg: ScenarioStudyConfig, out: Path, cell: Cell, wait: bool = False) -> dict | None:
    """:func:`adapt_cell`, or, when it fails, the failure's record (the study goes on; a rerun
    retries the cell). The cell is claimed first (:func:`~genworld.utils.io.claimed_result`):
    None, at once, while another process sharing the study adapts it (``wait=False``)."""
    from genworld.train.failures import guarded

    folder = out / cell.folder
    work = functools.partial(adapt_cell, cfg, out, cell)
    return claimed_result(
        folder, "result.json", lambda: guarded(folder, cell.folder, "the study", work), wait=wait
    )


def adapt_cell(cfg: ScenarioStudyConfig, out: Path, cell: Cell) -> dict:
    """Adapt ``cell.method`` to the target from its small dataset in the group's world model
    (a ``MODEL_FREE`` method: from the dataset alone), score it in the target's real env;
    resumable, then its ``result.json``."""
    import torch

    from genworld.envs.registry import get_env_spec
    from genworld.train.cells import build_cell_agent, result_stamp, train_cell
    from genworld.utils.device import resolve_device

    folder = out / cell.folder
    done = folder / "result.json"
    if done.exists():
        return json.loads(done.read_text())
    started = time.perf_counter()
    group = _group_of(cfg, cell.group)
    kind = WORLD_MODEL_OF.get(cell.method)
    model = None if kind is None else _cached_model(cfg, str(out), cell.group, kind, cell.seed)
    data = target_dataset(cfg, group, cell)  # (the model is loaded before the cell's seed)
    task = (
        cell.target
        if group.perturbation is None
        else perturbed_name(cell.target, group.perturbation)
    )
    overrides = adaptation_overrides(cfg) if model is not None else None
    torch.manual_seed(cell.seed)
    agent = build_cell_agent(
        AGENT_OF.get(cell.method, cell.method),
        data,
        resolve_device(cfg.device),
        scale=cfg.scale,
        seed=cell.seed,
        out=folder,
        overrides=overrides,
        world_models=lambda ctx, name: model,
        task=task,
        updates=cfg.policy_updates,
    )
    spec = get_env_spec(task)
    trained = train_cell(
        f"{cell.method} {cell.group} {cell.split} {cell.target} s{cell.seed}",
        agent,
        [spec],
        folder / "policy",
        updates=cfg.policy_updates,
        eval_every=cfg.eval_every,
        eval_episodes=cfg.eval_episodes,
        last_k=cfg.last_k,
        seed=cell.seed,
        started=started,
    )
    summary = trained.summary
    result = {
        **asdict(cell),
        "study": cfg.study,
        "eval_env": task,
        "last_k": summary[task]["last_k_mean"],
        "best": summary[task]["best"],
        "world_model": world_model_folder(cell.group, kind, cell.seed) if kind else None,
        "data": data.fingerprint(),
        "updates": cfg.policy_updates,
        # the SAC settings a study may change: a study resumed by newer code shows its cells'
        "policy": overrides["mbpo"]["sac"] if overrides else None,
        **result_stamp(trained.seconds, agent),
    }
    atomic_write_json(done, result)
    return result


# ------------------------------------------------------------------ the study
@dataclass(frozen=True)
class ScenarioResults:
    """What a study produced: each task's scenarios, one result per finished cell of
    ``planned``."""

    scenarios: dict[str, dict[str, list[str]]]
    results: list[dict]
    planned: int
    errors: dict[str, dict[str, dict]]
    """``{group: {kind: world_model_errors(...)}}`` of the world models finished so far."""
    failed: list[dict] = field(default_factory=list)
    """The records of the cells that failed this run (:mod:`genworld.train.failures`)."""


def check_policies(cfg: ScenarioStudyConfig) -> None:
    """Every behaviour policy the datasets need is shipped; else one line naming them."""
    from genworld.data.build import missing_policies

    missing = sorted({p for i, _ in dataset_ids(cfg) for p in missing_policies(i)})
    if missing:
        raise GenworldError(
            f"no behaviour policies {', '.join(missing)} for the study's datasets: leave those "
            "tasks out of --envs, or train and export them (`genworld data train-policy`, "
            "`genworld data export-policies`)"
        )


def run_scenarios(
    cfg: ScenarioStudyConfig,
    out: Path,
    *,
    show_progress: bool = True,
    report_only: bool = False,
) -> ScenarioResults:
    """Datasets, world models and every cell (each resumes), or with ``report_only`` the cells
    finished so far."""
    cfg.validate()
    names = {env: scenarios(cfg, env) for env in cfg.envs}
    todo = cells(cfg)
    if report_only:
        check_report_folder(out, cfg, ignore=IGNORED)  # writes nothing
        paths = [out / c.folder / "result.json" for c in todo]
        results = [json.loads(p.read_text()) for p in paths if p.exists()]
        return ScenarioResults(names, results, len(todo), finished_errors(cfg, out))
    check_policies(cfg)
    from genworld.data.minari_io import minari_root
    from genworld.utils.device import torch_threads

    # several processes may share the study (its world models and cells are claimed one by
    # one); a command wanting the folder alone is refused. The study's datasets live in its
    # folder: a scale's scenarios share names with every other scale's at other sizes.
    with (
        claim_folder(out, "genworld scenarios", cfg, shared=True),
        torch_threads(cfg.threads),
        minari_root(out / "datasets"),
    ):
        check_or_write_config(out, cfg, ignore=IGNORED)
        return _run_stages(cfg, out, names, todo, show_progress)


IGNORED = ("workers", "methods", "seeds", "splits", "cells", "wait_for_others")
"""Fields a finished study may change when continued."""


def model_kinds(cfg: ScenarioStudyConfig) -> list[str]:
    """The world models ``cfg.methods`` adapt in (none for a model-free method)."""
    return list(dict.fromkeys(WORLD_MODEL_OF[m] for m in cfg.methods if m in WORLD_MODEL_OF))


def error_rows(kind: str) -> tuple[str, ...]:
    """The k-step error rows of model kind ``kind``: one per method that rolls it out (the
    RSSM's two: ``rssm`` from the start observation alone, ``rssm-context`` after filtering
    MrCoM's context)."""
    return tuple(method for method, model in WORLD_MODEL_OF.items() if model == kind)


def error_kinds(cfg: ScenarioStudyConfig) -> list[str]:
    return [name for kind in model_kinds(cfg) for name in error_rows(kind)]


def error_view(cfg: ScenarioStudyConfig, name: str, model):
    """The model as error row ``name`` rolls it out: the RSSM with its method's burn-in."""
    if WORLD_MODEL_OF[name] != "rssm":
        return model
    from genworld.algos.rssm import PRESETS as RSSM_AGENT

    return model.with_burn_in(RSSM_AGENT[cfg.scale]["context_steps"] if name != "rssm" else 0)


def finished_errors(cfg: ScenarioStudyConfig, out: Path) -> dict[str, dict[str, dict]]:
    errors: dict[str, dict[str, dict]] = {}
    for group in groups(cfg):
        for kind in [*error_kinds(cfg), "copy"]:
            path = out / "world_models" / group.name / kind / "errors.json"
            if path.exists():
                errors.setdefault(group.name, {})[kind] = json.loads(path.read_text())
    return errors


def _run_stages(
    cfg: ScenarioStudyConfig,
    out: Path,
    names: dict[str, dict[str, list[str]]],
    todo: list[Cell],
    show_progress: bool,
) -> ScenarioResults:
    from genworld.data.build import ensure_built
    from genworld.eval.wm_metrics import COPY
    from genworld.train.failures import split_failures
    from genworld.utils.parallel import finish_held, finished, map_unfinished
    from genworld.utils.progress import progress_bar

    for steps in sorted({s for _, s in dataset_ids(cfg)}):
        ids = [i for i, s in dataset_ids(cfg) if s == steps]
        ensure_built(ids, steps=steps, show_progress=show_progress, exact=True)
    errors: dict[str, dict[str, dict]] = {}
    for group in groups(cfg):
        data = group_dataset(cfg, group)  # read once for the group's every model
        for kind in model_kinds(cfg):  # trained here, before the cells load them
            model = world_model(cfg, out, group.name, kind, show_progress, data=data)
            for name in error_rows(kind):
                errors.setdefault(group.name, {})[name] = world_model_errors(
                    cfg, out, group.name, name, error_view(cfg, name, model)
                )
        if group.name in errors:  # the same data's predictor of no change, for scale
            errors[group.name]["copy"] = world_model_errors(
                cfg, out, group.name, "copy", COPY, model.normalizer
            )
    if not cfg.cells:
        return ScenarioResults(names, [], len(todo), errors)
    results = []
    done = sum((out / c.folder / "result.json").exists() for c in todo)
    with progress_bar("scenario cells", len(todo), done=done, enabled=show_progress) as advance:
        for seed in dict.fromkeys(c.seed for c in todo):  # seed-major, as the cells are
            cells_of_seed = [c for c in todo if c.seed == seed]
            done_of_seed = finished([out / c.folder / "result.json" for c in cells_of_seed])
            unfinished = {  # groups whose cells of this seed still need a world model
                c.group
                for j, c in enumerate(cells_of_seed)
                if c.method in WORLD_MODEL_OF and j not in done_of_seed
            }
            for group in groups(cfg):  # a later seed's models, before its cells load them
                if seed > 0 and group.name in unfinished:
                    data = group_dataset(cfg, group)
                    for kind in model_kinds(cfg):
                        world_model(cfg, out, group.name, kind, show_progress, seed, data)
            jobs = [(cfg, out, c) for c in cells_of_seed]
            results += map_unfinished(
                run_cell, jobs, done_of_seed, cfg.workers, advance, cfg.threads
            )
    results = finish_held(  # results are in todo's order (seed-major, as todo is)
        results,
        lambda i, wait: run_cell(cfg, out, todo[i], wait=wait),
        cfg.wait_for_others,
        "scenarios",
        show_progress,
    )
    ok, failed = split_failures(results)
    return ScenarioResults(names, ok, len(todo), errors, failed)
