"""WPT's fine-tuning run (seed 004, §3.3–3.4, Alg. 1): ``genworld finetune --world-model DIR
--task dmc-cheetah-run --variant p+er+g --scale tiny|mini|full --out DIR2``.

What the run does, once (rebuilt the same way on a resume):

1. load the pre-trained RSSM of ``DIR`` (``genworld pretrain world-model``) and its training
   split of the pre-training data;
2. with rehearsal or guidance: retrieve (eq. 5, :mod:`genworld.data.retrieval`) the
   trajectories of the target's action size whose first observation is nearest, in the
   pre-trained encoder's feature space, to the target's first observations (reset seeds
   ``0 … query_observations − 1``);
3. build the fine-tuned model: the pre-trained one moved to the target (env 0) and the envs of
   the retrieved trajectories (:meth:`~genworld.world_models.rssm.RSSMWorldModel.transferred`,
   a fresh reward head), or (``scratch``) the same architecture freshly initialised. Every
   variant normalises observations with the pre-trained model's statistics of the same env or
   body (rewards stay raw);
4. train the BC prior on the retrieved trajectories (guidance only), then run the loop
   (:func:`genworld.train.loop.run_loop`): a step is one episode of
   :class:`~genworld.algos.wpt.WPTAgent` (collect, then update), checkpointed and resumable,
   evaluated every ``eval_every`` environment steps into ``eval.jsonl``.

The report (report.md / report.json / curve.png) is written by :mod:`genworld.reports.finetune`
from what :func:`finetune` returns.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.algos.wpt import PRESETS, Rehearsal, WPTAgent, WPTConfig, updates_per_episode
from genworld.algos.wpt import variant as wpt_variant
from genworld.config import apply, check_scale, check_seed, merge
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.retrieval import Segments, retrieve, retrieved_dataset
from genworld.envs.registry import get_env_spec, make_env
from genworld.errors import GenworldError
from genworld.eval.rollout import evaluate_agent_outcomes
from genworld.train.cells import cell_seconds
from genworld.train.loop import Hook, eval_record, read_eval, run_loop
from genworld.train.world_model import load_trained, world_model_run_config
from genworld.types import EnvSpec
from genworld.utils.device import resolve_device, torch_threads
from genworld.utils.io import check_or_write_config, claim_folder
from genworld.utils.provenance import provenance
from genworld.world_models.rssm import RSSMWorldModel, encoder_group

FINETUNE_RUN = "genworld finetune"
EVAL_SEED = 1_000_003
"""Evaluation episode ``i`` of seed ``s`` resets with ``EVAL_SEED + 1000 s + i`` (the same
episodes at every evaluation of a run, none of them a training or query episode)."""


@dataclass(frozen=True)
class FinetuneConfig:
    """A fine-tuning run: which pre-trained model, target task and variant, and the agent."""

    world_model: str = ""
    """The pre-trained world model's folder (the --out of `genworld pretrain world-model`)."""
    task: str = "dmc-cheetah-run"
    """The target task: a DMC (dmc-…) or Meta-World (mw-…) env; its actions must fit the
    pre-trained model's padded width."""
    variant: str = "p+er+g"
    """p (pre-trained model), p+er (+ experience rehearsal), p+er+g (+ execution guidance: WPT)
    or scratch (the same RSSM untrained: DreamerV3)."""
    scale: str = "mini"
    """The preset the budgets came from (tiny, mini, full; --scale), recorded in the report."""
    seed: int = 0
    """Seeds the agent's initialisation, the training episodes, sampling and the evaluation."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """torch CPU threads while it trains (1: acting is one observation at a time and the
    imagination's matrices are small; a second thread slowed a tiny run ~10x on a busy 2-core
    CPU)."""
    wpt: WPTConfig = field(default_factory=WPTConfig)
    """The agent: budget, rehearsal, guidance, actor-critic and evaluation."""

    def validate(self) -> None:
        """Every field but ``world_model``'s presence (checked when the run starts, so that
        ``--help`` and ``--print-config`` need none)."""
        check_scale(self.scale)
        check_seed(self.seed)
        wpt_variant(self.variant)
        get_env_spec(self.task)
        if self.threads < 1:
            raise GenworldError(f"--threads must be ≥ 1, got {self.threads}")
        self.wpt.validate()


def config_for_scale(scale: str, **overrides: Any) -> FinetuneConfig:
    """``WPTConfig``'s preset at ``scale``, then ``overrides`` (None = keep; ``wpt`` nested)."""
    check_scale(scale)
    top = {k: v for k, v in overrides.items() if v is not None}
    cfg = apply(FinetuneConfig(), merge({"scale": scale, "wpt": PRESETS[scale]}, top))
    cfg.validate()
    return cfg


# ------------------------------------------------------------------ building the run
def query_observations(task: str, count: int) -> torch.Tensor:
    """The target's first observations after resets with seeds ``0 … count − 1`` ``(count, d)``
    (Alg. 1: "collect one initial observation from the environment")."""
    env = make_env(task)
    first = [env.reset(seed=i)[0] for i in range(count)]
    env.close()
    return torch.as_tensor(np.stack(first), dtype=torch.float32)


def source_env(spec: EnvSpec, pretrained: RSSMWorldModel) -> int | None:
    """The pre-trained env whose statistics and layers ``spec`` takes: the same env, else the
    first of the same body (:func:`encoder_group`), else None."""
    names = [s.name for s in pretrained.specs]
    if spec.name in names:
        return names.index(spec.name)
    share = pretrained.cfg.share_encoders
    group = encoder_group(spec, share)
    bodies = (k for k, s in enumerate(pretrained.specs) if encoder_group(s, share) == group)
    return next(bodies, None)


def task_normalizer(specs: list[EnvSpec], pretrained: RSSMWorldModel) -> Normalizer:
    """Observation statistics of each env from the pre-trained model's env of the same name or
    body (none: mean 0, std 1); rewards raw (mean 0, std 1: the reward head is new)."""
    norm = Normalizer(len(specs), max(s.obs_dim for s in specs))
    source = pretrained.normalizer
    for k, spec in enumerate(specs):
        src = source_env(spec, pretrained)
        if src is not None:
            d = spec.obs_dim
            norm.obs_mean[k, :d] = source.obs_mean[src, :d].cpu()
            norm.obs_std[k, :d] = source.obs_std[src, :d].cpu()
    return norm


def retrieval_summary(
    found: Segments, data: MultiEnvDataset, target: EnvSpec, share: str
) -> dict[str, Any]:
    """What eq. 5 returned: how many trajectories of which envs, the share of the target's own
    embodiment, the embodiments it chose among (the pre-training data's of the target's action
    size: with one, the share is 1 by construction) and the distances."""
    names = [data.specs[k].name for k in found.env_idx.tolist()]
    group = encoder_group(target, share)
    same = [encoder_group(data.specs[k], share) == group for k in found.env_idx.tolist()]
    bodies = {encoder_group(s, share) for s in data.specs if s.act_dim == target.act_dim}
    distance = found.distance if found.distance is not None else torch.zeros(len(found))
    return {
        "trajectories": len(found),
        "transitions": int(found.length.sum()),
        "per_env": {name: names.count(name) for name in dict.fromkeys(names)},
        "same_embodiment_share": float(np.mean(same)) if same else 0.0,
        "candidate_embodiments": sorted(bodies),
        "distance_min": float(distance.min()) if len(found) else None,
        "distance_max": float(distance.max()) if len(found) else None,
    }


def build_agent(
    cfg: FinetuneConfig, device: torch.device
) -> tuple[WPTAgent, dict[str, Any], dict[str, Any]]:
    """The agent of a run (steps 1–3 of the module docstring), the pre-training run's config
    and the retrieval's summary (None without retrieval)."""
    pre_cfg, pretrained, train, _ = load_trained(Path(cfg.world_model))
    if pre_cfg.model != "rssm":
        raise GenworldError(
            f"{cfg.world_model} holds a {pre_cfg.model} model: fine-tuning starts from the RSSM "
            "of `genworld pretrain world-model`"
        )
    spec, use = get_env_spec(cfg.task), wpt_variant(cfg.variant)
    if spec.act_dim > pretrained.act_max:
        raise GenworldError(
            f"{cfg.task} has {spec.act_dim}-dim actions, wider than the pre-trained model's "
            f"{pretrained.act_max}: pre-train with data of an embodiment at least that wide"
        )
    specs, rehearsal, summary = [spec], None, None
    if use.rehearsal or use.guidance:
        probe = pretrained.transferred([spec], task_normalizer([spec], pretrained))
        queries = query_observations(cfg.task, cfg.wpt.query_observations)
        keys = probe.features(queries, torch.zeros(len(queries), dtype=torch.int64))
        found = retrieve(train, pretrained.features, keys, spec.act_dim, cfg.wpt.retrieval)
        summary = retrieval_summary(found, train, spec, pretrained.cfg.share_encoders)
        data = retrieved_dataset(train, found)
        specs += [s for s in data.specs if s.name != spec.name]
        names = [s.name for s in specs]
        env_map = torch.tensor([names.index(s.name) for s in data.specs], dtype=torch.int64)
        rehearsal = Rehearsal(data, env_map)
    normalizer = task_normalizer(specs, pretrained)
    torch.manual_seed(cfg.seed)
    # ncrl: rewards train a pre-trained model's head only; DreamerV3 from scratch lets them
    # shape the latents too
    fine = {"reward_head": True, "reward_gradient": not use.pretrained}
    if use.pretrained:
        model = pretrained.transferred(specs, normalizer, **fine)
    else:
        rssm = replace(pretrained.cfg, **fine)
        model = RSSMWorldModel(specs, rssm, normalizer, act_width=pretrained.act_max)
    agent = WPTAgent(model, cfg.wpt, cfg.variant, device, rehearsal=rehearsal, seed=cfg.seed)
    return agent, asdict(pre_cfg), summary


class FinetuneTrainer:
    """One loop step = one episode: collect it, then (past warm-up) ``updates`` updates."""

    def __init__(self, agent: WPTAgent, updates: int, seed: int):
        self.agent, self.updates, self.seed = agent, updates, seed

    def begin(self, step: int) -> None:
        """A fresh run trains the BC prior first (a resumed one loads it)."""
        if step == 0:
            self.agent.train_bc(torch.Generator().manual_seed(self.seed + 1))

    def step(self, generator: torch.Generator) -> dict[str, Any]:
        agent = self.agent
        metrics: dict[str, Any] = agent.collect_episode(generator)
        if agent.env_steps >= agent.cfg.warmup_steps:
            sums: dict[str, torch.Tensor] = {}
            for _ in range(self.updates):
                for key, value in agent.update(generator).items():
                    sums[key] = sums.get(key, 0.0) + value.detach().float()
            metrics |= {key: value / self.updates for key, value in sums.items()}
        metrics["train/updates"] = float(agent.updates)
        return metrics

    def state_dict(self) -> dict[str, Any]:
        return {"agent": self.agent.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])


def finetune(cfg: FinetuneConfig, out: Path, *, show_progress: bool = True) -> dict[str, Any]:
    """Fine-tune (resumable from ``out``); returns the report's data: the protocol, the
    retrieval, the evaluation curve and the caveats."""
    cfg.validate()
    if not cfg.world_model:
        raise GenworldError(
            "--world-model is required: give the folder of `genworld pretrain world-model`"
        )
    world_model_run_config(Path(cfg.world_model))  # a pre-training folder, before any write
    device = resolve_device(cfg.device)
    out, started = Path(out), time.perf_counter()
    with claim_folder(out, FINETUNE_RUN), torch_threads(cfg.threads):
        agent, pre_cfg, retrieved = build_agent(cfg, device)
        check_or_write_config(out, cfg)
        spec = agent.spec
        episodes = math.ceil(cfg.wpt.env_steps / spec.max_episode_steps)
        updates = updates_per_episode(
            spec.max_episode_steps, cfg.wpt.train_ratio, cfg.wpt.batch_size, agent.model.cfg.seq_len
        )
        every = max(1, round(cfg.wpt.eval_every / spec.max_episode_steps))

        def evaluate(step: int, metrics: dict) -> dict:
            seed = EVAL_SEED + 1000 * cfg.seed
            outcomes = evaluate_agent_outcomes(agent, [spec], cfg.wpt.eval_episodes, seed, device)
            returns = {spec.name: outcomes[spec.name].returns}
            successes = {
                name: o.successes for name, o in outcomes.items() if o.successes is not None
            }
            record = eval_record([spec], returns, successes)
            return {
                "env_steps": agent.env_steps,
                **record,
                **{k: float(v) for k, v in metrics.items()},
            }

        hook = Hook(every, evaluate, log="eval.jsonl", rate="time/episodes_per_s")
        setup = time.perf_counter() - started  # this process's: the model and the retrieval
        run_loop(
            f"finetune {cfg.variant} {cfg.task}",
            FinetuneTrainer(agent, updates, cfg.seed),
            out,
            steps=episodes,
            seed=cfg.seed,
            checkpoint_every=every,
            hooks=(hook,),
            show_progress=show_progress,
            unit="episode",
        )
    protocol = {
        "episodes": episodes,
        "episode_steps": spec.max_episode_steps,
        "env_steps": agent.env_steps,
        "updates_per_episode": updates,
        "updates": agent.updates,
        "eval_every_episodes": every,
        "eval_seed": EVAL_SEED + 1000 * cfg.seed,
        "seq_len": agent.model.cfg.seq_len,
        "action_repeat": 1,
        "model_envs": [s.name for s in agent.model.specs],
    }
    return {
        "command": FINETUNE_RUN,
        "config": asdict(cfg),
        "pretraining": {"datasets": list(pre_cfg["datasets"]), "steps": pre_cfg["steps"]},
        "protocol": protocol,
        "retrieval": retrieved,
        "curve": (curve := read_eval(out)),
        # a hard (sparse) task's control steps that paid, over every online episode: 0 means
        # the learner never saw its sparse reward (None: not a sparse task)
        "sparse_hits": sum(hits)
        if (hits := [h for h in agent.sparse_hits if h is not None])
        else None,
        "caveats": caveats(cfg, retrieved),
        # every process that trained it (a resumed run's log carries the time before)
        "wall_seconds": cell_seconds(curve, setup),
        "provenance": provenance(),
    }


def caveats(cfg: FinetuneConfig, retrieved: dict[str, Any] | None) -> list[str]:
    """What a reader must know before comparing this run's numbers with the paper's."""
    notes = [
        "one seed: a learning curve, not a comparison; the paper reports 3 seeds with 95% CIs",
        "state observations, not pixels (the paper's 280M-parameter pixel model is not run)",
        "action repeat 1 (WPT App. E: 2): the pre-training data was recorded at 1",
        "every variant, scratch included, normalises observations with the pre-training "
        "data's statistics of the target's env or body",
    ]
    if cfg.scale != "full":
        notes.append(
            f"{cfg.scale} scale: {cfg.wpt.env_steps:,} environment steps and a small model, far "
            "below the paper's budget"
            + ("; a smoke test of the pipeline, not a result" if cfg.scale == "tiny" else "")
        )
    if retrieved is not None and retrieved["same_embodiment_share"] == 1.0:
        notes.append(
            "every retrieved trajectory is of the target's own embodiment: with state "
            "observations, retrieval here reduces to 'same embodiment'"
        )
    return notes


__all__ = [
    "EVAL_SEED",
    "FINETUNE_RUN",
    "FinetuneConfig",
    "FinetuneTrainer",
    "build_agent",
    "caveats",
    "config_for_scale",
    "finetune",
    "query_observations",
    "retrieval_summary",
    "source_env",
    "task_normalizer",
]
