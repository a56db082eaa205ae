"""Decision Transformer: offline RL as return-conditioned sequence modelling.

Paper: Chen et al. 2021, "Decision Transformer: Reinforcement Learning via Sequence Modeling".
Reference implementations: kzl/decision-transformer ``gym/experiment.py`` (commit e2d82e68) and
CORL ``algorithms/offline/dt.py`` (commit 2c308c88). Tokens are ``(R_t, s_t, a_t)`` per step, the
action ``a_t`` is regressed (MSE) from the output at the state token ``s_t``; at test time the
return-to-go starts at a target return and is decremented by each reward.

Hyper-parameters (``full`` = the dataclass defaults) are the paper's / kzl's: K=20, embed 128,
3 layers, 1 head, dropout 0.1, AdamW lr 1e-4, weight decay 1e-4, linear warmup 10k steps, batch
64, gradient-norm clip 0.25, returns-to-go scaled by 1/1000, targets halfcheetah 12000, hopper
3600, walker2d 5000 (the higher of each env's two). CORL's D4RL configs
(``configs/offline/dt/*/medium_v2.yaml``) use the same model with lr 8e-4 and batch 4096.

Multi-env (TD-MPC2-style padding, STYLE §4): per-env state/action projections
(:class:`~genworld.nn.tokenizers.PerEnvLinear`, padded inputs never leak in) into one token
space, a learned env embedding added to every token, a per-env action head whose padded dims
are exactly zero, and a loss over real action dims of real steps only. Each env conditions on its
own target return (``DTConfig.target_returns``).

A trajectory prompt (Prompt-DT, :mod:`genworld.algos.prompt_dt`) can be attached: its tokens,
embedded by their own projections, are prepended to every sequence.

Deviations:
- Observations are normalised per env with ``ctx.normalizer`` (kzl/CORL: the dataset's mean/std).
- Windows are right-padded (``step_mask`` False after an episode's end) instead of kzl's
  left-padding; with causal attention the padded tail cannot affect real steps.
- The loss is the mean over real (step, action-dim) pairs; CORL's divides by all pairs.
- Envs missing from ``target_returns`` use ``target_return_factor`` x the best episode return in
  their data (no published target exists for them).
- GELU MLP as CORL (kzl: ReLU); CORL's ``N(0, 0.02)`` initialisation.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from genworld.algos.registry import AlgoContext, resolve_config
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.data.trajectory_windows import Windows, returns_to_go, sample_windows
from genworld.errors import GenworldError
from genworld.nn.gpt import GPT, init_weights
from genworld.nn.tokenizers import PerEnvHead, TrajectoryEmbedding, shared_view
from genworld.utils.device import fused_optimizer

REFERENCE_TARGET_RETURNS = {"halfcheetah": 12_000.0, "hopper": 3_600.0, "walker2d": 5_000.0}
"""kzl ``gym/experiment.py`` ``env_targets`` (the higher of the two; CORL uses the same)."""


@dataclass(frozen=True)
class DTConfig:
    context_len: int = 20
    """K: steps per sequence (3K tokens)."""
    embed_dim: int = 128
    """Token width D (kzl/CORL: 128)."""
    layers: int = 3
    """Transformer blocks (kzl/CORL: 3)."""
    heads: int = 1
    """Attention heads per block; must divide embed_dim (kzl/CORL: 1)."""
    dropout: float = 0.1
    """Embedding, attention and residual dropout (kzl/CORL: 0.1 each)."""
    lr: float = 1e-4
    """AdamW learning rate after warmup (paper/kzl: 1e-4; CORL: 8e-4)."""
    weight_decay: float = 1e-4
    """AdamW weight decay (paper/kzl: 1e-4)."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW (beta1, beta2) (PyTorch's defaults, as kzl)."""
    warmup_steps: int = 10_000
    """Linear LR warmup: ``lr * min((step + 1) / warmup_steps, 1)``."""
    clip_grad: float = 0.25
    """Gradient-norm clip of every update (paper/kzl: 0.25)."""
    batch_size: int = 64
    """Sequences of K steps per update, over all envs (paper/kzl: 64; CORL: 4096)."""
    reward_scale: float = 1e-3
    """Returns-to-go are multiplied by this before embedding (kzl divides by 1000)."""
    target_returns: dict[str, float] = field(default_factory=lambda: dict(REFERENCE_TARGET_RETURNS))
    """Initial return-to-go per env name at evaluation (an override replaces the table)."""
    target_return_factor: float = 1.0
    """Envs not in ``target_returns``: this x the best episode return in their data."""
    sampling: str = "balanced"
    """balanced (equal share per env) or proportional (to each env's transitions)."""
    shared_params: bool = False
    """The envs are tasks of one robot (same dims): one set of projections and one action head,
    no env embedding, and the normaliser's env 0 for all. A task is then known only through its
    prompt (Prompt-DT's multi-task setting), and the network applies unchanged to new tasks."""

    def validate(self) -> None:
        if self.context_len < 1 or self.batch_size < 1 or self.warmup_steps < 1:
            raise GenworldError("context_len, batch_size and warmup_steps must be >= 1")
        if self.embed_dim % self.heads:
            raise GenworldError(f"embed_dim {self.embed_dim} is not divisible by {self.heads}")
        if not 0.0 <= self.dropout < 1.0:
            raise GenworldError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.sampling not in ("balanced", "proportional"):
            raise GenworldError(f"sampling {self.sampling!r}: use balanced or proportional")


PRESETS: dict[str, dict] = {
    "tiny": {
        "context_len": 4,
        "embed_dim": 16,
        "layers": 1,
        "batch_size": 8,
        "warmup_steps": 10,
        "lr": 1e-3,
    },
    # 2 CPU cores, 10k updates (train/table.py BUDGETS["mini"]): smaller net and batch, short
    # warmup, a higher lr for the short budget.
    "mini": {"embed_dim": 64, "layers": 2, "batch_size": 32, "warmup_steps": 1_000, "lr": 3e-4},
    "full": {},
}


def build(ctx: AlgoContext) -> DT:
    cfg = resolve_config(DTConfig, PRESETS, ctx)
    return DT(ctx.dataset, ctx.normalizer, cfg, ctx.device)


# ---------------------------------------------------------------- network


class DecisionTransformerNet(nn.Module):
    """Normalised inputs → actions ``(B, L, act_max)`` in [-1, 1], zero on padded dims.

    With ``prompt`` (another set of windows, already normalised) its tokens, embedded by
    ``prompt_embedding``, come first; predictions are read for the main sequence only.
    """

    def __init__(self, dataset: MultiEnvDataset, cfg: DTConfig, with_prompt: bool = False):
        super().__init__()
        max_timestep = max(s.max_episode_steps for s in dataset.specs)
        self.embedding = TrajectoryEmbedding(dataset, cfg.embed_dim, max_timestep)
        self.prompt_embedding = (
            TrajectoryEmbedding(dataset, cfg.embed_dim, max_timestep) if with_prompt else None
        )
        self.embed_ln = nn.LayerNorm(cfg.embed_dim)
        self.embed_drop = nn.Dropout(cfg.dropout)
        self.gpt = GPT(cfg.embed_dim, cfg.layers, cfg.heads, cfg.dropout, cfg.dropout)
        self.head = PerEnvHead(
            dataset.num_envs, cfg.embed_dim, dataset.act_max, [s.act_dim for s in dataset.specs]
        )
        self.apply(init_weights)

    def forward(self, inputs: tuple, env_idx: torch.Tensor, prompt: tuple | None = None):
        """``inputs = (obs, act, rtg, timesteps, step_mask)`` (normalised, scaled)."""
        *tokens_in, step_mask = inputs
        tokens = self.embedding(*tokens_in, env_idx)  # (B, 3L, D)
        valid = step_mask.repeat_interleave(3, dim=1)  # (B, 3L)
        if prompt is not None:
            *prompt_in, prompt_mask = prompt
            prompt_tokens = self.prompt_embedding(*prompt_in, env_idx)  # (B, 3P, D)
            tokens = torch.cat([prompt_tokens, tokens], dim=1)  # (B, 3(P+L), D)
            valid = torch.cat([prompt_mask.repeat_interleave(3, dim=1), valid], dim=1)
        h = self.gpt(self.embed_drop(self.embed_ln(tokens)), valid)  # (B, T, D)
        h_state = h[:, -3 * step_mask.shape[1] :][:, 1::3]  # (B, L, D) outputs at s_t tokens
        return torch.tanh(self.head(h_state, env_idx[:, None]))  # (B, L, act_max)


# ---------------------------------------------------------------- agent


class DT:
    """The agent contract (registry.py) around :class:`DecisionTransformerNet`.

    ``prompts`` (Prompt-DT) provides ``sample(env_idx, generator)`` for training,
    ``fixed(env_idx)`` for acting, and its own ``state_dict``; ``rtgs`` are the per-env
    :func:`returns_to_go` tables when the caller has them already.
    """

    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: DTConfig,
        device: torch.device,
        prompts=None,
        rtgs: list[torch.Tensor] | None = None,
    ):
        self.cfg, self.dataset, self.device, self.prompts = cfg, dataset, device, prompts
        self.normalizer = normalizer.to(device)
        # once, at build time (or given by the caller who already computed them)
        self.rtgs = rtgs if rtgs is not None else [returns_to_go(env) for env in dataset.envs]
        self.targets = torch.tensor(
            [
                cfg.target_returns.get(
                    env.spec.name, cfg.target_return_factor * float(env.episode_returns.max())
                )
                for env in dataset.envs
            ],
            device=device,
        )  # (num_envs,) unscaled initial return-to-go per env
        net_dataset = dataset
        if cfg.shared_params:  # the parameters do not depend on how many tasks share them
            net_dataset = shared_view(dataset)
        self.net = DecisionTransformerNet(net_dataset, cfg, with_prompt=prompts is not None).to(
            device
        )
        self.opt = torch.optim.AdamW(
            self.net.parameters(),
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            betas=cfg.betas,
            fused=fused_optimizer(device),
        )
        warmup = cfg.warmup_steps  # kzl experiment.py / CORL dt.py warmup schedule
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda step: min((step + 1) / warmup, 1.0)
        )
        self.act_masks = dataset.act_masks().float().to(device)  # (num_envs, act_max)
        self.updates = 0

    def _net_env(self, env_idx: torch.Tensor) -> torch.Tensor:
        """The parameter set of each row: its env, or 0 for all with ``shared_params``."""
        return torch.zeros_like(env_idx) if self.cfg.shared_params else env_idx

    def _inputs(self, w: Windows) -> tuple:
        """Raw windows → network inputs: per-env normalised obs, scaled returns-to-go."""
        obs = self.normalizer.normalize_obs(
            w.observations.transpose(0, 1), self._net_env(w.env_idx)
        )
        obs = obs.transpose(0, 1) * w.step_mask[..., None]  # (B, L, obs_max)
        rtg = w.returns_to_go * self.cfg.reward_scale  # (B, L)
        return obs, w.actions, rtg, w.timesteps, w.step_mask

    def predict(self, w: Windows, prompt: Windows | None = None) -> torch.Tensor:
        """Actions ``(B, L, act_max)`` for raw windows (and raw prompt windows)."""
        return self.net(
            self._inputs(w),
            self._net_env(w.env_idx),
            None if prompt is None else self._inputs(prompt),
        )

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        self.net.train()
        cfg = self.cfg
        w = sample_windows(
            self.dataset, self.rtgs, cfg.batch_size, cfg.context_len, generator, cfg.sampling
        )
        prompt = None if self.prompts is None else self.prompts.sample(w.env_idx, generator)
        w = w.to(self.device)
        pred = self.predict(w, None if prompt is None else prompt.to(self.device))
        mask = w.step_mask[..., None] * self.act_masks[w.env_idx][:, None]  # (B, L, act_max)
        loss = ((pred - w.actions).pow(2) * mask).sum() / mask.sum()
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(self.net.parameters(), cfg.clip_grad)
        self.opt.step()
        self.scheduler.step()
        self.updates += 1
        return {
            "losses/action_mse": loss.detach(),
            "charts/learning_rate": torch.tensor(self.scheduler.get_last_lr()[0]),
        }

    def fixed_prompt(self, env_idx: torch.Tensor) -> Windows | None:
        return None if self.prompts is None else self.prompts.fixed(env_idx).to(self.device)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        """A one-step context: ``(target return, obs)`` at timestep 0."""
        self.net.eval()
        obs, env_idx, n = obs.to(self.device), env_idx.to(self.device), len(obs)
        w = Windows(
            observations=obs[:, None],
            actions=torch.zeros(n, 1, self.dataset.act_max, device=self.device),
            returns_to_go=self.targets[env_idx][:, None],
            timesteps=torch.zeros(n, 1, dtype=torch.int64, device=self.device),
            step_mask=torch.ones(n, 1, dtype=torch.bool, device=self.device),
            env_idx=env_idx,
        )
        return self.predict(w, self.fixed_prompt(env_idx))[:, 0]  # (n, act_max)

    def episode_policy(self, env_k: int, episodes: int) -> EpisodePolicy:
        return EpisodePolicy(self, env_k, episodes)

    def state_dict(self) -> dict:
        state = {
            "net": self.net.state_dict(),
            "optimizer": self.opt.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "updates": self.updates,
            "normalizer": self.normalizer.state_dict(),
        }
        if self.prompts is not None:
            state["prompts"] = self.prompts.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.net.load_state_dict(state["net"])
        self.opt.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.updates = int(state["updates"])
        self.normalizer.load_state_dict(state["normalizer"])
        if self.prompts is not None:
            self.prompts.load_state_dict(state["prompts"])


class EpisodePolicy:
    """Histories of ``episodes`` parallel episodes of env ``env_k`` (see eval/rollout.py).

    ``act(obs (n, obs_max), idx (n,))`` appends the observations of episodes ``idx`` and returns
    their next actions with one forward pass over the last K steps of every episode;
    ``observe(idx, rewards)`` decrements those episodes' returns-to-go by their rewards.
    """

    def __init__(self, agent: DT, env_k: int, episodes: int):
        self.agent, self.env_k = agent, env_k
        dataset, device = agent.dataset, agent.device
        self.horizon = dataset.specs[env_k].max_episode_steps
        shape = (episodes, self.horizon)
        self.observations = torch.zeros(*shape, dataset.obs_max, device=device)
        self.actions = torch.zeros(*shape, dataset.act_max, device=device)
        self.history_rtg = torch.zeros(shape, device=device)  # RTG fed at each step
        self.length = torch.zeros(episodes, dtype=torch.int64, device=device)
        self.returns_to_go = agent.targets[env_k].repeat(episodes)  # (episodes,) current RTG
        self.prompt = agent.fixed_prompt(torch.tensor([env_k], device=device))

    @torch.no_grad()
    def act(self, obs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        agent, context = self.agent, self.agent.cfg.context_len
        agent.net.eval()
        idx = torch.as_tensor(idx, dtype=torch.int64, device=agent.device)
        t = self.length[idx]  # (n,) step about to be taken
        if bool((t >= self.horizon).any()):
            raise GenworldError(f"episode longer than max_episode_steps={self.horizon}")
        self.observations[idx, t] = obs.to(agent.device)
        self.history_rtg[idx, t] = self.returns_to_go[idx]
        start = (t + 1 - context).clamp(min=0)  # (n,)
        positions = start[:, None] + torch.arange(context, device=agent.device)  # (n, K)
        valid = positions <= t[:, None]  # (n, K) right-padded while t < K - 1
        positions = positions.clamp(max=self.horizon - 1)
        rows, m = idx[:, None], valid.float()
        n = len(idx)
        w = Windows(
            observations=self.observations[rows, positions] * m[..., None],
            actions=self.actions[rows, positions] * m[..., None],
            returns_to_go=self.history_rtg[rows, positions] * m,
            timesteps=positions * valid,
            step_mask=valid,
            env_idx=torch.full((n,), self.env_k, dtype=torch.int64, device=agent.device),
        )
        prompt = (
            None if self.prompt is None else self.prompt.map(lambda v: v.expand(n, *v.shape[1:]))
        )
        pred = agent.predict(w, prompt)  # (n, K, act_max)
        action = pred[torch.arange(n, device=agent.device), t.clamp(max=context - 1)]
        self.actions[idx, t] = action
        self.length[idx] += 1
        return action  # (n, act_max)

    def observe(self, idx, rewards) -> None:
        idx = torch.as_tensor(idx, dtype=torch.int64, device=self.agent.device)
        rewards = torch.as_tensor(rewards, dtype=torch.float32, device=self.agent.device)
        self.returns_to_go[idx] -= rewards
