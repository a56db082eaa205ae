"""Ensemble critics (``EnsembleMLP`` with one output): every member on many actions per state
in one batched forward (hidden layers optionally in bfloat16), evaluation with detached weights,
CQL's conservative gap, CORL's orthogonal initialisation, and the choice of the hidden precision."""

from __future__ import annotations

import math

import torch
from torch import nn

from genworld.nn.mlp import EnsembleMLP
from genworld.utils.device import fast_cpu_bfloat16


def resolve_ood_dtype(precision: str, device: torch.device) -> torch.dtype:
    """``auto``: bfloat16 where it is fast (CPUs with AMX tiles or AVX512-BF16), else float32."""
    if precision == "auto":
        return torch.bfloat16 if device.type == "cpu" and fast_cpu_bfloat16() else torch.float32
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[precision]


def q_many(
    critic: EnsembleMLP,
    x: torch.Tensor,
    actions: torch.Tensor,
    hidden_dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Every critic on ``M`` actions per state in one batched forward: ``(E, B, M)``.

    ``EnsembleMLP.forward`` with in-place ReLUs: the activations here are ``(E, B*M, H)``
    (16 MB each at batch 256), and a fresh buffer per ReLU costs more than the ReLU.
    ``hidden_dtype`` bfloat16 runs the hidden layers under autocast; the last layer always
    runs in float32, so Q itself is never rounded to bfloat16 (at |Q| ~ 300 that rounding
    is in steps of 2 and would misplace ~40% of the log-sum-exp's soft-max mass)."""
    b, m, _ = actions.shape
    states = x.unsqueeze(1).expand(b, m, x.shape[-1])  # (B, M, D)
    h = torch.cat([states, actions], -1).reshape(1, b * m, -1)  # (1, B*M, D + A)
    *hidden, last = critic.layers
    low = hidden_dtype != torch.float32
    with torch.autocast(x.device.type, dtype=hidden_dtype, enabled=low):
        for layer in hidden:
            h = torch.baddbmm(layer.bias, h.expand(layer.members, -1, -1), layer.weight)
            h = h.relu_()  # (E, B*M, H)
    h = torch.baddbmm(last.bias, h.float().expand(last.members, -1, -1), last.weight)
    return h.view(-1, b, m)


def frozen_critic(critic: EnsembleMLP, x: torch.Tensor) -> torch.Tensor:
    """``critic(x)`` for ``x (B, in)`` with detached weights: gradients reach only ``x``."""
    h = x.unsqueeze(0).expand(critic.layers[0].members, -1, -1)  # (E, B, in)
    last = len(critic.layers) - 1
    for i, layer in enumerate(critic.layers):
        h = torch.baddbmm(layer.bias.detach(), h, layer.weight.detach())  # (E, B, out)
        if i < last:
            h = torch.relu(h)
    return h.squeeze(-1)  # (E, B)


def orthogonal_init(critic: EnsembleMLP) -> None:
    """CORL ``init_module_weights(orthogonal_init=True)``, member by member."""
    last = len(critic.layers) - 1
    with torch.no_grad():
        for i, layer in enumerate(critic.layers):
            for weight in layer.weight:  # (in, out) per member
                nn.init.orthogonal_(weight, gain=1e-2 if i == last else math.sqrt(2))
            layer.bias.zero_()
