"""Train a world model (TGW, MrCoM, the RSSM or the reference MLP ensemble) on datasets; resumable.

``genworld train world-model --model tgw --datasets a,b,c --scale mini --out DIR``. The run folder
holds ``config.json``, ``metrics.jsonl``, TensorBoard events (``tb/``), ``checkpoints/`` (full
state: model, optimiser, step, generator) and, at the end, ``model/`` (the final checkpoint). Held
out: a seeded ``holdout_fraction`` of each env's episodes, never trained on.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.config import apply, check_scale, from_dict, merge
from genworld.data.build import ensure_built
from genworld.data.ids import parse_dataset_id
from genworld.data.minari_io import read_episodes
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.eval.wm_metrics import COPY, k_step_errors
from genworld.train.checkpoint import latest_checkpoint, load_checkpoint
from genworld.train.loop import Hook, OneProcess, run_loop
from genworld.utils.device import (
    fused_optimizer,
    load_optimizer_state,
    resolve_device,
    torch_threads,
)
from genworld.utils.io import (
    atomic_write_json,
    check_or_write_config,
    claim_folder,
    read_run_config,
    run_kind,
)
from genworld.utils.provenance import provenance
from genworld.world_models.cadm import CaDMConfig, CaDMWorldModel
from genworld.world_models.ensemble_mlp import EnsembleMLPConfig, EnsembleMLPWorldModel
from genworld.world_models.mrcom import MrCoMConfig, MrCoMWorldModel
from genworld.world_models.rssm import RSSMConfig, RSSMWorldModel
from genworld.world_models.tgw import TGWConfig, TGWWorldModel

MODELS = ("tgw", "mlp", "mrcom", "rssm", "cadm")


@dataclass(frozen=True)
class WorldModelTrainConfig:
    model: str = "tgw"
    """tgw (the method), mlp (per-env probabilistic MLP ensemble, the MOPO reference), mrcom
    (the meta-regularised contextual world model of seed 002), rssm (DreamerV3's RSSM, WPT's
    generalist world model of seed 004) or cadm (the context-aware dynamics model, a MrCoM
    baseline)."""
    datasets: tuple[str, ...] = ("halfcheetah-medium", "hopper-medium", "walker2d-medium")
    """Dataset ids; one id = single-env training."""
    steps: int = 3_000
    """Gradient steps."""
    batch_size: int = 32
    """Sequences (tgw, mrcom, rssm) or transitions (mlp) per step."""
    lr: float = 1e-4
    """AdamW learning rate."""
    grad_clip: float = 1.0
    """Gradient-norm clip per step."""
    holdout_fraction: float = 0.1
    """Share of each env's episodes held out for evaluation (at least one episode)."""
    log_every: int = 50
    """Steps between metrics.jsonl / TensorBoard records."""
    checkpoint_every: int = 500
    """Steps between checkpoints."""
    seed: int = 0
    """Seeds the model's initialisation, the held-out split and batch sampling."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 2
    """torch CPU threads while it trains."""
    dataset_steps: int = 0
    """Transitions per dataset built when one is missing (an existing one is used as it is);
    0 = the dataset's default size (1M)."""
    tgw: TGWConfig = field(default_factory=TGWConfig)
    """The TGW model (``model`` = tgw)."""
    mlp: EnsembleMLPConfig = field(default_factory=EnsembleMLPConfig)
    """The MLP ensemble (``model`` = mlp)."""
    mrcom: MrCoMConfig = field(default_factory=MrCoMConfig)
    """The MrCoM model (``model`` = mrcom)."""
    rssm: RSSMConfig = field(default_factory=RSSMConfig)
    """The RSSM (``model`` = rssm)."""
    cadm: CaDMConfig = field(default_factory=CaDMConfig)
    """CaDM (``model`` = cadm)."""

    def validate(self) -> None:
        if not self.datasets:
            raise GenworldError("--datasets is empty: give at least one dataset id")
        for ds in self.datasets:
            parse_dataset_id(ds)
        if len({parse_dataset_id(d).env for d in self.datasets}) != len(self.datasets):
            raise GenworldError("--datasets names one env twice; give one dataset per env")
        self.validate_training()

    def validate_training(self) -> None:
        """Everything but the dataset ids (``fit_world_model`` gets its data directly)."""
        if self.model not in MODELS:
            raise GenworldError(
                f"--model {self.model!r} is unknown: choose one of {', '.join(MODELS)}"
            )
        for name in ("steps", "batch_size", "log_every", "checkpoint_every"):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")
        if not 0 < self.holdout_fraction < 1:
            raise GenworldError(f"holdout_fraction must be in (0, 1), got {self.holdout_fraction}")
        self.tgw.validate()
        self.mlp.validate()
        self.mrcom.validate()
        self.rssm.validate()
        self.cadm.validate()


SCALES: dict[str, dict[str, Any]] = {
    "tiny": {
        "steps": 30,
        "batch_size": 8,
        "dataset_steps": 3_000,
        "log_every": 10,
        "checkpoint_every": 15,
        "tgw": {
            "ensemble_size": 2,
            "context_len": 4,
            "d_model": 16,
            "n_heads": 2,
            "stoch_dim": 8,
            "hidden": 32,
        },
        "mlp": {"members": 3, "elites": 2, "hidden": 32, "layers": 2},
    },
    # lr 5e-4 at mini: at 3k steps it reaches a much lower one-step error than 1e-4 (measured:
    # docs/notes/history.md)
    "mini": {
        "steps": 3_000,
        "batch_size": 32,
        "lr": 5e-4,
        "dataset_steps": 100_000,
        "log_every": 50,
        "checkpoint_every": 500,
    },
    "full": {"steps": 200_000, "batch_size": 32, "log_every": 500, "checkpoint_every": 5_000},
}
MODEL_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "tgw": {
        "tiny": {},
        # a smaller TGW than the paper's, so that `genworld run --scale mini` fits 15 CPU minutes
        "mini": {
            "steps": 1_500,
            "tgw": {
                "ensemble_size": 5,
                "context_len": 10,
                "d_model": 64,
                "n_heads": 2,
                "stoch_dim": 64,
                "hidden": 128,
            },
        },
        "full": {},
    },
    # a MrCoM small enough for 2 CPU cores below the full scale (App. D's sizes at full)
    "mrcom": {
        "tiny": {
            "mrcom": {
                "context_len": 4,
                "d_model": 24,
                "n_heads": 3,
                "stoch_dim": 8,
                "aux_dim": 8,
                "hidden": 32,
                "meta_value_warmup": 10,
            }
        },
        "mini": {
            "steps": 1_500,
            "mrcom": {
                "context_len": 10,
                "d_model": 48,
                "n_heads": 3,
                "stoch_dim": 32,
                "aux_dim": 32,
                "hidden": 128,
            },
        },
        "full": {},
    },
    # an RSSM that runs on 2 CPU cores below the full scale; full: WPT App. E (batch 16,
    # sequences of 64, Adam lr 1e-4, gradient clip 100) on DreamerV3's small model
    "rssm": {
        "tiny": {
            "lr": 1e-3,
            "rssm": {"deter_dim": 32, "stoch_dim": 8, "hidden": 32, "seq_len": 8, "burn_in": 3},
        },
        "mini": {
            "steps": 1_500,
            "batch_size": 16,
            "lr": 3e-4,
            "rssm": {"deter_dim": 128, "stoch_dim": 16, "hidden": 128, "seq_len": 32},
        },
        "full": {"batch_size": 16, "lr": 1e-4, "grad_clip": 100.0},
    },
    # MOPO's ensemble trains on transitions: larger batches and MBPO's learning rate
    "mlp": {
        "tiny": {"lr": 1e-3},
        "mini": {"batch_size": 256, "lr": 1e-3},
        "full": {"batch_size": 256, "lr": 1e-3},
    },
    # CaDM's windows are short (history + 1 steps): more of them per step, at MBPO's rate
    "cadm": {
        "tiny": {"lr": 1e-3, "cadm": {"history": 3, "hidden": 32, "layers": 2}},
        "mini": {"steps": 1_500, "batch_size": 64, "lr": 1e-3, "cadm": {"hidden": 128}},
        "full": {"batch_size": 128, "lr": 1e-3},
    },
}
"""Per model, on top of ``SCALES``: every world model of a scale (``genworld run``, ``table``,
``unseen`` and ``train world-model``) starts from the same preset."""


def world_model_steps(scale: str, model: str = "tgw") -> int:
    """Training steps of ``model``'s preset at ``scale``."""
    return config_for_scale(scale, check_ids=False, model=model).steps


def config_for_scale(
    scale: str, *, check_ids: bool = True, **overrides: Any
) -> WorldModelTrainConfig:
    """``SCALES[scale]``, then the model's ``MODEL_PRESETS``, then ``overrides`` (None = keep;
    nested dicts merge into the preset's)."""
    check_scale(scale)
    model = overrides.get("model") or "tgw"
    if model not in MODELS:
        raise GenworldError(f"--model {model!r} is unknown: choose one of {', '.join(MODELS)}")
    top = {k: v for k, v in overrides.items() if v is not None}
    cfg = apply(
        WorldModelTrainConfig(), merge(merge(SCALES[scale], MODEL_PRESETS[model][scale]), top)
    )
    if check_ids:
        cfg.validate()
    else:
        cfg.validate_training()
    return cfg


def load_split(
    datasets: tuple[str, ...], holdout_fraction: float, seed: int
) -> tuple[MultiEnvDataset, MultiEnvDataset]:
    """Train / held-out MultiEnvDatasets, split by whole episodes with a seeded permutation."""
    train, held = [], []
    for text in datasets:
        dataset = parse_dataset_id(text)
        spec = dataset.spec
        episodes = read_episodes(str(dataset), obs_dim=spec.obs_dim, act_dim=spec.act_dim)
        if len(episodes) < 2:
            raise GenworldError(
                f"{dataset}: needs at least 2 episodes to hold one out (has {len(episodes)})"
            )
        order = np.random.default_rng(seed).permutation(len(episodes))
        n_held = max(1, int(round(holdout_fraction * len(episodes))))
        held.append((spec, [episodes[i] for i in sorted(order[:n_held])]))
        train.append((spec, [episodes[i] for i in sorted(order[n_held:])]))
    return MultiEnvDataset(train), MultiEnvDataset(held)


def build_model(cfg: WorldModelTrainConfig, specs, normalizer: Normalizer) -> torch.nn.Module:
    if cfg.model == "tgw":
        return TGWWorldModel(specs, cfg.tgw, normalizer)
    if cfg.model == "mrcom":
        return MrCoMWorldModel(specs, cfg.mrcom, normalizer)
    if cfg.model == "rssm":
        return RSSMWorldModel(specs, cfg.rssm, normalizer)
    if cfg.model == "cadm":
        return CaDMWorldModel(specs, cfg.cadm, normalizer)
    return EnsembleMLPWorldModel(specs, cfg.mlp, normalizer)


LEGACY_FIELDS = ("tgw.beta", "mlp.penalty")
"""Fields of runs saved before the uncertainty penalty's weight moved to the agent
(``MBPOConfig.beta``): ignored when such a run is loaded or resumed."""


def config_from_json(data: dict) -> WorldModelTrainConfig:
    return from_dict(WorldModelTrainConfig, data, dropped=LEGACY_FIELDS)


def train_world_model(cfg: WorldModelTrainConfig, out: Path, *, show_progress: bool = True) -> Path:
    """Train on ``cfg.datasets`` minus the held-out episodes; resumable from ``out``."""
    cfg.validate()
    resolve_device(cfg.device)  # before data is built or anything written
    with claim_folder(out, WORLD_MODEL_RUN), torch_threads(cfg.threads):
        ensure_built(cfg.datasets, steps=cfg.dataset_steps or None, show_progress=show_progress)
        train, _ = load_split(cfg.datasets, cfg.holdout_fraction, cfg.seed)
        fit_world_model(cfg, train, out, show_progress=show_progress)
        atomic_write_json(out / "provenance.json", provenance())  # the code it was launched with
    return out


WEIGHT_DECAY = {"mlp": 0.0, "mrcom": 1e-4, "rssm": 1e-6}
"""AdamW weight decay per model (others 1e-5); MrCoM: App. D's "learning rate decay weight";
RSSM: WPT App. E."""


class WorldModelTrainer:
    """World-model fitting as a loop trainer: a step samples a batch with the run's generator,
    takes the model's loss (eq. 8 for TGW), clips the gradient norm and steps AdamW.
    ``forward`` and ``shard`` let DDP wrap the loss and keep each process's rows."""

    def __init__(
        self,
        cfg: WorldModelTrainConfig,
        model: torch.nn.Module,
        train: MultiEnvDataset,
        device: torch.device,
        *,
        forward=None,
        shard=None,
    ):
        self.cfg, self.model, self.device = cfg, model, device
        self.train, self.held_out = train, None
        if cfg.model == "mlp":  # the ensemble's elites are chosen on transitions it never fits
            self.train, self.held_out = model.split_holdout(train, cfg.seed + 1)
        self.forward = forward or model.loss
        self.shard = shard or (lambda batch: batch.to(device))
        self.optimizer = torch.optim.AdamW(
            model.parameters(),
            lr=cfg.lr,
            weight_decay=WEIGHT_DECAY.get(cfg.model, 1e-5),
            fused=fused_optimizer(device),
        )

    def step(self, generator: torch.Generator) -> dict[str, Any]:
        batch = self.model.sample_batch(self.train, self.cfg.batch_size, generator)
        loss, metrics = self.forward(self.shard(batch), generator)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.cfg.grad_clip)
        self.optimizer.step()
        return {"wm/loss": loss.detach(), **metrics}

    def select_elites(self) -> None:
        """The MLP ensemble's elites on its held-out transitions (the same on every process)."""
        if self.held_out is not None:
            self.model.select_elites(self.held_out)

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.model.load_state_dict(state["model"])
        load_optimizer_state(self.optimizer, state["optimizer"], self.device)


def fit_world_model(
    cfg: WorldModelTrainConfig,
    train: MultiEnvDataset,
    out: Path,
    *,
    show_progress: bool = True,
    processes=None,
    trainer: WorldModelTrainer | None = None,
) -> torch.nn.Module:
    """Fit on a given dataset (``cfg.datasets`` is not read), resumable from ``out``: metrics to
    ``metrics.jsonl`` and TensorBoard every ``log_every`` steps, a checkpoint (model, optimizer,
    generator) every ``checkpoint_every``. Returns the trained model in eval mode. Under DDP,
    ``processes`` and a ``trainer`` with a wrapped forward come from
    :func:`genworld.train.distributed.fit_world_model_ddp`."""
    cfg.validate_training()
    procs = processes if processes is not None else OneProcess()
    if procs.is_main:
        check_or_write_config(out, cfg, removed=LEGACY_FIELDS)
    procs.barrier()
    if trainer is None:
        device = resolve_device(cfg.device)
        torch.manual_seed(cfg.seed)
        model = build_model(cfg, train.specs, Normalizer.fit(train)).to(device)
        trainer = WorldModelTrainer(cfg, model, train, device)
    world = procs.world_size

    def log(step: int, metrics: dict) -> dict:
        record = procs.reduce(metrics)
        return record if world == 1 else {**record, "processes": world}

    hook = Hook(cfg.log_every, log, log="metrics.jsonl", rate="time/steps_per_s")
    run_loop(
        f"world model {cfg.model}" + (" (DDP)" if world > 1 else ""),
        trainer,
        out,
        steps=cfg.steps,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        hooks=(hook,),
        before_checkpoint=trainer.select_elites,
        show_progress=show_progress,
        processes=procs,
    )
    return trainer.model.eval()


def _load_model_state(model: torch.nn.Module, state: dict, where: Path) -> None:
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise GenworldError(
            f"checkpoint in {where} does not fit this model config ({str(err).splitlines()[0]}); "
            "use the config it was trained with, or retrain into another --out (TGW models "
            "with one decoder shared by the members do not load)"
        ) from None


def world_model_run_config(run: Path) -> dict[str, Any]:
    """The config.json of a ``genworld train world-model`` folder; another folder is a
    one-line error that names the world-model folders inside it (a ``genworld run``'s)."""
    inside = [
        str(path.parent)
        for pattern in ("*/config.json", "*/*/config.json", "*/*/*/config.json")
        for path in sorted(Path(run).glob(pattern))
        if run_kind(_json_or_empty(path)) == WORLD_MODEL_RUN
    ]
    fix = (
        f"give one of its world-model folders: {', '.join(inside[:3])}"
        + (f" (and {len(inside) - 3} more)" if len(inside) > 3 else "")
        if inside
        else "give the output folder of `genworld train world-model`"
    )
    return read_run_config(run, WORLD_MODEL_RUN, fix)


WORLD_MODEL_RUN = "genworld train world-model"


def _json_or_empty(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def load_trained(
    run: Path,
) -> tuple[WorldModelTrainConfig, torch.nn.Module, MultiEnvDataset, MultiEnvDataset]:
    """Rebuild a finished (or interrupted) run's model from its last checkpoint, with its data split."""
    cfg = config_from_json(world_model_run_config(run))
    train, held = load_split(cfg.datasets, cfg.holdout_fraction, cfg.seed)
    model = build_model(cfg, train.specs, Normalizer(train.num_envs, train.obs_max))
    latest = latest_checkpoint(run / "checkpoints")
    if latest is None:
        raise GenworldError(f"{run} has no checkpoint yet; train it first")
    _, state = load_checkpoint(latest)
    _load_model_state(model, state["model"], run)
    model.eval()
    return cfg, model, train, held


MAX_EPISODES_PER_ENV = 100_000
"""More start states per env than this is a typo, not an evaluation."""


def evaluation_folder(runs: list[Path], *, off_data: str | None, per_env: int) -> Path:
    """Where one evaluation of ``runs`` writes: ``<first run>/eval/<label>``, a folder per
    evaluation (the runs compared, the off-data quality, the start states), so that a later
    evaluation never overwrites an earlier one of other runs; the same evaluation rerun writes
    into its own folder again. ``per_env`` out of range is a one-line error."""
    import hashlib
    import re

    if not 0 < per_env <= MAX_EPISODES_PER_ENV:
        raise GenworldError(
            f"--episodes-per-env must be between 1 and {MAX_EPISODES_PER_ENV:,}; got {per_env}"
        )
    for run in runs:
        world_model_run_config(run)  # each a world-model folder, before anything is written
    others = [re.sub(r"[^A-Za-z0-9_.-]+", "_", run.name) for run in runs[1:]]
    label = "vs-" + "+".join(others) if others else "alone"
    label += f"__off-{off_data}" if off_data else ""
    label += f"__{per_env}-per-env"
    if others:  # two compared folders may share a name (every run's world_model)
        key = "\n".join(str(run.resolve()) for run in runs[1:])
        label += "__" + hashlib.sha256(key.encode()).hexdigest()[:8]
    return runs[0] / "eval" / label[:120]


def evaluate_runs(runs: list[Path], per_env: int = 256, seed: int = 0) -> dict[str, Any]:
    """Errors of each run's model on its own held-out episodes, plus the mean and the copy
    predictors (:mod:`genworld.eval.wm_metrics`).

    Runs on the same env datasets with the same seed hold out the same episodes per env
    (``load_split`` permutes each env's episodes with the run seed), so rows compare like with like.
    """
    named: dict[str, dict[str, dict[str, float]]] = {"mean-predictor": {}, "copy-predictor": {}}
    for run in runs:
        cfg, model, _, held = load_trained(run)
        for name, baseline in (("mean-predictor", None), ("copy-predictor", COPY)):
            for env, errors in k_step_errors(
                baseline, held, model.normalizer, per_env=per_env, seed=seed
            ).items():
                named[name].setdefault(env, errors)
        named[f"{cfg.model}:{run.name}"] = k_step_errors(
            model, held, model.normalizer, per_env=per_env, seed=seed
        )
    return named


def stochastic_state_sensitivity(runs: list[Path], per_env: int = 256, seed: int = 0) -> dict:
    """Each run's ``resample_sensitivity`` on its own held-out episodes (runs whose model has
    no stochastic state are left out)."""
    from genworld.eval.wm_metrics import resample_sensitivity

    result = {}
    for run in runs:
        cfg, model, _, held = load_trained(run)
        sensitivity = resample_sensitivity(model, held, per_env=per_env, seed=seed)
        if sensitivity is not None:
            result[f"{cfg.model}:{run.name}"] = sensitivity
    return result


def calibrate_penalty(run: Path, quality: str, per_env: int) -> dict[str, Any]:
    """Does the run's uncertainty penalty see its one-step error, on its held-out episodes and
    on the same envs' ``quality`` data (built if missing, as large as the model's data)?"""
    from genworld.eval.wm_metrics import penalty_calibration

    _, model, train, held = load_trained(run)
    ids = [str(parse_dataset_id(f"{spec.name}-{quality}")) for spec in held.specs]
    for dataset_id, a, b in zip(ids, train.envs, held.envs, strict=True):
        ensure_built([dataset_id], steps=len(a) + len(b), show_progress=True)  # the model's size
    return {
        "held-out": penalty_calibration(model, held, model.normalizer, per_env),
        quality: penalty_calibration(
            model, MultiEnvDataset.from_minari(ids), model.normalizer, per_env
        ),
    }
