"""TD3+BC: TD3 whose actor also regresses to the dataset's actions.

Paper: Fujimoto & Gu 2021, "A Minimalist Approach to Offline Reinforcement Learning"
(arXiv:2106.06860). Reference implementations: the authors' sfujim/TD3_BC ``TD3_BC.py`` (commit
76cdd148, https://github.com/sfujim/TD3_BC/blob/76cdd14843a0a38a7482f2abe44a0b70f5d52a39/TD3_BC.py)
and CORL ``algorithms/offline/td3_bc.py`` (commit 6afec904). Hyper-parameters are the paper's
(Table 3): alpha 2.5, target policy noise 0.2 clipped at 0.5, policy delay 2, lr 3e-4 for actor
and critics, batch 256, discount 0.99, Polyak tau 0.005, 256x256 MLPs, states normalised with the
dataset's mean and std.

One step: twin-critic TD3 target ``r + gamma (1 - d) min Q_target(s', clip(pi_target(s') + eps))``;
every ``policy_delay`` steps the actor minimises ``-lambda Q1(s, pi(s)) + MSE(pi(s), a)`` with
``lambda = alpha / mean |Q1(s, pi(s))|`` (detached), computed with the freshly updated critic,
and only then do all target networks move (as in ``TD3_BC.py``).

Multi-env: observations normalised per env (``ctx.normalizer``), padded dims zeroed, a one-hot
env id appended to actor and critic inputs, actions (and target-policy noise) masked by each
env's action dims, the BC term averaged over real action dims only.

Deviations:
- ``lambda`` is computed per env (``alpha / mean |Q1|`` over that env's rows of the batch), so an
  env with large returns does not drown the Q term of one with small returns; with one env this
  is exactly the paper's. ``per_env_lambda=False`` gives one lambda for the whole batch.
- The BC term is the mean squared error over real action dims (the paper's ``F.mse_loss`` over
  all dims is the same for one env).
- The twin critics are one ``EnsembleMLP`` (one batched matmul); the actor's Q1 uses the critic
  with detached weights, so the actor loss cannot reach the critic.
- States are normalised by ``ctx.normalizer`` (std floored at 1e-6; the paper adds 1e-3 to it).
- Adam is fused (same maths, one kernel per step, called through ``utils.optim.Minimizer``);
  target nets move with one ``_foreach_lerp_``.
- ``act(deterministic=False)`` adds N(0, 0.1) exploration noise (TD3's ``expl_noise``); offline
  training never uses it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from genworld.algos.registry import (
    AlgoContext,
    agent_state,
    load_agent_state,
    resolve_config,
)
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.mlp import EnsembleMLP, mlp
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer


@dataclass(frozen=True)
class TD3BCConfig:
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the actor and of each critic."""
    alpha: float = 2.5
    """Weight of the Q term: lambda = alpha / mean |Q|."""
    policy_noise: float = 0.2
    """Std of the Gaussian noise on the target policy's action (target smoothing)."""
    noise_clip: float = 0.5
    """The target-policy noise is clipped to [-noise_clip, noise_clip]."""
    policy_delay: int = 2
    """The actor and all targets are updated every this many critic updates."""
    exploration_noise: float = 0.1
    """Std of the action noise of ``act(deterministic=False)`` (unused in training)."""
    gamma: float = 0.99
    """Discount (paper: 0.99)."""
    tau: float = 0.005
    """Polyak rate of the target actor and critics."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (paper: 3e-4)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (paper: 3e-4)."""
    batch_size: int = 256
    """Transitions per update, over all envs (paper: 256)."""
    num_critics: int = 2
    """Critics in the ensemble; the TD target is the minimum over them (TD3: twin Q)."""
    per_env_lambda: bool = True
    """lambda from each env's own mean |Q| (True) or from the whole batch (False)."""
    sampling: str = "balanced"
    """balanced (equal share per env) or proportional (to each env's transitions)."""

    def validate(self) -> None:
        if self.policy_delay < 1 or self.batch_size < 1 or self.num_critics < 1:
            raise GenworldError("policy_delay, batch_size and num_critics must be >= 1")
        if self.sampling not in ("balanced", "proportional"):
            raise GenworldError(f"sampling {self.sampling!r}: use balanced or proportional")


PRESETS: dict[str, dict] = {
    "tiny": {"hidden": (32, 32), "batch_size": 32},
    "mini": {},
    "full": {},
}


def build(ctx: AlgoContext) -> TD3BC:
    cfg = resolve_config(TD3BCConfig, PRESETS, ctx)
    return TD3BC(ctx.dataset, ctx.normalizer, cfg, ctx.device)


def bc_lambda(
    q: torch.Tensor, env_idx: torch.Tensor, num_envs: int, alpha: float, per_env: bool
) -> torch.Tensor:
    """``(B,)`` detached ``alpha / mean|Q|``: over the batch, or over each row's env."""
    q = q.detach().abs()  # (B,)
    if not per_env:
        return (alpha / q.mean()).expand_as(q)
    sums = torch.zeros(num_envs, device=q.device, dtype=q.dtype).index_add_(0, env_idx, q)
    counts = torch.bincount(env_idx, minlength=num_envs).clamp_min(1)  # (K,)
    return (alpha / (sums / counts))[env_idx]  # (B,)


def first_critic(critic: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
    """Q1 of ``x (B, in)`` with the critic's weights detached: gradients reach only ``x``."""
    last = len(critic.layers) - 1
    for i, layer in enumerate(critic.layers):
        x = torch.addmm(layer.bias[0].detach(), x, layer.weight[0].detach())  # (B, out)
        if i < last:
            x = torch.relu(x)
    return x.squeeze(-1)  # (B,)


class TD3BC:
    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: TD3BCConfig,
        device: torch.device,
    ):
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.num_envs, self.normalizer = dataset.num_envs, normalizer.to(device)
        obs_max, act_max = dataset.obs_max, dataset.act_max
        in_dim = obs_max + self.num_envs
        self.actor = mlp(in_dim, cfg.hidden, act_max).to(device)
        self.actor_target = copy.deepcopy(self.actor).requires_grad_(False)
        self.critic = EnsembleMLP(cfg.num_critics, in_dim + act_max, cfg.hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._polyak = (
            [*self.critic_target.parameters(), *self.actor_target.parameters()],
            [*self.critic.parameters(), *self.actor.parameters()],
        )
        fused = fused_optimizer(device)
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, fused=fused)
        self.actor_opt_min = Minimizer(self.actor_opt)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, fused=fused)
        self.critic_opt_min = Minimizer(self.critic_opt)
        self.act_masks = dataset.act_masks().float().to(device)  # (K, A)
        self.obs_masks = dataset.obs_masks().float().to(device)  # (K, O)
        self.step = 0
        """Critic updates so far (the actor moves when it is a multiple of policy_delay)."""
        zero = torch.zeros((), device=device)
        self.actor_metrics = {"losses/actor": zero, "losses/lambda": zero}
        """The latest actor step's metrics, reported on critic-only steps too (stable keys)."""

    def _inputs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """Per-env normalised observations (padded dims exactly 0) plus the one-hot env id;
        ``obs (..., B, O)`` (leading dims share ``env_idx (B,)``) → ``(..., B, O + K)``."""
        x = self.normalizer.normalize_obs(obs, env_idx) * self.obs_masks[env_idx]  # (..., B, O)
        one_hot = nn.functional.one_hot(env_idx, self.num_envs).to(x.dtype)  # (B, K)
        return torch.cat([x, one_hot.expand(*x.shape[:-1], -1)], -1)

    def critic_loss(self, x, next_x, batch, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """Twin-critic TD loss against the smoothed target policy (``mask (B, A)``: real action
        dims); also returns Q (E, B)."""
        cfg = self.cfg
        with torch.no_grad():
            noise = (torch.randn_like(batch.actions) * cfg.policy_noise).clamp(
                -cfg.noise_clip, cfg.noise_clip
            )
            next_act = (torch.tanh(self.actor_target(next_x)) + noise).clamp(-1.0, 1.0) * mask
            next_q = self.critic_target(torch.cat([next_x, next_act], -1)).min(0).values
            target = batch.rewards + cfg.gamma * (1.0 - batch.terminations) * next_q.squeeze(-1)
        q = self.critic(torch.cat([x, batch.actions * mask], -1)).squeeze(-1)  # (E, B)
        return (q - target).pow(2).mean(1).sum(), q.detach()

    def actor_loss(self, x, batch, mask) -> tuple[torch.Tensor, torch.Tensor]:
        """``-lambda Q1(s, pi(s)) + MSE(pi(s), a)`` over real action dims; also returns lambda."""
        pi = torch.tanh(self.actor(x)) * mask  # (B, A)
        q = first_critic(self.critic, torch.cat([x, pi], -1))  # (B,)
        lam = bc_lambda(q, batch.env_idx, self.num_envs, self.cfg.alpha, self.cfg.per_env_lambda)
        bc = ((pi - batch.actions * mask).pow(2) * mask).sum() / mask.sum()
        return -(lam * q).mean() + bc, lam.mean()

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.dataset.sample_transitions(self.cfg.batch_size, generator, self.cfg.sampling)
        batch = batch.to(self.device)
        both = torch.stack([batch.observations, batch.next_observations])  # (2, B, O)
        x, next_x = self._inputs(both, batch.env_idx)  # (B, O + K) each
        mask = self.act_masks[batch.env_idx]  # (B, A)
        critic_loss, q = self.critic_loss(x, next_x, batch, mask)
        self.critic_opt_min.minimize(critic_loss)
        self.step += 1
        metrics = {"losses/critic": critic_loss.detach(), "losses/q": q.mean()}
        if self.step % self.cfg.policy_delay == 0:
            actor_loss, lam = self.actor_loss(x, batch, mask)
            self.actor_opt_min.minimize(actor_loss)
            with torch.no_grad():
                torch._foreach_lerp_(*self._polyak, self.cfg.tau)
            self.actor_metrics = {"losses/actor": actor_loss.detach(), "losses/lambda": lam}
        return {**metrics, **self.actor_metrics}

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        obs, env_idx = obs.to(self.device), env_idx.to(self.device)
        mask = self.act_masks[env_idx]
        action = torch.tanh(self.actor(self._inputs(obs, env_idx)))  # (n, A)
        if not deterministic:
            action = action + self.cfg.exploration_noise * torch.randn_like(action)
        return action.clamp(-1.0, 1.0) * mask

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object, so checkpoints forget nothing."""
        return {
            "actor": self.actor,
            "actor_target": self.actor_target,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "normalizer": self.normalizer,
        }

    def state_dict(self) -> dict:
        return agent_state(self.modules(), step=self.step)

    def load_state_dict(self, state: dict) -> None:
        load_agent_state(self.modules(), None, state)
        self.step = int(state["step"])
