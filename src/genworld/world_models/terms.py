"""TGW's eq. 8 terms as functions: Gaussian NLL / MSE per element, targets in per-env normalised
units, soft-clamped log-variances, the previous-reward inputs of a window, the stochastic state's
KL between posterior and prior (with DreamerV3's balancing and free bits); and the intrinsic
reward ``ri`` of a rollout step (eq. 4 and our variants). Used by ``TGWWorldModel``'s loss,
reward fine-tuning, forward pass and rollout step (world_models/tgw.py); the KL terms also by
MrCoM and the RSSM."""

from __future__ import annotations

import torch
from torch.nn import functional as F

LOGVAR_MIN, LOGVAR_MAX = -10.0, 4.0


def gaussian_nll(squared_error: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """Elementwise Gaussian negative log-likelihood up to a constant (eq. 8's terms)."""
    return 0.5 * (squared_error * torch.exp(-logvar) + logvar)


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """The mean of ``values`` over the entries ``mask`` marks (0 when none)."""
    return (values * mask).sum() / mask.sum().clamp_min(1)


def likelihood_term(squared_error: torch.Tensor, logvar: torch.Tensor, kind: str) -> torch.Tensor:
    """The per-element loss of ``TGWConfig.loss``: ``nll`` (eq. 8) or ``mse``."""
    return gaussian_nll(squared_error, logvar) if kind == "nll" else squared_error


def normalised(
    values: torch.Tensor, env_idx: torch.Tensor, mean: torch.Tensor, std: torch.Tensor
) -> torch.Tensor:
    """Windows ``(B, L)`` or ``(B, L, D)`` of raw values in their env's normalised units
    (``mean`` / ``std``: ``(K,)`` or ``(K, D)`` per env)."""
    return (values - mean[env_idx][:, None]) / std[env_idx][:, None]


def soft_clamp(logvar: torch.Tensor) -> torch.Tensor:
    """Smoothly keep log-variances inside [LOGVAR_MIN, LOGVAR_MAX] (as in MBPO's max/min logvar)."""
    logvar = LOGVAR_MAX - F.softplus(LOGVAR_MAX - logvar)
    return LOGVAR_MIN + F.softplus(logvar - LOGVAR_MIN)


def gaussian_kl(
    mean_q: torch.Tensor, logstd_q: torch.Tensor, mean_p: torch.Tensor, logstd_p: torch.Tensor
) -> torch.Tensor:
    """KL(q || p) of diagonal Gaussians, summed over the last (latent) dim."""
    var_q, var_p = (2 * logstd_q).exp(), (2 * logstd_p).exp()
    kl = logstd_p - logstd_q + (var_q + (mean_q - mean_p).pow(2)) / (2 * var_p) - 0.5
    return kl.sum(-1)


def categorical_kl(logprobs_q: torch.Tensor, logprobs_p: torch.Tensor) -> torch.Tensor:
    """KL(q || p) of independent categoricals given as log-probabilities ``(..., variables,
    classes)``, summed over the variables and classes (DreamerV3's discrete latents)."""
    return (logprobs_q.exp() * (logprobs_q - logprobs_p)).sum((-2, -1))


def balanced_kl(
    post: tuple[torch.Tensor, ...],
    prior: tuple[torch.Tensor, ...],
    dyn_scale: float,
    rep_scale: float,
    free_nats: float,
    kl=gaussian_kl,
) -> tuple[torch.Tensor, torch.Tensor]:
    """DreamerV3's KL balancing with free bits (Hafner et al. 2023, eq. 5): the dynamics term
    KL(sg(q) || p) trains the prior, the representation term KL(q || sg(p)) the posterior, each
    clipped below at ``free_nats``; returns (weighted loss, raw KL), both per position.
    ``post`` / ``prior``: the parameters ``kl`` takes for each side, (mean, log-std) for
    :func:`gaussian_kl` (the default) or (log-probabilities,) for :func:`categorical_kl`."""
    detached = lambda params: tuple(t.detach() for t in params)  # noqa: E731
    dyn = kl(*detached(post), *prior)
    rep = kl(*post, *detached(prior))
    loss = dyn_scale * dyn.clamp_min(free_nats) + rep_scale * rep.clamp_min(free_nats)
    return loss, dyn.detach()


def previous(rewards: torch.Tensor) -> torch.Tensor:
    """``prev[:, j] = rewards[:, j-1]``, 0 at j = 0 (the window's first token carries none)."""
    return F.pad(rewards[:, :-1], (1, 0))


def intrinsic_reward(
    kind: str,
    s: torch.Tensor,
    obs_mean: torch.Tensor,
    rew_mean: torch.Tensor,
    obs_mask: torch.Tensor,
    reward_std: torch.Tensor,
) -> torch.Tensor:
    """``ri (B,)`` from the members' outputs ``s (E, B, D)``, ``obs_mean (E, B, obs_max)``
    (normalised) and ``rew_mean (E, B)`` (normalised), per ``kind`` (``TGWConfig.intrinsic``);
    ``reward_std (B,)``: the reward std of each row's env."""
    if kind == "state":
        return s.var(0, unbiased=False).mean(-1)  # eq. 4
    if kind == "observation":
        return (obs_mean.var(0, unbiased=False) * obs_mask).sum(-1) / obs_mask.sum(-1)
    # "reward": the members' spread of the predicted reward, in the env's reward units
    return rew_mean.std(0, unbiased=False) * reward_std


__all__ = [
    "LOGVAR_MAX",
    "LOGVAR_MIN",
    "balanced_kl",
    "categorical_kl",
    "gaussian_kl",
    "gaussian_nll",
    "intrinsic_reward",
    "likelihood_term",
    "normalised",
    "previous",
    "soft_clamp",
]
