"""Ensemble-disagreement intrinsic reward (Pathak, Gandhi & Gupta 2019, "Self-Supervised
Exploration via Disagreement"): an exploration agent's reward, with no task reward at all.

An ensemble of forward models predicts the change of the observation from (observation,
action); each member is trained on its own minibatch of the agent's replay (eq. 1 of the paper:
members differ by initialisation and data), and the reward of a transition is the members'
variance of that prediction, averaged over the observation's dimensions (eq. 2), divided by a
running mean of itself (our choice, so that the reward is about 1 a step, a task reward's scale,
whatever the robot; the paper leaves the scale to its agent). Where the
agent has been often the members agree and the reward fades, so the agent keeps moving to what
it has not seen: the reward-free, non-expert data WPT (seed 004, §4) pre-trains on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from genworld.nn.mlp import EnsembleMLP
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer


@dataclass(frozen=True)
class DisagreementConfig:
    members: int = 5
    """Forward models in the ensemble (the paper uses 5)."""
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer widths of each forward model."""
    lr: float = 3e-4
    """Adam learning rate of the forward models."""
    batch_size: int = 256
    """Transitions per member per update (each member draws its own)."""


class Disagreement:
    """The forward-model ensemble and its variance reward (module docstring)."""

    def __init__(self, obs_dim: int, act_dim: int, cfg: DisagreementConfig, device):
        self.cfg, self.device = cfg, device
        self.model = EnsembleMLP(cfg.members, obs_dim + act_dim, cfg.hidden, obs_dim).to(device)
        self.optimizer = torch.optim.Adam(
            self.model.parameters(), lr=cfg.lr, fused=fused_optimizer(device)
        )
        self.opt = Minimizer(self.optimizer)
        self.scale = torch.zeros((), device=device)
        """Running mean of the raw disagreement (the reward's unit); 0 until the first batch."""

    def predict(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Every member's predicted observation change: ``(B, ·) -> (E, B, obs_dim)``, or
        ``(E, B, ·) -> (E, B, obs_dim)`` with a batch per member."""
        return self.model(torch.cat([obs, act], dim=-1))

    def forward_loss(self, obs, act, next_obs) -> torch.Tensor:
        """Eq. 1: each member's squared error on its own batch ``(E, B, ·)``, summed over
        members."""
        error = self.predict(obs, act) - (next_obs - obs)
        return error.pow(2).mean(dim=(1, 2)).sum()

    SCALE_RATE = 0.01
    """Weight of each batch in the running mean of the raw disagreement."""

    def reward(self, obs: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """Eq. 2: the members' variance of the prediction, averaged over dimensions ``(B,)``,
        in units of its running mean (updated with this batch)."""
        with torch.no_grad():
            raw = self.predict(obs, act).var(dim=0).mean(dim=-1)
            rate = self.SCALE_RATE if bool(self.scale > 0) else 1.0  # the first batch sets it
            self.scale.lerp_(raw.mean(), rate)
            return raw / self.scale.clamp_min(1e-8)

    def update(self, buffer, rng: np.random.Generator) -> dict[str, float]:
        """One step of every member on its own minibatch drawn from ``buffer`` (a replay with
        ``data`` arrays and ``size``)."""
        n = min(buffer.size, buffer.capacity)
        idx = rng.integers(0, n, size=(self.cfg.members, self.cfg.batch_size))
        obs, act, next_obs = (
            torch.as_tensor(buffer.data[k][idx], device=self.device)
            for k in ("observations", "actions", "next_observations")
        )
        loss = self.forward_loss(obs, act, next_obs)
        self.opt.minimize(loss)
        return {"forward_loss": loss.detach()}

    def state_dict(self) -> dict:
        return {
            "model": self.model.state_dict(),
            "opt": self.optimizer.state_dict(),
            "scale": self.scale.clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["opt"])
        self.scale.copy_(state["scale"])
