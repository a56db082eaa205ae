"""Soft Actor-Critic (online), used to train behaviour policies and, later, inside world models.

Paper: Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and Applications" (auto-tuned alpha,
twin Q). Reference implementation: CleanRL ``sac_continuous_action.py`` (hyper-parameters below
match it: lr 3e-4, batch 256, gamma 0.99, tau 0.005, 5k random warm-up steps, target entropy
-|A|).

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

from genworld.nn.mlp import EnsembleMLP
from genworld.policies import TanhGaussianActor


@dataclass(frozen=True)
class SACConfig:
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the actor and of each critic."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    alpha_lr: float = 3e-4
    batch_size: int = 256
    num_critics: int = 2
    """Critics in the ensemble; the target is the minimum over them."""
    init_alpha: float = 1.0
    target_entropy_scale: float = 1.0
    """Target entropy = -scale * action dim."""


class SAC:
    """Twin-critic SAC over flat (unpadded) observations and actions of one env."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: SACConfig, device: torch.device):
        self.cfg, self.device = cfg, device
        self.actor = TanhGaussianActor(obs_dim, act_dim, cfg.hidden).to(device)
        self.critic = EnsembleMLP(cfg.num_critics, obs_dim + act_dim, cfg.hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(torch.tensor(np.log(cfg.init_alpha), device=device))
        self.target_entropy = -cfg.target_entropy_scale * act_dim
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr)
        self.alpha_opt = torch.optim.Adam([self.log_alpha], lr=cfg.alpha_lr)

    def q_values(self, critic: nn.Module, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        return critic(torch.cat([obs, act], -1)).squeeze(-1)  # (E, B)

    def update(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        terminal: torch.Tensor,
    ) -> dict[str, torch.Tensor]:
        """One critic, actor and alpha step; returns detached tensors (no ``.item()`` here)."""
        alpha = self.log_alpha.exp().detach()
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_obs)  # (B, A), (B,)
            next_q = self.q_values(self.critic_target, next_obs, next_act).min(0).values  # (B,)
            target = rew + self.cfg.gamma * (1.0 - terminal) * (next_q - alpha * next_logp)
        q = self.q_values(self.critic, obs, act)  # (E, B)
        critic_loss = (q - target).pow(2).mean(1).sum()
        self.critic_opt.zero_grad(set_to_none=True)
        critic_loss.backward()
        self.critic_opt.step()

        new_act, logp = self.actor.sample(obs)
        self.critic.requires_grad_(False)
        q_pi = self.q_values(self.critic, obs, new_act).min(0).values  # (B,)
        self.critic.requires_grad_(True)
        actor_loss = (alpha * logp - q_pi).mean()
        self.actor_opt.zero_grad(set_to_none=True)
        actor_loss.backward()
        self.actor_opt.step()

        alpha_loss = -(self.log_alpha * (logp.detach() + self.target_entropy)).mean()
        self.alpha_opt.zero_grad(set_to_none=True)
        alpha_loss.backward()
        self.alpha_opt.step()

        with torch.no_grad():
            for p, tp in zip(
                self.critic.parameters(), self.critic_target.parameters(), strict=True
            ):
                tp.lerp_(p, self.cfg.tau)
        return {
            "losses/critic": critic_loss.detach(),
            "losses/actor": actor_loss.detach(),
            "losses/alpha": alpha.detach(),
            "losses/entropy": -logp.detach().mean(),
            "losses/q": q.detach().mean(),
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
        state = {name: m.state_dict() for name, m in self.modules().items()}
        state["log_alpha"] = self.log_alpha.detach().clone()
        return state

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.modules().items():
            m.load_state_dict(state[name])
        with torch.no_grad():
            self.log_alpha.copy_(state["log_alpha"])
