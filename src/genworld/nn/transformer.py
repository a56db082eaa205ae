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
        computed (keys/values still from all): ``(E, B, 1, D)`` (the rollout fast path, see
        ``_query_forward``; ``attn_mask`` is then that position's key mask ``(B, L)``)."""
        if query_index is not None:  # attn_mask: the query's key mask (B, L)
            return self._query_forward(x, attn_mask, query_index)
        e, b, length, d = x.shape
        inner = self.heads * self.head_dim
        if x.stride(0) == 0:  # tokens shared by all members: normalise once, no copy
            h = self.ln1(x[0].reshape(b * length, d))  # broadcasts to (E, B*L, D)
        else:
            h = self.ln1(x.reshape(e, b * length, d))
        q, k, v = self.qkv(h).reshape(e * b, length, 3, self.heads, self.head_dim).unbind(2)
        q = q.transpose(1, 2)  # (E*B, H, L, dh)
        k, v = k.transpose(1, 2), v.transpose(1, 2)  # (E*B, H, L, dh)
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)  # (E*B, H, Lq, dh)
        att = att.transpose(1, 2).reshape(e, b * length, inner)
        x = x + self.proj(att).reshape(e, b, length, d)
        h = self.ln2(x.reshape(e, b * length, d))
        x = x + self.fc2(F.gelu(self.fc1(h))).reshape(e, b, length, d)
        return x

    def _query_forward(
        self, x: torch.Tensor, key_mask: torch.Tensor, query_index: torch.Tensor
    ) -> torch.Tensor:
        """The block's output at ``query_index (B,)`` only: ``(E, B, 1, D)``; ``key_mask
        (B, L)`` bool marks the keys that position may attend to.

        The same function as ``forward`` at that position, arranged so that imagination never
        forms the window's keys and values (their ``(E, B*L, 2I)`` products and copies would
        dominate a rollout step; measured: docs/notes/history.md). With one query per row,
        ``q·k_l = (W_k q)·LN(x_l)`` and ``Σ_l p_l v_l = W_v^T (Σ_l p_l LN(x_l))``: attention
        needs only the normalised window ``LN(x)`` (shared by all members when the tokens are)
        and per-row ``W_k q`` — ``E·H`` numbers per token instead of ``E·2I``. LayerNorm's
        per-member scale is folded into ``W_k``/``W_v``; its shift and the key bias add
        ``q·const`` to every score of a row (softmax ignores it); the value side's constant is
        added after attention (the weights sum to 1)."""
        e, b, length, d = x.shape
        hs, dh = self.heads, self.head_dim
        inner = hs * dh
        rows = torch.arange(b, device=x.device)
        w, bias = self.qkv.weight, self.qkv.bias  # (E, D, 3I), (E, 1, 3I)
        gamma, beta = self.ln1.weight, self.ln1.bias  # (E, 1, D)
        scale_in = gamma.transpose(1, 2)  # (E, D, 1)
        w_k = (w[..., inner : 2 * inner] * scale_in).view(e, d, hs, dh).permute(0, 2, 1, 3)
        w_v = (w[..., 2 * inner :] * scale_in).view(e, d, hs, dh).permute(0, 2, 1, 3)
        v_const = torch.bmm(beta, w[..., 2 * inner :]) + bias[..., 2 * inner :]  # (E, 1, I)
        x_q = x[:, rows, query_index]  # (E, B, D)
        h_q = F.layer_norm(x_q, (d,)) * gamma + beta
        q = torch.baddbmm(bias[..., :inner], h_q, w[..., :inner])  # (E, B, I)
        q = q.view(e, b, hs, dh).transpose(1, 2) * dh**-0.5  # (E, H, B, dh)
        r = torch.matmul(q, w_k.transpose(-1, -2))  # (E, H, B, D) = W_k q per row and head
        if x.stride(0) == 0:  # tokens shared by all members: one normalised window
            window = F.layer_norm(x[0], (d,))  # (B, L, D)
            scores = torch.bmm(window, r.permute(2, 3, 0, 1).reshape(b, d, e * hs))  # (B,L,EH)
            scores = scores.masked_fill(~key_mask[..., None], float("-inf"))
            mixed = torch.bmm(scores.softmax(1).transpose(1, 2), window)  # (B, EH, D)
            mixed = mixed.view(b, e, hs, d).permute(1, 2, 0, 3)  # (E, H, B, D)
        else:
            window = F.layer_norm(x, (d,)).reshape(e * b, length, d)  # (E*B, L, D)
            r = r.permute(0, 2, 3, 1).reshape(e * b, d, hs)
            scores = torch.bmm(window, r).view(e, b, length, hs)  # (E, B, L, H)
            scores = scores.masked_fill(~key_mask[None, :, :, None], float("-inf"))
            p = scores.softmax(2).view(e * b, length, hs)
            mixed = torch.bmm(p.transpose(1, 2), window)  # (E*B, H, D)
            mixed = mixed.view(e, b, hs, d).transpose(1, 2)  # (E, H, B, D)
        att = torch.matmul(mixed, w_v)  # (E, H, B, dh)
        att = att.permute(0, 2, 1, 3).reshape(e, b, inner) + v_const  # (E, B, I)
        x = x_q + self.proj(att)  # (E, B, D)
        x = x + self.fc2(F.gelu(self.fc1(self.ln2(x))))
        return x[:, :, None]  # (E, B, 1, D)


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
        full = len(self.blocks) - (query_index is not None)  # blocks over every position
        if full:  # (E*B, 1, L, L); the query path's last block needs only its keys
            mask = torch.ones(length, length, dtype=torch.bool, device=tokens.device).tril()
            mask = mask[None, None]
            if valid is not None:
                mask = (mask & _valid_keys(valid, length)[:, None, None]).repeat(e, 1, 1, 1)
            else:
                mask = mask.expand(e * b, 1, length, length)
        x = tokens
        for i, block in enumerate(self.blocks):
            if i < full:
                x = block(x, mask)
            else:
                x = block(x, _query_keys(valid, query_index, length), query_index)
        length = x.shape[2]
        return self.ln_f(x.reshape(e, b * length, d)).reshape(e, b, length, d)


def _valid_keys(valid: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, L)``: padding keys are hidden; key 0 always shows, so a padded query still sees
    one key and no row of scores is all -inf."""
    return valid | (torch.arange(length, device=valid.device) == 0)


def _query_keys(valid: torch.Tensor | None, query_index: torch.Tensor, length: int) -> torch.Tensor:
    """``(B, L)`` keys position ``query_index`` attends to: causal and valid."""
    keys = torch.arange(length, device=query_index.device)[None] <= query_index[:, None]
    return keys & _valid_keys(valid, length) if valid is not None else keys
