"""Soft Actor-Critic (online), used to train behaviour policies and, later, inside world models.

Paper: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (auto-tuned alpha,
twin Q). Reference implementation: CleanRL ``sac_continuous_action.py`` (hyper-parameters below
match it: lr 3e-4, batch 256, gamma 0.99, tau 0.005, 5k random warm-up steps, target entropy
-|A|).

Multi-env (padded) use: ``num_envs > 1`` appends a one-hot env id to actor and critic inputs,
``act_dims`` masks each env's padded action dims (in sampling and in the log-probability), and
alpha is learned per env with target entropy ``-scale * act_dim_k`` (its true action dim).

Deviations:
- the twin critics are one vectorised ensemble (``EnsembleMLP``, one batched matmul);
- the policy is updated every step (CleanRL: every 2 steps, repeated twice);
- the replay buffer and all RNG states are checkpointed, so a killed run resumes exactly where
  the last checkpoint left it.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genworld.algos.registry import agent_state, load_agent_state
from genworld.nn.mlp import EnsembleMLP
from genworld.policies import TanhGaussianActor, tanh_gaussian_sample
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer


@dataclass(frozen=True)
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the actor and of each critic."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (CleanRL: 3e-4)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics."""
    alpha_lr: float = 3e-4
    """Adam learning rate of the log entropy temperature(s) log alpha."""
    batch_size: int = 256
    """Transitions per update (CleanRL: 256)."""
    num_critics: int = 2
    """Critics in the ensemble; the target is the minimum over them."""
    init_alpha: float = 1.0
    """Initial entropy temperature alpha of every env (1: log alpha starts at 0, as CleanRL)."""
    target_entropy_scale: float = 1.0
    """Target entropy = -scale * action dim."""
    bc_alpha: float = 0.0
    """0 = plain SAC. > 0: offline behaviour regulariser in TD3+BC's form (Fujimoto & Gu 2021):
    actor loss = bc_alpha · (α·log π − Q) / mean|Q| + ‖tanh(μ(s)) − a‖² on the batch rows marked as
    real data (``update(..., bc_rows=...)``); TD3+BC uses 2.5."""


def sac_optimizers(actor, critic, log_alpha, cfg: SACConfig, fused: bool):
    """The actor's, the critics' and the temperature's Adam, and a :class:`Minimizer` of each
    (the same for one SAC and for a batched group of them)."""
    opts = (
        torch.optim.Adam(actor.parameters(), lr=cfg.actor_lr, fused=fused),
        torch.optim.Adam(critic.parameters(), lr=cfg.critic_lr, fused=fused),
        torch.optim.Adam([log_alpha], lr=cfg.alpha_lr, fused=fused),
    )
    return opts, tuple(Minimizer(opt) for opt in opts)


class SAC:
    """Twin-critic SAC; one env with flat tensors, or several with padded tensors and masks."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: SACConfig,
        device: torch.device,
        num_envs: int = 1,
        act_dims: list[int] | None = None,
        obs_stats: tuple[torch.Tensor, torch.Tensor] | None = None,
    ):
        """``obs_stats``: per-env ``(mean, std)``, each ``(num_envs, obs_dim)``, to standardise the
        observations the networks see (offline use: the dataset's; None = raw observations)."""
        self.cfg, self.device, self.num_envs = cfg, device, num_envs
        self.standardise = obs_stats is not None
        if obs_stats is None:
            obs_stats = (torch.zeros(num_envs, obs_dim), torch.ones(num_envs, obs_dim))
        self.obs_mean, self.obs_std = (t.to(device) for t in obs_stats)
        act_dims = act_dims or [act_dim]
        if len(act_dims) != num_envs:
            raise ValueError(f"act_dims has {len(act_dims)} entries for {num_envs} envs")
        self.env_features = num_envs if num_envs > 1 else 0
        in_dim = obs_dim + self.env_features
        self.actor = TanhGaussianActor(in_dim, act_dim, cfg.hidden).to(device)
        self.critic = EnsembleMLP(cfg.num_critics, in_dim + act_dim, cfg.hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(
            torch.full((num_envs,), float(np.log(cfg.init_alpha)), device=device)
        )
        dims = torch.tensor(act_dims, dtype=torch.float32, device=device)
        self.target_entropy = -cfg.target_entropy_scale * dims  # (K,)
        self.act_masks = (
            torch.arange(act_dim, device=device)[None] < dims[:, None]
        ).float()  # (K, A)
        fused = fused_optimizer(device)
        opts, mins = sac_optimizers(self.actor, self.critic, self.log_alpha, cfg, fused)
        self.actor_opt, self.critic_opt, self.alpha_opt = opts
        self.actor_opt_min, self.critic_opt_min, self.alpha_opt_min = mins
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))

    def inputs(self, obs: torch.Tensor, env_idx: torch.Tensor | None) -> torch.Tensor:
        """(Standardised) observation plus one-hot env id (multi-env only)."""
        if self.standardise:
            env = self._env(obs, env_idx)
            obs = (obs - self.obs_mean[env]) / self.obs_std[env]
        if not self.env_features:
            return obs
        return torch.cat([obs, nn.functional.one_hot(env_idx, self.num_envs).to(obs.dtype)], -1)

    def q_values(self, critic: nn.Module, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return critic(torch.cat([x, act], -1)).squeeze(-1)  # (E, B)

    def _env(self, obs: torch.Tensor, env_idx: torch.Tensor | None) -> torch.Tensor:
        if env_idx is not None:
            return env_idx
        return torch.zeros(len(obs), dtype=torch.int64, device=obs.device)

    def sample_actions(self, obs: torch.Tensor, env_idx: torch.Tensor | None = None):
        """Masked actions and log-probs for raw (padded) observations."""
        return self.actor.sample(self.inputs(obs, env_idx), self.act_masks[self._env(obs, env_idx)])

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor | None = None, *, deterministic: bool = True
    ) -> torch.Tensor:
        if deterministic:
            mean, _ = self.actor(self.inputs(obs, env_idx))
            return torch.tanh(mean) * self.act_masks[self._env(obs, env_idx)]
        return self.sample_actions(obs, env_idx)[0]

    def update(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        terminal: torch.Tensor,
        env_idx: torch.Tensor | None = None,
        bc_rows: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """One critic, actor and alpha step; returns detached tensors (no ``.item()`` here).

        ``bc_rows (B,) bool``: rows whose actions are the data's (for ``cfg.bc_alpha > 0``)."""
        env = self._env(obs, env_idx)
        alpha = self.log_alpha.exp().detach()[env]  # (B,)
        x, next_x = self.inputs(obs, env_idx), self.inputs(next_obs, env_idx)
        mask = self.act_masks[env]
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_x, mask)  # (B, A), (B,)
            next_q = self.q_values(self.critic_target, next_x, next_act).min(0).values  # (B,)
            target = rew + self.cfg.gamma * (1.0 - terminal) * (next_q - alpha * next_logp)
        q = self.q_values(self.critic, x, act * mask)  # (E, B)
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt_min.minimize(critic_loss)

        mean, log_std = self.actor(x)  # one forward: the sample and the BC term share it
        new_act, logp = tanh_gaussian_sample(mean, log_std, mask)
        self.critic.requires_grad_(False)
        q_pi = self.q_values(self.critic, x, new_act).min(0).values  # (B,)
        self.critic.requires_grad_(True)
        actor_loss = (alpha * logp - q_pi).mean()
        extra = {}
        if self.cfg.bc_alpha > 0 and bc_rows is not None and bool(bc_rows.any()):
            real_mask = mask[bc_rows]
            sq = ((torch.tanh(mean[bc_rows]) - act[bc_rows]) * real_mask).pow(2)
            bc_loss = (sq.sum(-1) / real_mask.sum(-1)).mean()
            scale = self.cfg.bc_alpha / q_pi.abs().mean().detach().clamp_min(1e-6)
            actor_loss = scale * actor_loss + bc_loss
            extra["losses/bc"] = bc_loss.detach()
        self.actor_opt_min.minimize(actor_loss)

        alpha_loss = -(self.log_alpha[env] * (logp.detach() + self.target_entropy[env])).mean()
        self.alpha_opt_min.minimize(alpha_loss)

        with torch.no_grad():
            torch._foreach_lerp_(*self._polyak, self.cfg.tau)
        return {
            "losses/critic": critic_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha.mean(),
            "losses/entropy": -logp.detach().mean(),
            "losses/q": q.detach().mean(),
            **extra,
        }

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object, so checkpoints forget nothing."""
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
            "alpha_opt": self.alpha_opt,
        }

    def state_dict(self) -> dict:
        return agent_state(self.modules(), {"log_alpha": self.log_alpha})

    def load_state_dict(self, state: dict) -> None:
        load_agent_state(self.modules(), None, state)
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"].reshape(-1).expand_as(self.log_alpha))
        # checkpoints written without fused Adam carry fused=None in their param groups
        for opt in (self.actor_opt, self.critic_opt, self.alpha_opt):
            for group in opt.param_groups:
                group["fused"] = fused_optimizer(self.device)
        # checkpoints with a single alpha hold a scalar alpha and scalar Adam moments
        for moments in self.alpha_opt.state.values():
            for key in ("exp_avg", "exp_avg_sq"):
                if key in moments and moments[key].shape != self.log_alpha.shape:
                    moments[key] = moments[key].reshape(-1).expand_as(self.log_alpha).clone()
