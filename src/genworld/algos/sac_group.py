"""K independent SACs — one per env — trained as one vectorised ensemble.

MBPO's ``per_env`` policies (one SAC per env, all in the same world model) run as a Python
loop of K small SAC updates, each on its env's ~B/K rows of the batch, would pay K times the
per-update overhead (measured: docs/notes/history.md). Here env ``k``'s actor is member ``k`` of an
ensemble actor and its twin critics are members ``(k, 0), (k, 1)`` of an ensemble critic, so
one update runs every env's SAC with batched matmuls (``torch.baddbmm``) on a padded
``(K, rows, ·)`` layout of the batch.

The maths is :class:`genworld.algos.sac.SAC`'s, env by env: each env's losses are means over its
own rows (padding rows have weight 0), each env has its own alpha, target entropy ``-scale ·
act_dim_k`` and observation statistics, and the members share no parameters, so each env's
gradients are exactly its own SAC's (tested against K separate SACs with the same weights).

Deviations from K separate SACs:
- the sampling noise is drawn once for the padded batch (a different random stream);
- an env with no rows in a batch still takes an Adam step with zero gradients (its moments
  decay); a loop of separate SACs skips it. With balanced rollouts and ``B ≫ K`` this does not
  happen.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from genworld.algos.sac import SAC, SACConfig, sac_optimizers
from genworld.nn.mlp import EnsembleMLP
from genworld.policies import mean_and_log_std, tanh_gaussian_sample
from genworld.utils.device import fused_optimizer


def env_layout(env_idx: torch.Tensor, num_envs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows grouped by env: ``index (K, n)`` (row numbers, env k's rows in their order, padded
    with 0) and ``valid (K, n)`` bool, ``n`` = the largest env's row count (at least 1)."""
    counts = torch.bincount(env_idx, minlength=num_envs)  # (K,)
    order = torch.argsort(env_idx, stable=True)  # rows sorted by env, each env's in order
    starts = torch.cumsum(counts, 0) - counts  # (K,)
    width = max(int(counts.max()), 1) if len(env_idx) else 1
    slot = torch.arange(width, device=env_idx.device)  # (n,)
    valid = slot[None] < counts[:, None]  # (K, n)
    pos = (starts[:, None] + slot[None]).clamp(max=max(len(env_idx) - 1, 0))  # (K, n)
    index = torch.where(valid, order[pos] if len(env_idx) else pos, 0)
    return index, valid


class EnsembleTanhGaussianActor(nn.Module):
    """K tanh-Gaussian actors (``TanhGaussianActor``'s maths): ``(K, n, in) -> (K, n, A)``."""

    def __init__(self, members: int, obs_dim: int, act_dim: int, hidden):
        super().__init__()
        self.net = EnsembleMLP(members, obs_dim, hidden, 2 * act_dim)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_and_log_std(self.net(x))

    def sample(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return tanh_gaussian_sample(*self(x), mask)


class SACGroup:
    """One SAC per env of a padded multi-env batch, updated together (see the module doc)."""

    def __init__(
        self,
        obs_dim: int,
        act_dim: int,
        cfg: SACConfig,
        device: torch.device,
        act_dims: list[int],
        obs_stats: tuple[torch.Tensor, torch.Tensor],
    ):
        """``obs_stats``: per-env ``(mean, std)``, each ``(K, obs_dim)``, standardising what each
        env's networks see (padded dims: mean 0, std 1)."""
        self.cfg, self.device, self.num_envs = cfg, device, len(act_dims)
        k, c = self.num_envs, cfg.num_critics
        self.obs_mean, self.obs_std = (t.to(device)[:, None, :] for t in obs_stats)  # (K, 1, O)
        self.actor = EnsembleTanhGaussianActor(k, obs_dim, act_dim, cfg.hidden).to(device)
        self.critic = EnsembleMLP(k * c, obs_dim + act_dim, cfg.hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.log_alpha = nn.Parameter(
            torch.full((k,), float(np.log(cfg.init_alpha)), device=device)
        )
        dims = torch.tensor(act_dims, dtype=torch.float32, device=device)
        self.target_entropy = -cfg.target_entropy_scale * dims  # (K,)
        self.act_masks = (torch.arange(act_dim, device=device)[None] < dims[:, None]).float()
        fused = fused_optimizer(device)
        opts, mins = sac_optimizers(self.actor, self.critic, self.log_alpha, cfg, fused)
        self.actor_opt, self.critic_opt, self.alpha_opt = opts
        self.actor_opt_min, self.critic_opt_min, self.alpha_opt_min = mins
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))

    # ------------------------------------------------------------------ helpers
    def _x(self, obs: torch.Tensor) -> torch.Tensor:
        """``(K, n, O)`` raw padded observations → what env k's networks see."""
        return (obs - self.obs_mean) / self.obs_std

    def _q(self, critic: EnsembleMLP, x: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``(K, n, ·)`` inputs → Q ``(K, C, n)`` of each env's C critics."""
        k, n = x.shape[:2]
        inputs = torch.cat([x, act], -1)  # (K, n, O + A)
        inputs = inputs[:, None].expand(k, self.cfg.num_critics, n, inputs.shape[-1])
        out = critic(inputs.reshape(k * self.cfg.num_critics, n, -1))  # (K*C, n, 1)
        return out.view(k, self.cfg.num_critics, n)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        """``(B, O)`` padded observations of any envs → ``(B, A)`` masked actions."""
        index, valid = env_layout(env_idx, self.num_envs)
        x, mask = self._x(obs[index]), self.act_masks[:, None, :]  # (K, n, O), (K, 1, A)
        if deterministic:
            mean, _ = self.actor(x)
            grouped = torch.tanh(mean) * mask
        else:
            grouped = self.actor.sample(x, mask)[0]
        actions = torch.zeros(len(obs), mask.shape[-1], device=obs.device)
        actions[index[valid]] = grouped[valid]
        return actions

    # ------------------------------------------------------------------ learning
    def update(
        self,
        obs: torch.Tensor,
        act: torch.Tensor,
        rew: torch.Tensor,
        next_obs: torch.Tensor,
        terminal: torch.Tensor,
        env_idx: torch.Tensor,
        bc_rows: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Every env's critic, actor and alpha step on its rows of the batch; returns the mean
        over the envs present of each env's (detached) loss."""
        cfg = self.cfg
        index, valid = env_layout(env_idx, self.num_envs)  # (K, n)
        counts = valid.sum(1)  # (K,)
        present = counts > 0
        weight = valid / counts.clamp_min(1)[:, None]  # (K, n): a mean over each env's rows
        x, next_x = self._x(obs[index]), self._x(next_obs[index])  # (K, n, O)
        rew, terminal, act = rew[index], terminal[index], act[index]
        mask = self.act_masks[:, None, :]  # (K, 1, A)
        alpha = self.log_alpha.exp().detach()[:, None]  # (K, 1)
        with torch.no_grad():
            next_act, next_logp = self.actor.sample(next_x, mask)  # (K, n, A), (K, n)
            next_q = self._q(self.critic_target, next_x, next_act).min(1).values  # (K, n)
            target = rew + cfg.gamma * (1.0 - terminal) * (next_q - alpha * next_logp)
        q = self._q(self.critic, x, act * mask)  # (K, C, n)
        critic_losses = ((q - target[:, None]).pow(2) * weight[:, None]).sum((1, 2))  # (K,)
        self.critic_opt_min.minimize(critic_losses.sum())

        mean, log_std = self.actor(x)  # one forward: the sample and the BC term share it
        new_act, logp = tanh_gaussian_sample(mean, log_std, mask)  # (K, n, A), (K, n)
        self.critic.requires_grad_(False)
        q_pi = self._q(self.critic, x, new_act).min(1).values  # (K, n)
        self.critic.requires_grad_(True)
        actor_losses = ((alpha * logp - q_pi) * weight).sum(1)  # (K,)
        extra = {}
        if cfg.bc_alpha > 0 and bc_rows is not None:
            real = bc_rows[index] & valid  # (K, n)
            n_real = real.sum(1)  # (K,)
            sq = ((torch.tanh(mean) - act) * mask).pow(2).sum(-1) / mask.sum(-1)  # (K, n)
            bc_losses = (sq * real).sum(1) / n_real.clamp_min(1)  # (K,)
            scale = cfg.bc_alpha / (q_pi.abs() * weight).sum(1).detach().clamp_min(1e-6)
            with_bc = n_real > 0  # an env without real rows this batch: plain SAC (as SAC does)
            actor_losses = torch.where(with_bc, scale * actor_losses + bc_losses, actor_losses)
            if bool(with_bc.any()):
                extra["losses/bc"] = bc_losses.detach()[with_bc].mean()
        self.actor_opt_min.minimize(actor_losses.sum())

        entropy_gap = logp.detach() + self.target_entropy[:, None]  # (K, n)
        alpha_loss = -(self.log_alpha[:, None] * entropy_gap * weight).sum()
        self.alpha_opt_min.minimize(alpha_loss)

        with torch.no_grad():
            torch._foreach_lerp_(*self._polyak, cfg.tau)
        q_means = (q.detach().mean(1) * weight).sum(1)  # (K,)
        entropies = -(logp.detach() * weight).sum(1)  # (K,)
        return {
            "losses/critic": critic_losses.detach()[present].mean(),
            "losses/actor": actor_losses.detach()[present].mean(),
            "losses/alpha": alpha[:, 0][present].mean(),
            "losses/entropy": entropies[present].mean(),
            "losses/q": q_means[present].mean(),
            **extra,
        }

    # ------------------------------------------------------------------ checkpoints
    # SAC's stateful objects under the same names, so the checkpoint layout is SAC's
    modules = SAC.modules
    state_dict = SAC.state_dict
    load_state_dict = SAC.load_state_dict
