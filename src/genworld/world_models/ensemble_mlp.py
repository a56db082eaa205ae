"""Reference world model: a per-env probabilistic MLP ensemble (MOPO / MBPO style).

Paper: Yu et al. 2020, "MOPO" §4 and App. (Janner et al. 2019 MBPO model): 7 members, 5 elites
chosen by held-out loss, 4 hidden layers of 200 (Swish), Gaussian over [Δobs, reward] with
learned soft bounds on the log-variance, weight decay. Reference implementation: OfflineRL-Kit
``ensemble_dynamics_model.py``; we read it, we copy nothing.

Multi-env: one ensemble per env (each with its own dims), all members of an env in one batched
matmul. Uncertainty = max over members of the norm of the predicted std (MOPO's ``u(s, a)``);
``disagreement`` = max over member pairs of the distance between their mean next-observation
predictions (MOReL's USAD statistic).

Deviations:
- inputs and targets normalised per env with the dataset's statistics (Normalizer);
- elites are chosen by ``select_elites`` after training on a held-out split (MOPO does it
  during training, every epoch).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.mlp import EnsembleLinear
from genworld.types import Batch, EnvSpec
from genworld.world_models.base import WMStep, check_compatible, check_finite, registry_terminations


@dataclass(frozen=True)
class EnsembleMLPConfig:
    members: int = 7
    """Ensemble size (MOPO: 7)."""
    elites: int = 5
    """Members used for prediction, best held-out loss (MOPO: 5)."""
    hidden: int = 200
    """Width of each hidden layer (MOPO: 200)."""
    layers: int = 4
    """Hidden layers, Swish (SiLU) activations (MOPO: 4)."""
    weight_decay: float = 2.5e-5
    """Coefficient of the L2 penalty (sum of squared weights of every layer) in the loss."""
    logvar_loss_coef: float = 0.01
    """Weight of the soft-bound regulariser on the learned max/min log-variance (MBPO)."""

    def validate(self) -> None:
        if not (1 <= self.elites <= self.members) or self.hidden <= 0 or self.layers <= 0:
            raise GenworldError(
                f"EnsembleMLPConfig: need 1 ≤ elites ({self.elites}) ≤ members ({self.members}), "
                "hidden > 0, layers > 0"
            )


class _EnvEnsemble(nn.Module):
    def __init__(self, members: int, in_dim: int, out_dim: int, hidden: int, layers: int):
        super().__init__()
        dims = [in_dim] + [hidden] * layers
        self.layers = nn.ModuleList(
            EnsembleLinear(members, a, b) for a, b in zip(dims[:-1], dims[1:], strict=True)
        )
        self.out = EnsembleLinear(members, hidden, 2 * out_dim)
        self.max_logvar = nn.Parameter(torch.full((1, 1, out_dim), 0.5))
        self.min_logvar = nn.Parameter(torch.full((1, 1, out_dim), -10.0))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for layer in self.layers:
            x = F.silu(layer(x))
        mean, logvar = self.out(x).chunk(2, -1)  # (E, B, out) each
        logvar = self.max_logvar - F.softplus(self.max_logvar - logvar)
        logvar = self.min_logvar + F.softplus(logvar - self.min_logvar)
        return mean, logvar


class EnsembleMLPWorldModel(nn.Module):
    def __init__(self, specs: list[EnvSpec], cfg: EnsembleMLPConfig, normalizer: Normalizer):
        super().__init__()
        cfg.validate()
        self.cfg, self.specs, self.normalizer = cfg, list(specs), normalizer
        self.obs_max = max(s.obs_dim for s in specs)
        self.act_max = max(s.act_dim for s in specs)
        self.nets = nn.ModuleList(
            _EnvEnsemble(cfg.members, s.obs_dim + s.act_dim, s.obs_dim + 1, cfg.hidden, cfg.layers)
            for s in specs
        )
        self.register_buffer(
            "elite_idx", torch.arange(cfg.elites).repeat(len(specs), 1)
        )  # (K, elites)

    def sample_batch(
        self, dataset: MultiEnvDataset, batch_size: int, generator: torch.Generator
    ) -> Batch:
        batch = dataset.sample_transitions(batch_size, generator)
        check_finite(observations=batch.observations, rewards=batch.rewards)
        return batch

    def _predict(self, k: int, obs: torch.Tensor, act: torch.Tensor):
        """Env ``k``: raw ``obs (n, d)``, ``act (n, a)`` → normalised means/logvars ``(E, n, d+1)``."""
        norm = self.normalizer
        obs_n = (obs - norm.obs_mean[k, : obs.shape[1]]) / norm.obs_std[k, : obs.shape[1]]
        return self.nets[k](torch.cat([obs_n, act], -1))

    def _targets(self, k: int, obs, next_obs, rew) -> torch.Tensor:
        d = obs.shape[1]
        std = self.normalizer.obs_std[k, :d]
        delta = (next_obs - obs) / std
        rew_n = (rew - self.normalizer.reward_mean[k]) / self.normalizer.reward_std[k]
        return torch.cat([delta, rew_n[:, None]], -1)  # (n, d+1)

    def loss(
        self, batch: Batch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]:
        total, mse_sum, count = 0.0, 0.0, 0
        for k, spec in enumerate(self.specs):
            sel = batch.env_idx == k
            if not bool(sel.any()):
                continue
            d, a = spec.obs_dim, spec.act_dim
            obs, next_obs = batch.observations[sel, :d], batch.next_observations[sel, :d]
            mean, logvar = self._predict(k, obs, batch.actions[sel, :a])
            target = self._targets(k, obs, next_obs, batch.rewards[sel])
            err = (mean - target).pow(2)  # (E, n, d+1)
            nll = (err * torch.exp(-logvar) + logvar).mean((1, 2)).sum()
            net = self.nets[k]
            bounds = self.cfg.logvar_loss_coef * (net.max_logvar.sum() - net.min_logvar.sum())
            decay = sum(layer.weight.pow(2).sum() for layer in [*net.layers, net.out])
            total = total + nll + bounds + self.cfg.weight_decay * decay
            mse_sum, count = mse_sum + err.mean().detach() * sel.sum(), count + int(sel.sum())
        return total, {"wm/mse": mse_sum / max(count, 1)}

    @torch.no_grad()
    def select_elites(
        self, dataset: MultiEnvDataset, generator: torch.Generator, n: int = 4096
    ) -> None:
        """Keep the ``elites`` members with the lowest MSE on ``n`` transitions of ``dataset``."""
        batch = dataset.sample_transitions(n, generator)
        for k, spec in enumerate(self.specs):
            sel = batch.env_idx == k
            d, a = spec.obs_dim, spec.act_dim
            obs = batch.observations[sel, :d]
            mean, _ = self._predict(k, obs, batch.actions[sel, :a])
            target = self._targets(k, obs, batch.next_observations[sel, :d], batch.rewards[sel])
            mse = (mean - target).pow(2).mean((1, 2))  # (E,)
            self.elite_idx[k] = mse.argsort()[: self.cfg.elites]

    @torch.no_grad()
    def disagreement(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        env_idx: torch.Tensor,
        members: str = "all",
    ) -> torch.Tensor:
        """MOReL's USAD statistic (Kidambi et al. 2020, practical USAD): per row, the largest
        distance between two members' mean next-observation predictions, in raw observation
        units, ``(B,)``. ``members``: "all" (MOReL: every model of the ensemble) or "elites".

        Reference: mjrl ``projects/morel/run_morel.py`` (max over model pairs of
        ``||pred_i − pred_j||`` on next states)."""
        if members not in ("all", "elites"):
            raise GenworldError(f"members={members!r} is invalid: choose all or elites")
        out = torch.zeros(len(env_idx), device=observations.device)
        for k, spec in enumerate(self.specs):
            sel = torch.nonzero(env_idx == k).flatten()
            if len(sel) == 0:
                continue
            d, a = spec.obs_dim, spec.act_dim
            mean, _ = self._predict(k, observations[sel, :d], actions[sel, :a])  # (E, n, d+1)
            if members == "elites":
                mean = mean[self.elite_idx[k]]
            # next obs_i − next obs_j = (Δ_i − Δ_j) · std: the shared obs cancels
            delta = (mean[..., :d] * self.normalizer.obs_std[k, :d]).transpose(0, 1)  # (n, E, d)
            dist = torch.cdist(delta, delta, compute_mode="donot_use_mm_for_euclid_dist")
            out[sel] = dist.flatten(1).amax(1)  # (n,) max over (E, E) pairs
        return out

    def encode(self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor) -> None:
        check_compatible(self.specs, dataset)
        return None

    @torch.no_grad()
    def next(
        self,
        state,
        observations: torch.Tensor,
        actions: torch.Tensor,
        env_idx: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep:
        b = len(env_idx)
        next_obs = torch.zeros(b, self.obs_max)
        extrinsic, uncertainty = torch.zeros(b), torch.zeros(b)
        for k, spec in enumerate(self.specs):
            sel = torch.nonzero(env_idx == k).flatten()
            if len(sel) == 0:
                continue
            d, a = spec.obs_dim, spec.act_dim
            obs = observations[sel, :d]
            mean, logvar = self._predict(k, obs, actions[sel, :a])
            mean, logvar = mean[self.elite_idx[k]], logvar[self.elite_idx[k]]  # (elites, n, d+1)
            if deterministic:
                pred = mean.mean(0)
            else:
                member = torch.randint(len(mean), (len(sel),), generator=generator)
                rows = torch.arange(len(sel))
                noise = torch.randn(mean.shape[1:], generator=generator)
                pred = mean[member, rows] + (0.5 * logvar[member, rows]).exp() * noise
            std = self.normalizer.obs_std[k, :d]
            next_obs[sel, :d] = obs + pred[:, :d] * std
            extrinsic[sel] = (
                pred[:, d] * self.normalizer.reward_std[k] + self.normalizer.reward_mean[k]
            )
            uncertainty[sel] = (0.5 * logvar).exp().norm(dim=-1).max(0).values  # MOPO u(s, a)
        terminations = registry_terminations(self.specs, next_obs, env_idx)
        return WMStep(
            next_obs,
            extrinsic,
            uncertainty,
            terminations,
            None,
        )
