"""Action distributions over padded action rows (padded dims are exactly zero and never counted):
tanh-Gaussian samples with their log-probabilities (CQL), and per-row Gaussian (Box envs) or
categorical (Discrete envs: an env's ``n`` choices are its ``n`` action dims) heads with their
log-probabilities, entropies, samples and modes, and PPO's clipped loss on them (PPO)."""

from __future__ import annotations

import math

import torch
from torch import nn

LOG_2 = math.log(2.0)
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def sample_tanh_gaussian(
    mean: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor, n: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` reparameterised tanh-Gaussian samples per row of ``mean, log_std (B, A)``:
    actions ``(B, n, A)`` zero on padded dims and log-probs ``(B, n)`` over real dims only."""
    mean, log_std, mask = mean[:, None], log_std[:, None], mask[:, None]  # (B, 1, A)
    noise = torch.randn(mean.shape[0], n, mean.shape[-1], device=mean.device)  # (B, n, A)
    pre_tanh = mean + log_std.exp() * noise  # (B, n, A)
    log_prob = -0.5 * noise.pow(2) - log_std - HALF_LOG_2PI
    # log|d tanh/dx| = log(1 - tanh^2) = 2 (log 2 - x - softplus(-2x)), the stable form
    log_prob = log_prob - 2 * (LOG_2 - pre_tanh - nn.functional.softplus(-2 * pre_tanh))
    return torch.tanh(pre_tanh) * mask, (log_prob * mask).sum(-1)


def masked_log_prob_entropy(gauss, logits, actions, act_mask, is_discrete):
    """``(B,)`` log-probability of ``actions`` and entropy, over true dims only."""
    logp = torch.zeros(len(actions), device=actions.device)
    entropy = torch.zeros_like(logp)
    mask = act_mask.to(actions.dtype)
    if gauss is not None:
        mean, log_std = gauss
        z = (actions - mean) / log_std.exp()
        lp = ((-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)) * mask).sum(-1)
        ent = ((0.5 + 0.5 * math.log(2 * math.pi) + log_std) * mask).sum(-1)
        logp, entropy = (
            torch.where(is_discrete, logp, lp),
            torch.where(is_discrete, entropy, ent),
        )
    if logits is not None:
        log_p = torch.log_softmax(logits, -1)  # (B, A)
        index = actions[:, :1].long().clamp(0, logits.shape[1] - 1)  # (B, 1)
        lp = log_p.gather(1, index).squeeze(1)
        ent = -(log_p.exp() * log_p * mask).sum(-1)
        logp, entropy = (
            torch.where(is_discrete, lp, logp),
            torch.where(is_discrete, ent, entropy),
        )
    return logp, entropy


def sample_actions(gauss, logits, act_mask, is_discrete, noise, uniform, act_max: int):
    """Actions ``(B, act_max)`` from standard-normal ``noise (B, A)`` (Gaussian rows) or by
    inverse CDF from ``uniform (B, 1)`` (categorical rows: the choice index in column 0)."""
    actions = torch.zeros(len(noise), act_max, device=noise.device)
    if gauss is not None:
        mean, log_std = gauss
        sample = (mean + log_std.exp() * noise) * act_mask
        actions = torch.where(is_discrete[:, None], actions, sample)
    if logits is not None:
        cdf = torch.softmax(logits, -1).cumsum(-1)  # (B, A)
        choice = (cdf < uniform).sum(-1).clamp(max=act_max - 1).float()
        index = torch.zeros_like(actions)
        index[:, 0] = choice
        actions = torch.where(is_discrete[:, None], index, actions)
    return actions


def mode_actions(gauss, logits, act_mask, is_discrete, act_max: int):
    """The most likely actions ``(B, act_max)``: the Gaussian mean clipped to [-1, 1] (zero on
    padded dims) or the arg-max choice in column 0."""
    actions = torch.zeros(len(act_mask), act_max, device=act_mask.device)
    if gauss is not None:
        actions = gauss[0].clamp(-1.0, 1.0) * act_mask
    if logits is not None:
        index = torch.zeros_like(actions)
        index[:, 0] = logits.argmax(-1).float()
        actions = torch.where(is_discrete[:, None], index, actions)
    return actions
