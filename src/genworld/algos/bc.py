"""Behaviour cloning: the floor every offline method must clear.

Reference: Pomerleau 1991; the BC of CORL ``any_percent_bc.py`` (MSE to dataset actions, tanh
output, 256×256 MLP, lr 1e-3? CORL uses 3e-4; we use 1e-3 with batch 256 — see Deviations).

Multi-env: one network over padded, per-env normalised observations plus a one-hot env id; the
loss only covers each env's true action dims (``act_mask``); actions for padded dims are zero.

Deviations:
- lr 1e-3 (CORL: 3e-4) to converge within the mini budget; observations normalised per env.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genworld.algos.registry import AlgoContext, resolve_config
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.nn.mlp import mlp
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer


@dataclass(frozen=True)
class BCConfig:
    hidden: tuple[int, ...] = (256, 256)
    """Hidden layer sizes of the actor MLP (CORL: 256x256)."""
    lr: float = 1e-3
    """Adam learning rate (CORL: 3e-4; 1e-3 converges within the mini budget)."""
    batch_size: int = 256
    """Transitions per update, over all envs (CORL: 256)."""


PRESETS = {"tiny": {"hidden": (32, 32), "batch_size": 32}}


def build(ctx: AlgoContext) -> BC:
    return BC(ctx.dataset, ctx.normalizer, resolve_config(BCConfig, PRESETS, ctx), ctx.device)


class BC:
    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: BCConfig,
        device: torch.device,
    ):
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.num_envs, self.normalizer = dataset.num_envs, normalizer.to(device)
        obs_max, act_max = dataset.obs_max, dataset.act_max
        act_dims = [s.act_dim for s in dataset.specs]
        self.actor = mlp(obs_max + self.num_envs, cfg.hidden, act_max).to(device)
        self.opt = torch.optim.Adam(
            self.actor.parameters(), lr=cfg.lr, fused=fused_optimizer(device)
        )
        self.opt_min = Minimizer(self.opt)
        dims = torch.tensor(act_dims, device=device)
        self.act_masks = (torch.arange(act_max, device=device)[None] < dims[:, None]).float()

    def _forward(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        x = self.normalizer.normalize_obs(obs, env_idx)
        x = torch.cat([x, nn.functional.one_hot(env_idx, self.num_envs).to(x.dtype)], -1)
        return torch.tanh(self.actor(x)) * self.act_masks[env_idx]

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.dataset.sample_transitions(self.cfg.batch_size, generator).to(self.device)
        pred = self._forward(batch.observations, batch.env_idx)
        mask = batch.act_mask.float()
        loss = ((pred - batch.actions).pow(2) * mask).sum() / mask.sum()
        self.opt_min.minimize(loss)
        return {"losses/bc_mse": loss.detach()}

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        return self._forward(obs, env_idx)

    def state_dict(self) -> dict:
        return {
            "actor": self.actor.state_dict(),
            "opt": self.opt.state_dict(),
            "normalizer": self.normalizer.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.actor.load_state_dict(state["actor"])
        self.opt.load_state_dict(state["opt"])
        self.normalizer.load_state_dict(state["normalizer"])
