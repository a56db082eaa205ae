"""Train a behaviour policy with online SAC; snapshots for medium / medium-replay; resumable.

``genworld data train-policy ENV --out DIR`` runs this. Every ``snapshot_every`` steps the actor
is saved and evaluated (stochastic actions, the way datasets are collected, and deterministic);
``export_policies`` (:mod:`genworld.train.policy_export`) then picks the *medium* policy (first
snapshot whose stochastic score is in the env's medium band, PROTOCOL.md) and the *expert* (best
stochastic score), and writes them with cards into the policy folder, together with the snapshot
sequence that medium-replay replays.

Resume: rerunning on the same ``--out`` loads the last checkpoint (weights, optimisers, replay
buffer, RNG states, step) and continues; the interrupted episode is restarted from a new reset
(MuJoCo state is not checkpointed), so a resumed run is faithful but not bit-identical.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from genworld.algos.disagreement import Disagreement, DisagreementConfig
from genworld.algos.sac import SAC, SACConfig
from genworld.config import apply, merge
from genworld.envs.registry import get_env_spec
from genworld.envs.vector import EnvPool
from genworld.errors import GenworldError
from genworld.eval.rollout import evaluate_policy
from genworld.policies import PolicyCard, TanhGaussianActor, save_policy
from genworld.train.loop import Hook, run_loop
from genworld.utils.device import resolve_device, torch_threads
from genworld.utils.io import check_or_write_config, claim_folder

SCALES = {"tiny": 3_000, "mini": 300_000, "full": 1_000_000}
INTRINSIC = ("none", "disagreement")


@dataclass(frozen=True)
class BehaviourConfig:
    env: str
    """Registered env name (halfcheetah, hopper, walker2d, ant)."""
    total_steps: int = 1_000_000
    """Environment steps (one SAC update per step after warm-up)."""
    seed: int = 0
    """Seeds the networks' initialisation, the replay sampling and the env resets."""
    learning_starts: int = 5_000
    """Uniform-random warm-up steps before learning (CleanRL)."""
    snapshot_every: int = 10_000
    """Actor snapshot + evaluation interval (steps)."""
    checkpoint_every: int = 25_000
    """Full resumable checkpoint interval (steps)."""
    eval_episodes: int = 5
    """Episodes per snapshot evaluation, run once stochastic and once deterministic."""
    device: str = "auto"
    """auto (CUDA when present), cpu or cuda."""
    threads: int = 1
    """torch threads; 1 is fastest for 256-wide MLPs on a 2-core CPU."""
    sac: SACConfig = field(default_factory=SACConfig)
    """Hyper-parameters of the SAC agent (:class:`genworld.algos.sac.SACConfig`)."""
    intrinsic: str = "none"
    """none: SAC maximises the task's reward; disagreement: an exploration agent, SAC on the
    ensemble-disagreement reward alone (:mod:`genworld.algos.disagreement`; the task's reward is
    still stored and evaluated, never learnt from)."""
    disagreement: DisagreementConfig = field(default_factory=DisagreementConfig)
    """The forward-model ensemble of ``intrinsic=disagreement``."""

    def validate(self) -> None:
        get_env_spec(self.env)
        if self.intrinsic not in INTRINSIC:
            raise GenworldError(
                f"intrinsic={self.intrinsic!r} is unknown: choose {' or '.join(INTRINSIC)}"
            )
        for name in (
            "total_steps",
            "snapshot_every",
            "checkpoint_every",
            "eval_episodes",
            "threads",
        ):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")
        if self.learning_starts >= self.total_steps:
            raise GenworldError(
                f"learning_starts ({self.learning_starts}) must be below total_steps ({self.total_steps})"
            )


def config_for_scale(env: str, scale: str = "full", **overrides: Any) -> BehaviourConfig:
    """A behaviour-policy run of ``SCALES[scale]`` env steps (``steps`` overrides it); the warm-up
    (a third of the run, at most 5k), snapshot (a tenth, at most 10k) and checkpoint (at most
    25k) cadence follow from the steps. Other ``overrides`` are config fields (None = keep)."""
    if scale not in SCALES:
        raise GenworldError(f"--scale {scale!r} is unknown: choose tiny, mini or full")
    steps = overrides.pop("steps", None)
    if steps is not None and not 0 < steps <= 100_000_000:
        raise GenworldError(
            f"--steps must be a positive number of env steps, at most 100,000,000; got {steps}"
        )
    steps = steps or SCALES[scale]
    derived = {
        "total_steps": steps,
        "learning_starts": min(5_000, steps // 3),
        "snapshot_every": min(10_000, max(steps // 10, 1)),
        "checkpoint_every": min(25_000, steps),
    }
    top = {k: v for k, v in overrides.items() if v is not None}
    cfg = apply(BehaviourConfig(env=env), merge(derived, top))
    cfg.validate()
    return cfg


class ReplayBuffer:
    """Preallocated flat arrays; uniform index sampling from a seeded numpy generator."""

    FIELDS = ("observations", "actions", "rewards", "next_observations", "terminations")

    def __init__(self, capacity: int, obs_dim: int, act_dim: int):
        self.capacity, self.size = capacity, 0
        self.data = {
            "observations": np.zeros((capacity, obs_dim), np.float32),
            "actions": np.zeros((capacity, act_dim), np.float32),
            "rewards": np.zeros(capacity, np.float32),
            "next_observations": np.zeros((capacity, obs_dim), np.float32),
            "terminations": np.zeros(capacity, np.float32),
        }

    def add(self, obs, act, rew, next_obs, terminal) -> None:
        i = self.size % self.capacity
        for name, value in zip(self.FIELDS, (obs, act, rew, next_obs, terminal), strict=True):
            self.data[name][i] = value
        self.size += 1

    def sample(self, rng: np.random.Generator, batch: int, device) -> list[torch.Tensor]:
        idx = rng.integers(0, min(self.size, self.capacity), size=batch)
        return [torch.as_tensor(self.data[name][idx], device=device) for name in self.FIELDS]

    def state(self) -> dict[str, Any]:
        n = min(self.size, self.capacity)
        return {"size": self.size, **{k: v[:n] for k, v in self.data.items()}}

    def load(self, state: dict[str, Any]) -> None:
        self.size = int(state["size"])
        n = min(self.size, self.capacity)
        for k in self.FIELDS:
            self.data[k][:n] = state[k]


def train_behaviour_policy(cfg: BehaviourConfig, out: Path, *, show_progress: bool = True) -> Path:
    """SAC on ``cfg.env`` with snapshots, evaluations and checkpoints in ``out`` (resumable);
    ``cfg.threads`` torch threads while it runs."""
    cfg.validate()
    with claim_folder(out, "genworld data train-policy", cfg), torch_threads(cfg.threads):
        return _train_behaviour_policy(cfg, out, show_progress)


def _train_behaviour_policy(cfg: BehaviourConfig, out: Path, show_progress: bool) -> Path:
    # a finished run may be taken further: rerun with a larger --steps (the replay buffer's
    # capacity is the step budget, so a resumed one only grows)
    check_or_write_config(out, cfg, extendable=("total_steps",))
    torch.manual_seed(cfg.seed)
    trainer = BehaviourTrainer(cfg)
    clock = {"last": time.perf_counter()}

    def snapshot(step: int, metrics: dict) -> dict:
        record = save_snapshot(trainer.agent.actor, cfg, out, step, trainer.buffer.size)
        if "intrinsic_reward" in metrics:  # the batch's at this step: how novel the data still is
            record["intrinsic_reward"] = float(metrics["intrinsic_reward"])
        record["steps_per_second"] = cfg.snapshot_every / (time.perf_counter() - clock["last"])
        clock["last"] = time.perf_counter()
        return record

    run_loop(
        f"SAC {cfg.env}",
        trainer,
        out,
        steps=cfg.total_steps,
        seed=cfg.seed,
        checkpoint_every=cfg.checkpoint_every,
        hooks=(Hook(cfg.snapshot_every, snapshot, log="eval.jsonl"),),
        show_progress=show_progress,
    )
    return out


class BehaviourTrainer:
    """Online SAC as a loop trainer: a step is one environment step (uniform-random actions
    during the warm-up) and, after the warm-up, one SAC update on a replay batch."""

    def __init__(self, cfg: BehaviourConfig):
        self.cfg = cfg
        self.spec = get_env_spec(cfg.env)
        self.device = resolve_device(cfg.device)
        self.agent = SAC(self.spec.obs_dim, self.spec.act_dim, cfg.sac, self.device)
        self.buffer = ReplayBuffer(cfg.total_steps, self.spec.obs_dim, self.spec.act_dim)
        self.rng = np.random.default_rng(cfg.seed)
        self.count = 0
        self.explorer = (
            Disagreement(self.spec.obs_dim, self.spec.act_dim, cfg.disagreement, self.device)
            if cfg.intrinsic == "disagreement"
            else None
        )

    def begin(self, step: int) -> None:
        """The env of a run (re)started at ``step``: its own seed, so no episode repeats."""
        self.count = step
        self.pool = EnvPool(self.cfg.env, 1, seed=self.cfg.seed + 7919 * (step + 1))
        self.obs = self.pool.reset()[0]

    def step(self, generator: torch.Generator) -> dict:
        cfg, spec = self.cfg, self.spec
        if self.count < cfg.learning_starts:
            action = self.rng.uniform(-1, 1, spec.act_dim).astype(np.float32)
        else:
            with torch.no_grad():
                obs = torch.as_tensor(self.obs, dtype=torch.float32, device=self.device)
                a, _ = self.agent.actor.sample(obs[None])
            action = a[0].cpu().numpy()
        result = self.pool.step(action[None])
        self.buffer.add(
            self.obs,
            action,
            result.rewards[0],
            result.final_observations[0],
            result.terminations[0],
        )
        self.obs = result.observations[0]
        self.count += 1
        if self.count < cfg.learning_starts:
            return {}
        obs, act, rew, next_obs, terminal = self.buffer.sample(
            self.rng, cfg.sac.batch_size, self.device
        )
        if self.explorer is None:
            self.agent.update(obs, act, rew, next_obs, terminal)
            return {}
        metrics = self.explorer.update(self.buffer, self.rng)
        intrinsic = self.explorer.reward(obs, act)
        self.agent.update(obs, act, intrinsic, next_obs, terminal)
        return {**metrics, "intrinsic_reward": intrinsic.mean()}

    def state_dict(self) -> dict[str, Any]:
        state = {
            "agent": self.agent.state_dict(),
            "buffer": self.buffer.state(),
            "numpy_rng": json.dumps(self.rng.bit_generator.state),
        }
        if self.explorer is not None:
            state["explorer"] = self.explorer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.agent.load_state_dict(state["agent"])
        if self.explorer is not None:
            self.explorer.load_state_dict(state["explorer"])
        self.buffer.load(state["buffer"])
        self.rng.bit_generator.state = json.loads(state["numpy_rng"])


def save_snapshot(
    actor: TanhGaussianActor, cfg: BehaviourConfig, out: Path, step: int, buffer_size: int
) -> dict:
    """Evaluate ``actor`` in ``cfg.env`` (stochastic and deterministic, ``cfg.eval_episodes``
    each), save it with its card as ``out/snapshots/step_<step>`` and return the eval record."""
    spec = get_env_spec(cfg.env)
    actor.eval()
    cpu_actor = TanhGaussianActor(spec.obs_dim, spec.act_dim, cfg.sac.hidden)
    cpu_actor.load_state_dict({k: v.cpu() for k, v in actor.state_dict().items()})
    actor.train()
    gen = torch.Generator().manual_seed(step)
    stochastic = evaluate_policy(
        cfg.env,
        lambda o: cpu_actor.act(o, deterministic=False, generator=gen),
        cfg.eval_episodes,
        10_000,
    )
    deterministic = evaluate_policy(
        cfg.env, lambda o: cpu_actor.act(o, deterministic=True), cfg.eval_episodes, 20_000
    )
    record = {
        "step": step,
        "buffer_size": buffer_size,
        "stochastic_return": float(stochastic.mean()),
        "stochastic_return_std": float(stochastic.std()),
        "stochastic_normalized": float(spec.normalized_score(stochastic.mean())),
        "deterministic_return": float(deterministic.mean()),
        "deterministic_normalized": float(spec.normalized_score(deterministic.mean())),
    }
    card = PolicyCard(
        cfg.env,
        f"step-{step}",
        spec.obs_dim,
        spec.act_dim,
        "sac",
        step,
        cfg.seed,
        cfg.sac.hidden,
        record["stochastic_return"],
        record["stochastic_return_std"],
        record["stochastic_normalized"],
        cfg.eval_episodes,
        "stochastic",
        {"deterministic_return": record["deterministic_return"]},
    )
    save_policy(cpu_actor, card, out / "snapshots" / f"step_{step:09d}")
    return record
