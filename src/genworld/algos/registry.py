"""Every offline algorithm behind one contract, so the loop, ``genworld table`` and the tests
treat them alike.

An algorithm module exposes ``build(ctx: AlgoContext) -> agent`` where the agent has

- ``update(generator: torch.Generator) -> dict[str, Tensor]`` — one gradient step; it samples
  its own batches from ``ctx.dataset`` with ``generator`` (so a resumed run continues exactly);
- ``act(obs (n, obs_max), env_idx (n,), *, deterministic=True) -> (n, act_max)`` — padded raw
  observations in, actions in [-1, 1] zero on padded dims out;
- ``state_dict() / load_state_dict()`` — everything a resume needs (tensors, ints, floats);
- optionally ``episode_policy(env_k, episodes)`` for policies that need the episode's history
  (DT, Prompt-DT): an object with ``act(obs, idx)`` and ``observe(idx, rewards)``, see
  :func:`genworld.eval.rollout.evaluate_agent`.

Modules are imported lazily (``"module:function"``) so ``genworld --help`` stays fast.

Algorithms from outside genworld (docs/EXTENDING.md) join the built-in ones under their own
names, from two places every process reads, so a table's worker processes see them too: the
entry points of group ``genworld.algos`` of installed packages, and the environment variable
``GENWORLD_ALGOS`` (``name=module:function``, comma-separated), which
:func:`genworld.api.register_algorithm` sets for this process and its children.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch

from genworld.config import resolve
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError


@dataclass(frozen=True)
class AlgoContext:
    """What an algorithm is built from; one per (algorithm, datasets, seed) cell."""

    dataset: MultiEnvDataset
    """Training data of every env in the cell (one env = single-env setting)."""
    normalizer: Normalizer
    """Per-env observation/reward statistics fitted on ``dataset``."""
    device: torch.device
    scale: str = "mini"
    """tiny | mini | full: picks the algorithm's own preset (network sizes, model budgets)."""
    seed: int = 0
    out: Path | None = None
    """Folder for the algorithm's own artefacts (e.g. a world model), resumable; None = none."""
    shared: Path | None = None
    """Folder where cells share artefacts that depend only on the data, seed and config: a world
    model is trained once for the β values of a sweep, TGW and TGW w/o ri, MOPO and MOReL
    (keyed by its config and a fingerprint of the data); None = each cell trains its own."""
    show_progress: bool = False
    updates: int | None = None
    """Updates the runner will make; schedules that span the run (IQL's actor-lr decay) end with
    it. None = not known (such a schedule then needs its length set in the config)."""
    overrides: dict[str, Any] = field(default_factory=dict)
    """Config fields to override (validated by the algorithm's config)."""
    prompts: MultiEnvDataset | None = None
    """Where a prompted policy draws its prompts when not from ``dataset`` (the unseen-task
    study: each task's small expert data), one env per prompt env; None = ``dataset``."""
    task: str | None = None
    """The task env a cell is scored in when its data is a task family's (the unseen-task
    study: ``cheetah-vel-7``), for a task's own reward function; None otherwise."""
    world_models: WorldModelSource | None = None
    """Trains, resumes or loads the world model a model-based algorithm asks for; the runner
    supplies it (:func:`genworld.train.world_model_source.provide_world_model`), so agents never
    train models themselves. None = model-free cells only."""

    def world_model(self, model: str) -> torch.nn.Module:
        """The fitted world model ``model`` (``tgw``, ``mlp``, ``mrcom``, ``rssm``) on this cell's
        data (or, in ``genworld scenarios``, the training scenarios' model): the scale's
        preset of that model, then ``overrides["world_model"]``."""
        if self.world_models is None:
            raise GenworldError(
                f"a model-based algorithm needs a world model ({model}): build its AlgoContext "
                "with world_models=genworld.train.world_model_source.provide_world_model"
            )
        return self.world_models(self, model)

    @property
    def act_dims(self) -> list[int]:
        return [s.act_dim for s in self.dataset.specs]


class WorldModelSource(Protocol):
    def __call__(self, ctx: AlgoContext, model: str) -> torch.nn.Module: ...


class OfflineAgent(Protocol):
    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]: ...

    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: dict) -> None: ...


ALGOS: dict[str, str] = {
    "bc": "genworld.algos.bc:build",
    "cql": "genworld.algos.cql:build",
    "iql": "genworld.algos.iql:build",
    "td3bc": "genworld.algos.td3bc:build",
    "mopo": "genworld.algos.mopo:build",
    "morel": "genworld.algos.morel:build",
    "dt": "genworld.algos.dt:build",
    "prompt-dt": "genworld.algos.prompt_dt:build",
    "cmt": "genworld.algos.cmt:build",
    "tgw": "genworld.algos.tgw:build",
    "mrcom": "genworld.algos.mrcom:build",
    "rssm": "genworld.algos.rssm:build",
    "cadm": "genworld.algos.cadm:build",
    "agnostic-iql": "genworld.algos.agnostic_iql:build",
    "focal": "genworld.algos.focal:build",
}
"""Name → ``module:function`` of its builder."""


# Named variants (the paper's Table 2 ablations) and parametrised ones ("tgw-beta=0.5"):
# a variant is an algorithm plus config overrides, so ``genworld table`` runs them like any cell.
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "tgw-no-prompt": ("tgw", {"world_model": {"tgw": {"use_prompt": False}}}),
    "tgw-no-rssm": ("tgw", {"world_model": {"tgw": {"use_stochastic": False}}}),
    "tgw-no-ri": ("tgw", {"mbpo": {"beta": 0.0}}),
    # one SAC over all envs instead of one per env (MBPOConfig.policy's default)
    "tgw-shared": ("tgw", {"mbpo": {"policy": "shared"}}),
    # model rollouts not clipped to the data's observation range (MBPOConfig.obs_bounds)
    "tgw-no-bounds": ("tgw", {"mbpo": {"obs_bounds": "none"}}),
    # the unseen-task study's variants (seed 000 §6.2)
    "tgw-finetune": ("tgw", {"reward_finetune_steps": 300}),
    "tgw-newr": ("tgw", {"reward": "task"}),
    # CMT without its improvement stage (seed 001, Table 1 "CMT w/o PT")
    "cmt-no-pt": ("cmt", {"prompt_tuning": False}),
    # CMT's prompt from the window A_g reconstructs (§4.1's trajectory-level auto-encoder)
    "cmt-ae": ("cmt", {"prompt_source": "trajectory"}),
    "cmt-ae-no-pt": ("cmt", {"prompt_source": "trajectory", "prompt_tuning": False}),
    # MrCoM's DreamerV3 baseline: the RSSM filtering MrCoM's context first (seed 002 §5.1)
    "rssm-context": ("rssm", {"context": True}),
}


def _weight_overrides(algo: str, weight: str, value: float) -> dict[str, Any] | None:
    """The overrides of ``<algo>-<weight>=<value>``, None where ``algo`` has no such weight."""
    if weight == "beta":  # CMT's β weighs its behaviour constraint (seed 001 eq. 4)
        return {"behaviour_weight": value} if algo == "cmt" else {"mbpo": {"beta": value}}
    if weight == "gamma" and algo == "cmt":  # γ of L = L1 + γ·L2 (seed 001 §4.1)
        return {"contrastive_weight": value}
    return None


def resolve_variant(name: str) -> tuple[str, dict[str, Any]]:
    """``name`` → (registered algorithm, overrides): an algorithm, a named variant, or a
    weight: ``<algo>-beta=<float>`` (the β of TGW's eq. 6, the λ of MOPO's penalty, CMT's
    behaviour-constraint weight) or ``cmt-gamma=<float>`` (CMT's contrastive weight)."""
    algos = registered_algos()
    if name in algos:
        return name, {}
    if name in VARIANTS:
        return VARIANTS[name]
    match = re.fullmatch(r"(?P<algo>.+)-(?P<weight>beta|gamma)=(?P<value>.+)", name)
    if match and match["algo"] in ALGOS:
        try:
            value = float(match["value"])
        except ValueError:
            value = -1.0
        overrides = _weight_overrides(match["algo"], match["weight"], value)
        if overrides is not None and value >= 0:
            return match["algo"], overrides
    raise GenworldError(
        f"unknown algorithm {name!r}: choose from {', '.join([*algos, *VARIANTS])}, "
        "<algo>-beta=<value ≥ 0> or cmt-gamma=<value ≥ 0>"
    )


PLUGIN_GROUP = "genworld.algos"
"""Entry-point group of algorithms that installed packages add (``name = "module:function"``)."""
PLUGIN_VAR = "GENWORLD_ALGOS"
"""Environment variable of algorithms added by hand: ``name=module:function``, comma-separated."""
PLUGIN_NAME = re.compile(r"[a-z0-9][a-z0-9_.+-]*")
"""What a plugin's name may be: lower case, no ``=`` or ``,`` (it is a table column and a folder
name, and ``--algos`` is comma-separated)."""
PLUGIN_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_]\w*")


@functools.cache
def _entry_point_algos() -> tuple[tuple[str, str], ...]:
    """The installed packages' algorithms, read once per process."""
    return tuple((ep.name, ep.value) for ep in importlib.metadata.entry_points(group=PLUGIN_GROUP))


def plugin_algos() -> dict[str, tuple[str, str]]:
    """Algorithms registered outside genworld: name → (``module:function``, where it came
    from), the entry points first, then ``GENWORLD_ALGOS``. A name taken by a built-in
    algorithm or variant, or one that is not a plain lower-case name, is refused in one line."""
    entry_point = f"entry point of group {PLUGIN_GROUP}"
    found = {name: (target, entry_point) for name, target in _entry_point_algos()}
    for item in os.environ.get(PLUGIN_VAR, "").split(","):
        if item.strip():
            name, _, target = (part.strip() for part in item.partition("="))
            found[name] = (target, PLUGIN_VAR)
    for name, (target, source) in found.items():
        if not PLUGIN_NAME.fullmatch(name) or not PLUGIN_TARGET.fullmatch(target):
            raise GenworldError(
                f"{source}: {name}={target} is not a plugin algorithm; write "
                "name=module:function with a lower-case name (letters, digits, . _ + -)"
            )
        if name in ALGOS or name in VARIANTS:
            raise GenworldError(
                f"{source}: the algorithm {name!r} ({target}) has the name of genworld's own "
                f"{name!r}: register it under another name"
            )
    return found


def registered_algos() -> dict[str, str]:
    """Every algorithm name → ``module:function`` of its builder: genworld's and the plugins'."""
    return ALGOS | {name: target for name, (target, _) in plugin_algos().items()}


def register(name: str, target: str) -> None:
    """Register algorithm ``name`` built by ``target`` (``module:function``) for this process and
    the processes it starts, through ``GENWORLD_ALGOS``; the builder is imported first, so a
    wrong target fails here, in one line. Registering a name again replaces its target."""
    previous = os.environ.get(PLUGIN_VAR)
    items = (previous or "").split(",")
    entries = [i for i in items if i.strip() and i.partition("=")[0].strip() != name]
    os.environ[PLUGIN_VAR] = ",".join([*entries, f"{name}={target}"])
    try:
        get_builder(name)
    except GenworldError:
        if previous is None:
            del os.environ[PLUGIN_VAR]
        else:
            os.environ[PLUGIN_VAR] = previous
        raise


def algorithm_rows() -> list[dict[str, str]]:
    """Every name ``--algos`` takes: genworld's algorithms, the plugins (with where each was
    registered) and the named variants, each with what builds it."""
    rows = [{"name": n, "builder": t, "source": "genworld"} for n, t in ALGOS.items()]
    for name, (target, source) in plugin_algos().items():
        rows.append({"name": name, "builder": target, "source": source})
    for name, (algo, overrides) in VARIANTS.items():
        rows.append({"name": name, "builder": f"{algo} with {overrides}", "source": "variant"})
    return rows


def plugin_stamp(name: str) -> dict[str, str] | None:
    """Where algorithm or variant ``name`` comes from when it is a plugin (None for genworld's
    own, which the commit covers): its builder, how it was registered, and the file and SHA-256
    of the module that defines it, so a result names the code genworld's commit does not."""
    plugins = plugin_algos()
    algo = resolve_variant(name)[0]
    if algo not in plugins:
        return None
    target, source = plugins[algo]
    module = importlib.import_module(target.partition(":")[0])
    path = Path(module.__file__ or "")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path.is_file() else None
    return {"builder": target, "registered_by": source, "file": str(path), "sha256": digest}


def get_builder(name: str) -> Callable[[AlgoContext], OfflineAgent]:
    algos = registered_algos()
    if name not in algos:
        raise GenworldError(f"unknown algorithm {name!r}: choose from {', '.join(algos)}")
    module, function = algos[name].split(":")
    try:
        return getattr(importlib.import_module(module), function)
    except (ImportError, AttributeError) as exc:
        raise GenworldError(f"algorithm {name!r} is registered but not available: {exc}") from exc


def available_algos() -> list[str]:
    """Registered algorithms whose module imports (the contract test runs over these)."""
    names = []
    for name in registered_algos():
        try:
            get_builder(name)
        except GenworldError:
            continue
        names.append(name)
    return names


def build_agent(name: str, ctx: AlgoContext) -> OfflineAgent:
    return get_builder(name)(ctx)


def resolve_config(cls, presets: dict[str, dict[str, Any]], ctx: AlgoContext, skip=()):
    """``cls()`` with the scale preset, then ``ctx.overrides`` (nested dicts for nested config
    dataclasses); unknown fields are named. Keys in ``skip`` are left to the caller."""
    overrides = {k: v for k, v in ctx.overrides.items() if k not in skip}
    return resolve(cls, presets.get(ctx.scale, {}), overrides)


def schedule_length(configured: int, updates: int | None, field_name: str) -> int:
    """The length of a schedule that spans the run: ``configured`` when set (> 0), else the
    run's ``updates``; a one-line error when neither is known."""
    if configured > 0:
        return configured
    if updates is None or updates < 1:
        raise GenworldError(
            f"{field_name} is 0 (the run's updates) but the run's update count is not known: "
            f"set {field_name} to the schedule's length in updates"
        )
    return updates


def check_schedule_length(state: dict[str, Any], length: int, field_name: str) -> None:
    """Refuse a checkpoint whose schedule spans another length than this run's: resuming it
    would bend the schedule mid-run."""
    saved = state.get(field_name)
    if saved is not None and int(saved) != length:
        raise GenworldError(
            f"the checkpoint's {field_name} is {int(saved):,} updates and this run's {length:,}: "
            f"resume with the run's own --steps (or {field_name}), or start a new --out"
        )


def agent_state(
    modules: dict[str, Any], tensors: dict[str, torch.Tensor] | None = None, **values: Any
) -> dict[str, Any]:
    """An agent's checkpoint: each module's and optimiser's ``state_dict``, detached copies of
    its loose tensors (log-alphas, scales) and plain values (update counts)."""
    state = {name: m.state_dict() for name, m in modules.items()}
    state.update({name: t.detach().clone() for name, t in (tensors or {}).items()})
    return {**state, **values}


def load_agent_state(
    modules: dict[str, Any], tensors: dict[str, torch.Tensor] | None, state: dict[str, Any]
) -> None:
    """The inverse of :func:`agent_state` for the modules and tensors (values: the caller's)."""
    for name, m in modules.items():
        m.load_state_dict(state[name])
    with torch.no_grad():
        for name, t in (tensors or {}).items():
            t.copy_(state[name])
