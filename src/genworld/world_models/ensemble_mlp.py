"""Reference world model: a per-env probabilistic MLP ensemble (MOPO / MBPO style).

Paper: Yu et al. 2020, "MOPO" §4 and App. (Janner et al. 2019 MBPO model): 7 members, 5 elites
chosen by held-out loss, 4 hidden layers of 200 (Swish), Gaussian over [Δobs, reward] with
learned soft bounds on the log-variance, weight decay. Reference implementation: OfflineRL-Kit
``ensemble_dynamics_model.py``; we read it, we copy nothing.

Multi-env: one ensemble per env (each with its own dims), all members of an env in one batched
matmul. Uncertainty = max over all members (not only the elites: MOPO's code and OfflineRL-Kit
take every member) of the norm of the predicted std (MOPO's ``u(s, a)``); ``disagreement`` = max
over member pairs of the distance between their mean next-observation predictions (MOReL's USAD
statistic).

As the references: each member trains on its own minibatches (``sample_batch`` draws
``members`` × the batch, ``loss`` gives each member its share; MBPO draws each member's data
independently), and the elites are the members with the lowest error on held-out transitions
that no member trains on (``split_holdout``: OfflineRL-Kit's 20%, at most 1,000 per env).

Deviations:
- inputs and targets normalised per env with the dataset's statistics (Normalizer);
- elites are chosen by ``select_elites`` at checkpoints and at the end, on the held-out split
  (MOPO does it every epoch, with early stopping on the same split).
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
    holdout_fraction: float = 0.2
    """Share of each env's transitions held out of training to choose the elites on
    (OfflineRL-Kit: 0.2)."""
    holdout_max: int = 1_000
    """At most this many held-out transitions per env (OfflineRL-Kit: 1,000)."""

    def validate(self) -> None:
        if not (1 <= self.elites <= self.members) or self.hidden <= 0 or self.layers <= 0:
            raise GenworldError(
                f"EnsembleMLPConfig: need 1 ≤ elites ({self.elites}) ≤ members ({self.members}), "
                "hidden > 0, layers > 0"
            )
        if not 0 < self.holdout_fraction < 1 or self.holdout_max < 1:
            raise GenworldError(
                f"EnsembleMLPConfig: holdout_fraction must be in (0, 1) and holdout_max ≥ 1, got "
                f"{self.holdout_fraction} and {self.holdout_max}"
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
        """``members`` × ``batch_size`` transitions: a minibatch of its own for every member."""
        batch = dataset.sample_transitions(self.cfg.members * batch_size, generator)
        check_finite(observations=batch.observations, rewards=batch.rewards)
        return batch

    def split_holdout(
        self, dataset: MultiEnvDataset, seed: int
    ) -> tuple[MultiEnvDataset, MultiEnvDataset]:
        """(train, held out): a seeded ``holdout_fraction`` of each env's transitions, at most
        ``holdout_max``, held out to choose the elites on."""
        generator = torch.Generator().manual_seed(seed)
        held = []
        for env in dataset.envs:
            n = min(self.cfg.holdout_max, max(1, int(self.cfg.holdout_fraction * len(env))))
            held.append(torch.randperm(len(env), generator=generator)[:n])
        return dataset.without_rows(held), dataset.rows(held)

    def _predict(self, k: int, obs: torch.Tensor, act: torch.Tensor):
        """Env ``k``: raw ``obs (n, d)``, ``act (n, a)`` (or a batch per member, ``(E, n, ·)``)
        → normalised means/logvars ``(E, n, d+1)``."""
        norm = self.normalizer
        d = obs.shape[-1]
        obs_n = (obs - norm.obs_mean[k, :d]) / norm.obs_std[k, :d]
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
        members = self.cfg.members
        for k, spec in enumerate(self.specs):
            sel = torch.nonzero(batch.env_idx == k).flatten()
            n = len(sel) // members  # rows of env k per member: its own iid draws
            if n == 0:
                continue
            sel = sel[: members * n]
            d, a = spec.obs_dim, spec.act_dim

            def per_member(x: torch.Tensor, n: int = n) -> torch.Tensor:  # (E·n, ·) -> (E, n, ·)
                return x.reshape(members, n, *x.shape[1:])

            obs, next_obs = batch.observations[sel, :d], batch.next_observations[sel, :d]
            mean, logvar = self._predict(k, per_member(obs), per_member(batch.actions[sel, :a]))
            target = self._targets(k, obs, next_obs, batch.rewards[sel])
            err = (mean - per_member(target)).pow(2)  # (E, n, d+1)
            nll = (err * torch.exp(-logvar) + logvar).mean((1, 2)).sum()
            net = self.nets[k]
            bounds = self.cfg.logvar_loss_coef * (net.max_logvar.sum() - net.min_logvar.sum())
            decay = sum(layer.weight.pow(2).sum() for layer in [*net.layers, net.out])
            total = total + nll + bounds + self.cfg.weight_decay * decay
            mse_sum, count = mse_sum + err.mean().detach() * len(sel), count + len(sel)
        return total, {"wm/mse": mse_sum / max(count, 1)}

    @torch.no_grad()
    def select_elites(self, held_out: MultiEnvDataset) -> None:
        """Keep the ``elites`` members with the lowest MSE on every transition of ``held_out``
        (:meth:`split_holdout`)."""
        check_compatible(self.specs, held_out)
        for k, env in enumerate(held_out.envs):
            obs = env.observations
            mean, _ = self._predict(k, obs, env.actions)
            target = self._targets(k, obs, env.next_observations, env.rewards)
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

    def with_observations(self, state: None, observations: torch.Tensor) -> None:
        """No state: each step reads its input observations."""
        return None

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
            # MOPO's u(s, a): the largest predicted std over every member
            uncertainty[sel] = (0.5 * logvar).exp().norm(dim=-1).max(0).values
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
        terminations = registry_terminations(self.specs, next_obs, env_idx)
        return WMStep(
            next_obs,
            extrinsic,
            uncertainty,
            terminations,
            None,
        )
