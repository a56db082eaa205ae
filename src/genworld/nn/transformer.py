"""A causal transformer whose every weight has a leading ensemble dimension.

All ``E`` members run in one pass: linear layers are ``EnsembleLinear`` (batched matmuls over the
member axis) and attention is one ``scaled_dot_product_attention`` call over ``(E*B, heads, L, dh)``.
Pre-LayerNorm blocks (GPT-2 style).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genworld.nn.mlp import EnsembleLinear


class EnsembleLayerNorm(nn.Module):
    def __init__(self, members: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(members, 1, dim))
        self.bias = nn.Parameter(torch.zeros(members, 1, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (E, N, D) or shared (N, D)
        """A shared input (the same tokens for every member) is normalised once."""
        return F.layer_norm(x, x.shape[-1:]) * self.weight + self.bias


class EnsembleBlock(nn.Module):
    """Attention width is ``heads * ceil(dim / heads)``, so any head count works with any width
    (d_model 128 with 3 heads → 3 heads of 43 = 129 inner dims, projected back to 128)."""

    def __init__(self, members: int, dim: int, heads: int, mlp_ratio: int = 4):
        super().__init__()
        self.heads, self.head_dim = heads, -(-dim // heads)
        inner = heads * self.head_dim
        self.ln1, self.ln2 = EnsembleLayerNorm(members, dim), EnsembleLayerNorm(members, dim)
        self.qkv = EnsembleLinear(members, dim, 3 * inner)
        self.proj = EnsembleLinear(members, inner, dim)
        self.fc1 = EnsembleLinear(members, dim, mlp_ratio * dim)
        self.fc2 = EnsembleLinear(members, mlp_ratio * dim, dim)

    def forward(
        self, x: torch.Tensor, attn_mask: torch.Tensor, query_index: torch.Tensor | None = None
    ) -> torch.Tensor:
        """``x (E, B, L, D)`` → ``(E, B, L, D)``; with ``query_index (B,)`` only that position is
        computed (keys/values still from all): ``(E, B, 1, D)`` (the rollout fast path)."""
        e, b, length, d = x.shape
        inner = self.heads * self.head_dim
        if x.stride(0) == 0:  # tokens shared by all members: normalise once, no copy
            h = self.ln1(x[0].reshape(b * length, d))  # broadcasts to (E, B*L, D)
        else:
            h = self.ln1(x.reshape(e, b * length, d))
        if query_index is None:
            q, k, v = self.qkv(h).reshape(e * b, length, 3, self.heads, self.head_dim).unbind(2)
            q = q.transpose(1, 2)  # (E*B, H, L, dh)
        else:
            rows = torch.arange(b, device=x.device)
            w, bias = self.qkv.weight, self.qkv.bias  # (E, D, 3I), (E, 1, 3I)
            kv = torch.baddbmm(bias[..., inner:], h, w[..., inner:])  # (E, B*L, 2I)
            k, v = kv.reshape(e * b, length, 2, self.heads, self.head_dim).unbind(2)
            h_q = h.reshape(e, b, length, d)[:, rows, query_index]  # (E, B, D)
            q = torch.baddbmm(bias[..., :inner], h_q, w[..., :inner])  # (E, B, I)
            q = q.reshape(e * b, 1, self.heads, self.head_dim).transpose(1, 2)  # (E*B, H, 1, dh)
            attn_mask = attn_mask.expand(e * b, 1, length, length)[
                torch.arange(e * b, device=x.device), :, query_index.repeat(e)
            ][:, :, None]  # (E*B, 1, 1, L)
            x = x[:, rows, query_index][:, :, None]  # (E, B, 1, D)
            length = 1
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (E*B, H, L, dh)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (E*B, H, Lq, dh)
        att = att.transpose(1, 2).reshape(e, b * length, inner)
        x = x + self.proj(att).reshape(e, b, length, d)
        h = self.ln2(x.reshape(e, b * length, d))
        x = x + self.fc2(F.gelu(self.fc1(h))).reshape(e, b, length, d)
        return x


class EnsembleCausalTransformer(nn.Module):
    """``tokens (B, L, D)`` shared by all members, or ``(E, B, L, D)`` -> ``(E, B, L, D)``."""

    def __init__(self, members: int, dim: int, layers: int, heads: int):
        super().__init__()
        self.members = members
        self.blocks = nn.ModuleList(EnsembleBlock(members, dim, heads) for _ in range(layers))
        self.ln_f = EnsembleLayerNorm(members, dim)

    def forward(
        self,
        tokens: torch.Tensor,
        valid: torch.Tensor | None = None,
        query_index: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``valid (B, L)`` bool marks real tokens (False = padding after the end).
        ``query_index (B,)``: return only that position's output, ``(E, B, 1, D)``."""
        if tokens.dim() == 3:
            tokens = tokens.unsqueeze(0).expand(self.members, -1, -1, -1)
        e, b, length, d = tokens.shape
        causal = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
        mask = causal[None, None]  # (1, 1, L, L)
        if valid is not None:
            # padding keys are hidden; a padded query still sees key 0 so no row is all -inf
            keys = valid[:, None, None, :] | (torch.arange(length, device=tokens.device) == 0)
            mask = (mask & keys).repeat(e, 1, 1, 1)  # (E*B, 1, L, L)
        else:
            mask = mask.expand(e * b, 1, length, length)
        x = tokens
        for i, block in enumerate(self.blocks):
            last = i == len(self.blocks) - 1
            x = block(x, mask, query_index if last else None)
        length = x.shape[2]
        return self.ln_f(x.reshape(e, b * length, d)).reshape(e, b, length, d)
