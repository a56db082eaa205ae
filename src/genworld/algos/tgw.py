"""TGW policy learning: offline MBPO inside the TGW world model (seed 000 §5.4, Algorithm 2).

The paper chooses "the offline version of MBPO [Janner et al. 2019] to enable a fair comparison"
and gives no settings; ours follow MOPO's offline MBPO (Yu et al. 2020; OfflineRL-Kit
``mopo.py`` defaults where they fit the budget): every ``rollout_every`` updates, ``rollout_batch``
start states are drawn from the data of every env (balanced), the world model is rolled out for
``horizon`` steps with the current (stochastic) policy, each rollout's FIFO prompt memory filled
from its own history; the imagined transitions, with reward ``r = re − β·ri`` (eq. 6), go to a
model buffer; SAC trains on a ``real_ratio`` mix of real and imagined transitions.

Policies: ``shared`` — one SAC over all envs (padded observations, one-hot env id, masked actions,
entropy target per env = −its true action dim); ``per_env`` — one SAC per env, all trained in
the same shared world model.

Deviations:
- horizon / rollout sizes / updates are scaled to the CPU budget (scale presets);
- rollouts stop at a predicted terminal (registry functions by default) instead of continuing.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genworld.algos.registry import AlgoContext, resolve_config
from genworld.algos.sac import SAC, SACConfig
from genworld.data.multi_env import MultiEnvDataset
from genworld.errors import GenworldError
from genworld.world_models.tgw import sample_start_states


@dataclass(frozen=True)
class TGWAgentConfig:
    policy: str = "shared"
    """shared (one policy for all envs) or per_env (one policy per env, same world model)."""
    rollout_every: int = 250
    """SAC updates between model rollouts (MOPO: every 250 steps)."""
    rollout_batch: int = 5_000
    """Start states per rollout, balanced over envs (MOPO: 50k)."""
    horizon: int = 5
    """Imagined steps per rollout (MOPO: 1–5)."""
    retain_rollouts: int = 5
    """Model buffer keeps this many rollouts' worth of transitions (MOPO: 5 epochs)."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch (MOPO: 0.05)."""
    beta: float | None = None
    """Override the world model's β (risk tolerance, eq. 6); None = the model's."""
    sac: SACConfig = field(default_factory=SACConfig)

    def validate(self) -> None:
        if self.policy not in ("shared", "per_env"):
            raise GenworldError(f"policy={self.policy!r} is invalid: choose shared or per_env")
        if not 0 <= self.real_ratio <= 1:
            raise GenworldError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        for name in ("rollout_every", "rollout_batch", "horizon", "retain_rollouts"):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")


# Agent presets per scale: tiny for tests, mini for the 2-core CPU, full = MOPO's settings.
AGENT_PRESETS: dict[str, dict] = {
    "tiny": {
        "rollout_every": 20,
        "rollout_batch": 64,
        "horizon": 2,
        "sac": {"hidden": (32, 32), "batch_size": 32},
    },
    "mini": {},
    "full": {"rollout_every": 250, "rollout_batch": 50_000, "horizon": 5},
}
# World-model presets on top of ``genworld.train.world_model.SCALES`` (mini: a smaller TGW so
# the quick start fits 15 CPU minutes; full: the paper's sizes).
WM_PRESETS: dict[str, dict] = {
    "tiny": {},
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
}


def build_world_model(ctx: AlgoContext, model: str, presets: dict[str, dict]):
    """Train (or resume, or load a finished) world model on ``ctx.dataset`` in ``ctx.out``."""
    from genworld.train.world_model import config_for_scale, fit_world_model

    over = {**presets.get(ctx.scale, {}), **ctx.overrides.get("world_model", {})}
    cfg = config_for_scale(
        ctx.scale,
        check_ids=False,
        model=model,
        seed=ctx.seed,
        device=ctx.device.type,
        **over,
    )
    if ctx.out is None:
        raise GenworldError("model-based algorithms need an output folder (AlgoContext.out)")
    return fit_world_model(
        cfg, ctx.dataset, ctx.out / "world_model", show_progress=ctx.show_progress
    ).to(ctx.device)


def build(ctx: AlgoContext) -> TGWAgent:
    """TGW world model on the cell's data, then offline MBPO in it."""
    model = build_world_model(ctx, "tgw", WM_PRESETS)
    cfg = resolve_config(TGWAgentConfig, AGENT_PRESETS, ctx, skip=("world_model",))
    return TGWAgent(model, ctx.dataset, cfg, ctx.device)


class TransitionBuffer:
    """Preallocated ring buffer of padded transitions with their env ids."""

    def __init__(self, capacity: int, obs_max: int, act_max: int, device):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs = torch.zeros(capacity, obs_max, device=device)
        self.act = torch.zeros(capacity, act_max, device=device)
        self.rew = torch.zeros(capacity, device=device)
        self.next_obs = torch.zeros(capacity, obs_max, device=device)
        self.term = torch.zeros(capacity, device=device)
        self.env = torch.zeros(capacity, dtype=torch.int64, device=device)

    def add(self, obs, act, rew, next_obs, term, env) -> None:
        n = len(obs)
        idx = (self.pos + torch.arange(n, device=obs.device)) % self.capacity
        self.obs[idx], self.act[idx], self.rew[idx] = obs, act, rew
        self.next_obs[idx], self.term[idx], self.env[idx] = next_obs, term.float(), env
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)

    def state_dict(self) -> dict:
        n = self.size
        return {
            "obs": self.obs[:n],
            "act": self.act[:n],
            "rew": self.rew[:n],
            "next_obs": self.next_obs[:n],
            "term": self.term[:n],
            "env": self.env[:n],
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for name in ("obs", "act", "rew", "next_obs", "term", "env"):
            getattr(self, name)[:n] = state[name]
        self.size, self.pos = n, int(state["pos"])

    def sample(self, n: int, generator: torch.Generator):
        idx = torch.randint(self.size, (n,), generator=generator)
        return (
            self.obs[idx],
            self.act[idx],
            self.rew[idx],
            self.next_obs[idx],
            self.term[idx],
            self.env[idx],
        )


class TGWAgent:
    """SAC policies trained in a (frozen) world model; ``update()`` is one policy step."""

    def __init__(
        self, world_model, dataset: MultiEnvDataset, cfg: TGWAgentConfig, device: torch.device
    ):
        cfg.validate()
        self.cfg, self.world_model, self.dataset, self.device = cfg, world_model, dataset, device
        specs = dataset.specs
        act_dims = [s.act_dim for s in specs]
        k, obs_max, act_max = len(specs), dataset.obs_max, dataset.act_max
        if cfg.policy == "shared":
            self.agents = [SAC(obs_max, act_max, cfg.sac, device, num_envs=k, act_dims=act_dims)]
        else:
            self.agents = [
                SAC(obs_max, act_max, cfg.sac, device, num_envs=1, act_dims=[d]) for d in act_dims
            ]
        capacity = cfg.rollout_batch * cfg.horizon * cfg.retain_rollouts
        self.model_buffer = TransitionBuffer(capacity, obs_max, act_max, device)
        self.updates = 0
        self.rollout_stats: dict[str, float] = {}

    # -------------------------------------------------------------- acting
    def _sample(
        self, obs: torch.Tensor, env_idx: torch.Tensor, deterministic: bool
    ) -> torch.Tensor:
        if self.cfg.policy == "shared":
            return self.agents[0].act(obs, env_idx, deterministic=deterministic)
        actions = torch.zeros(len(obs), self.dataset.act_max, device=obs.device)
        for k, agent in enumerate(self.agents):
            sel = env_idx == k
            if bool(sel.any()):
                actions[sel] = agent.act(obs[sel], None, deterministic=deterministic)
        return actions

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        return self._sample(obs, env_idx, deterministic)

    # -------------------------------------------------------------- imagination
    @torch.no_grad()
    def rollout(self, generator: torch.Generator) -> dict[str, float]:
        env_idx, index = sample_start_states(self.dataset, self.cfg.rollout_batch, generator)
        state = self.world_model.initial_state(self.dataset, env_idx, index)
        obs = torch.zeros(len(env_idx), self.dataset.obs_max)
        for k, data in enumerate(self.dataset.envs):
            sel = env_idx == k
            obs[sel, : data.spec.obs_dim] = data.observations[index[sel]]
        alive = torch.ones(len(env_idx), dtype=torch.bool)
        added, penalties, rewards = 0, [], []
        for _ in range(self.cfg.horizon):
            actions = self._sample(obs, env_idx, deterministic=False)
            out = self.world_model.step(state, obs, actions, env_idx, generator)
            rew = out.extrinsic - self._beta() * out.uncertainty
            self.model_buffer.add(
                obs[alive],
                actions[alive],
                rew[alive],
                out.next_observations[alive],
                out.terminations[alive],
                env_idx[alive],
            )
            added += int(alive.sum())
            penalties.append(out.uncertainty[alive].mean())
            rewards.append(out.extrinsic[alive].mean())
            alive = alive & ~out.terminations
            if not bool(alive.any()):
                break
            obs, state = out.next_observations, out.state
        self.rollout_stats = {
            "rollout/transitions": float(added),
            "rollout/intrinsic_mean": float(torch.stack(penalties).mean()),
            "rollout/extrinsic_mean": float(torch.stack(rewards).mean()),
            "rollout/alive_at_end": float(alive.float().mean()),
        }
        return self.rollout_stats

    def _beta(self) -> float:
        return (
            self.cfg.beta
            if self.cfg.beta is not None
            else getattr(self.world_model.cfg, "beta", 0.0)
        )

    # -------------------------------------------------------------- learning
    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.updates % self.cfg.rollout_every == 0:
            self.rollout(generator)
        self.updates += 1
        batch_size = self.cfg.sac.batch_size
        n_real = int(round(batch_size * self.cfg.real_ratio))
        real = self.dataset.sample_transitions(n_real, generator, "balanced") if n_real else None
        fake = self.model_buffer.sample(batch_size - n_real, generator)
        parts = [fake]
        if real is not None:
            parts.append(
                (
                    real.observations,
                    real.actions,
                    real.rewards,
                    real.next_observations,
                    real.terminations,
                    real.env_idx,
                )
            )
        obs, act, rew, next_obs, term, env = (
            torch.cat(x).to(self.device) for x in zip(*parts, strict=True)
        )
        if self.cfg.policy == "shared":
            return self.agents[0].update(obs, act, rew, next_obs, term, env)
        metrics: dict[str, torch.Tensor] = {}
        for k, agent in enumerate(self.agents):
            sel = env == k
            if int(sel.sum()) > 1:
                metrics = agent.update(obs[sel], act[sel], rew[sel], next_obs[sel], term[sel])
        return metrics

    def state_dict(self) -> dict:
        """Policies, optimisers, update count and the model buffer: a resume continues exactly."""
        return {
            "agents": [a.state_dict() for a in self.agents],
            "updates": self.updates,
            "model_buffer": self.model_buffer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        for agent, s in zip(self.agents, state["agents"], strict=True):
            agent.load_state_dict(s)
        self.updates = int(state["updates"])
        self.model_buffer.load_state_dict(state["model_buffer"])
