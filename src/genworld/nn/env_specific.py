"""The Multi-Env Specific Agent's networks: an encoder and a decoder per environment around one
shared middle network, the baseline the agnostic networks (:mod:`genworld.nn.agnostic`) are
compared against.

Paper: Kim & Joo 2023, "Agnostic Architecture for Heterogeneous Multi-Environment Reinforcement
Learning", §4.2 and Fig. 3: "a baseline with specific layers for each environment's input and
output and a shared network in the middle", like Gato's parametrised embeddings. Its weights
grow with every env, and a new env gets new, untrained encoder and decoder layers.

The networks take the same :class:`~genworld.nn.agnostic.Rows` segments and return the same
shapes as :class:`~genworld.nn.agnostic.AgnosticActor` / ``AgnosticCritic``, so agnostic IQL
trains either (``AgnosticIQLConfig.networks``). Env ``k``'s encoder reads only its own true
dims (:class:`~genworld.nn.tokenizers.PerEnvLinear` masks the rest), and its decoder writes
only its own action dims.

Deviations (the seed text gives no sizes for this baseline):
- Each env's encoder and decoder is a two-layer MLP of the agnostic network's width
  (``d_model``; the paper: "Residual MLP" blocks, depth not given); the shared middle is the
  agnostic network's residual MLP (``mlp_depth`` blocks, no task embedding: the per-env layers
  already tell the envs apart).
- A (state, action) critic encodes the state and the action with one per-env layer each,
  summed, before the second layer.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch
from torch import nn
from torch.nn import functional as F

from genworld.nn.agnostic import ResidualMLP, Rows
from genworld.nn.agnostic_layers import AgnosticConfig, zero_padding
from genworld.nn.tokenizers import PerEnvLinear
from genworld.types import EnvSpec


def _padded(x: torch.Tensor, width: int) -> torch.Tensor:
    """``(B, W)`` zero-padded on the right to ``(B, width)``."""
    return F.pad(x, (0, width - x.shape[1]))


class EnvSpecificEncoder(nn.Module):
    """Rows → ``h (B, H)``: env ``k``'s own two-layer encoder, then the shared middle."""

    def __init__(self, cfg: AgnosticConfig, specs: Sequence[EnvSpec], with_actions: bool = False):
        super().__init__()
        k, width = len(specs), cfg.d_model
        self.obs_max = max(s.obs_dim for s in specs)
        self.act_max = max(s.act_dim for s in specs)
        self.obs_in = PerEnvLinear(k, self.obs_max, width, [s.obs_dim for s in specs])
        self.act_in = (
            PerEnvLinear(k, self.act_max, width, [s.act_dim for s in specs])
            if with_actions
            else None
        )
        self.hidden = PerEnvLinear(k, width, width, [width] * k)
        self.middle = ResidualMLP(replace(cfg, num_tasks=0))

    def segments(self, rows: Sequence[Rows]) -> torch.Tensor:
        """``h`` of every row of every segment, segment after segment: ``(B, H)``."""
        env = torch.cat([r.env_idx for r in rows])  # (B,)
        obs = torch.cat([_padded(zero_padding(r.obs, r.obs_mask), self.obs_max) for r in rows])
        x = self.obs_in(obs, env)  # (B, H)
        if self.act_in is not None:
            if any(r.actions is None for r in rows):
                raise ValueError("this encoder reads (state, action) rows: give actions")
            acts = [_padded(zero_padding(r.actions, r.act_mask), self.act_max) for r in rows]
            x = x + self.act_in(torch.cat(acts), env)  # (B, H)
        x = self.hidden(F.gelu(x), env)  # (B, H)
        return self.middle(F.gelu(x), env)  # (B, H)


class EnvSpecificActor(nn.Module):
    """Policy: env ``k``'s encoder, the shared middle, env ``k``'s decoder → per-action-dim
    Gaussian (mean before tanh, log-std), both zero on padding."""

    def __init__(
        self,
        cfg: AgnosticConfig,
        specs: Sequence[EnvSpec],
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
    ):
        super().__init__()
        k, width = len(specs), cfg.d_model
        self.encoder = EnvSpecificEncoder(cfg, specs)
        self.act_max = self.encoder.act_max
        self.decoder_hidden = PerEnvLinear(k, width, width, [width] * k)
        self.decoder_out = PerEnvLinear(k, width, 2 * self.act_max, [width] * k)
        self.log_std_bounds = log_std_bounds

    def segment_gaussians(self, rows: Sequence[Rows]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """``(mean, log-std)`` of every segment, each ``(B_g, A_g)`` (the segment's action
        width: its ``act_mask``'s, or where that is None its ``actions``')."""
        env = torch.cat([r.env_idx for r in rows])  # (B,)
        h = self.decoder_hidden(F.gelu(self.encoder.segments(rows)), env)
        out = self.decoder_out(F.gelu(h), env)  # (B, 2·A_max)
        low, high = self.log_std_bounds
        result = []
        for r, part in zip(rows, out.split([len(r.env_idx) for r in rows]), strict=True):
            width = r.actions.shape[1] if r.act_mask is None else r.act_mask.shape[1]
            mean = part[:, :width]  # (B_g, A_g)
            log_std = part[:, self.act_max : self.act_max + width].clamp(low, high)
            result.append((zero_padding(mean, r.act_mask), zero_padding(log_std, r.act_mask)))
        return result

    def gaussian(self, obs, obs_mask, env_idx, act_mask) -> tuple[torch.Tensor, torch.Tensor]:
        """``(mean, log-std)`` ``(B, A)`` of one segment of rows."""
        return self.segment_gaussians([Rows(obs, obs_mask, env_idx, act_mask=act_mask)])[0]


class EnvSpecificCritic(nn.Module):
    """V(s) (``with_actions=False``) or Q(s, a): env ``k``'s encoder, the shared middle, env
    ``k``'s two-layer decoder to one value."""

    def __init__(self, cfg: AgnosticConfig, specs: Sequence[EnvSpec], with_actions: bool = False):
        super().__init__()
        k, width = len(specs), cfg.d_model
        self.encoder = EnvSpecificEncoder(cfg, specs, with_actions=with_actions)
        self.decoder_hidden = PerEnvLinear(k, width, width, [width] * k)
        self.decoder_out = PerEnvLinear(k, width, 1, [width] * k)

    def segments(self, rows: Sequence[Rows]) -> torch.Tensor:
        """The value of every row of every segment, segment after segment: ``(B,)``."""
        env = torch.cat([r.env_idx for r in rows])  # (B,)
        h = self.decoder_hidden(F.gelu(self.encoder.segments(rows)), env)
        return self.decoder_out(F.gelu(h), env).squeeze(-1)  # (B,)


__all__ = ["EnvSpecificActor", "EnvSpecificCritic", "EnvSpecificEncoder"]
