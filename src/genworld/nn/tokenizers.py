"""Per-environment tokenizers: each env's raw observation/action → one shared token space.

Every env ``k`` owns a projection ``W_k (obs_max, D)`` whose rows beyond its own ``obs_dim`` are
never used: the input is multiplied by the env's mask before the projection, so whatever sits in
padded columns has no effect on the token (tested in tests/test_tgw.py).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch
from torch import nn
from torch.nn import functional as F

from genworld.errors import GenworldError
from genworld.nn.mlp import EnsembleMLP


class PerEnvLinear(nn.Module):
    """``x (B, ..., in_max)`` with ``env_idx (B,)`` → ``(B, ..., out)`` with env ``k``'s own weights."""

    def __init__(self, num_envs: int, in_max: int, out_dim: int, in_dims: list[int]):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_envs, in_max, out_dim))
        self.bias = nn.Parameter(torch.zeros(num_envs, out_dim))
        mask = torch.zeros(num_envs, in_max)
        for k, d in enumerate(in_dims):
            mask[k, :d] = 1.0
            bound = 1.0 / math.sqrt(d)
            nn.init.uniform_(self.weight.data[k], -bound, bound)
        self.register_buffer("mask", mask)

    def forward(self, x: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        b, middle = x.shape[0], x.shape[1:-1]
        x = x.reshape(b, -1, x.shape[-1]) * self.mask[env_idx][:, None]  # padding never leaks in
        out = torch.baddbmm(self.bias[env_idx][:, None], x, self.weight[env_idx])  # (B, N, out)
        return out.reshape(b, *middle, -1)


class PerEnvHead(nn.Module):
    """Shared features ``(..., H)`` → env-specific outputs ``(..., out_max)``, zero on padding.

    Computes all envs' outputs with one matmul and gathers each sample's own (cheap for the
    handful of envs of a suite). ``env_idx`` must broadcast to ``h.shape[:-1]``.
    """

    def __init__(self, num_envs: int, in_dim: int, out_max: int, out_dims: list[int]):
        super().__init__()
        self.num_envs, self.out_max = num_envs, out_max
        self.linear = nn.Linear(in_dim, num_envs * out_max)
        mask = torch.zeros(num_envs, out_max)
        for k, d in enumerate(out_dims):
            mask[k, :d] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, h: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        out = self.linear(h).unflatten(-1, (self.num_envs, self.out_max))  # (..., K, out_max)
        index = env_idx.expand(h.shape[:-1])[..., None, None].expand(*h.shape[:-1], 1, self.out_max)
        return out.gather(-2, index).squeeze(-2) * self.mask[env_idx]  # (..., out_max)


class EnsemblePerEnvHead(nn.Module):
    """Member-specific features ``(E, ..., in)`` → env-specific outputs ``(E, ..., groups, out_max)``
    through an MLP per member (one batched computation), zero on padding.

    Each member owns its whole MLP, hidden layers and output layer (``groups`` output vectors per
    env, e.g. mean and log-variance), so members can disagree wherever the data does not pin them
    down. ``env_idx`` must broadcast to ``h.shape[:-1]``. ``activation``: between the MLP's three
    layers (SiLU unless given).
    """

    def __init__(
        self,
        members: int,
        num_envs: int,
        in_dim: int,
        hidden: int,
        out_max: int,
        out_dims: list[int],
        groups: int = 1,
        activation=F.silu,
    ):
        super().__init__()
        self.num_envs, self.out_max, self.groups = num_envs, out_max, groups
        self.mlp = EnsembleMLP(
            members, in_dim, [hidden, hidden], num_envs * groups * out_max, activation=activation
        )
        mask = torch.zeros(num_envs, out_max)
        for k, d in enumerate(out_dims):
            mask[k, :d] = 1.0
        self.register_buffer("mask", mask)

    def forward(self, h: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        lead = h.shape[:-1]  # (E, ...)
        out = self.mlp(h.reshape(lead[0], -1, h.shape[-1]))  # (E, N, K·G·out_max)
        out = out.reshape(*lead, self.num_envs, self.groups * self.out_max)
        width = self.groups * self.out_max
        index = env_idx.expand(lead)[..., None, None].expand(*lead, 1, width)
        out = out.gather(-2, index).squeeze(-2).unflatten(-1, (self.groups, self.out_max))
        return out * self.mask[env_idx.expand(lead)][..., None, :]  # (E, ..., G, out_max)


class TrajectoryEmbedding(nn.Module):
    """Each step's ``(R_t, s_t, a_t)`` → 3 tokens; timestep and env embeddings added to each
    (the Decision Transformer's input, :mod:`genworld.algos.dt`). ``dataset``: anything with
    ``num_envs``, ``specs`` (each with ``obs_dim``, ``act_dim``), ``obs_max`` and ``act_max``.

    ``order`` sets the tokens' order within a step: ``"rsa"`` (DT: return-to-go, state, action)
    or ``"sar"`` (state, action, then the step's reward: CMT, :mod:`genworld.algos.cmt`); the
    scalar token ``r`` is whatever the caller passes as ``rtg``."""

    def __init__(self, dataset, dim: int, max_timestep: int, order: str = "rsa"):
        super().__init__()
        if sorted(order) != ["a", "r", "s"]:
            raise ValueError(f"order {order!r} must be a permutation of 'rsa'")
        n, specs = dataset.num_envs, dataset.specs
        self.max_timestep, self.order = max_timestep, order
        self.state = PerEnvLinear(n, dataset.obs_max, dim, [s.obs_dim for s in specs])
        self.action = PerEnvLinear(n, dataset.act_max, dim, [s.act_dim for s in specs])
        self.returns = nn.Linear(1, dim)
        self.timestep = nn.Embedding(max_timestep, dim)
        self.env = nn.Embedding(n, dim)

    def forward(self, obs, act, rtg, timesteps, env_idx) -> torch.Tensor:
        b, length = rtg.shape
        time = self.timestep(timesteps.clamp(0, self.max_timestep - 1))  # (B, L, D)
        time = time + self.env(env_idx)[:, None]  # (B, L, D)
        tokens = {
            "r": self.returns(rtg[..., None]) + time,  # (B, L, D)
            "s": self.state(obs, env_idx) + time,  # (B, L, D)
            "a": self.action(act, env_idx) + time,  # (B, L, D)
        }
        stacked = torch.stack([tokens[kind] for kind in self.order], dim=2)  # (B, L, 3, D)
        return stacked.reshape(b, 3 * length, -1)  # (B, 3L, D)


def shared_view(dataset) -> SimpleNamespace:
    """A one-env view of ``dataset``'s tasks of one robot, for parameters shared across them."""
    dims = {(s.obs_dim, s.act_dim) for s in dataset.specs}
    if len(dims) > 1:
        raise GenworldError(
            f"shared_params needs one robot, got (obs, act) dims {sorted(dims)}; "
            "use shared_params=False for envs of different sizes"
        )
    return SimpleNamespace(
        num_envs=1, specs=dataset.specs[:1], obs_max=dataset.obs_max, act_max=dataset.act_max
    )
