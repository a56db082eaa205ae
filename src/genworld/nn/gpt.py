"""A GPT: causal self-attention, pre-LayerNorm blocks, configurable dropout; and the same blocks
without the causal mask as a bidirectional (BERT-style) encoder that pools a sequence into one
vector.

The block follows minGPT / CORL ``dt.py`` (``TransformerBlock``): ``x + drop(attn(ln1(x)))`` then
``x + drop(mlp(ln2(x)))`` with a 4x GELU MLP; attention weights get their own dropout. Attention
is one ``torch.nn.functional.scaled_dot_product_attention`` call with a boolean mask (True = may
attend) that combines causality with an optional key-validity mask.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from genworld.nn.tokenizers import PerEnvLinear


class CausalSelfAttention(nn.Module):
    def __init__(self, dim: int, heads: int, attention_dropout: float, residual_dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embedding dim {dim} is not divisible by {heads} heads")
        self.heads, self.attention_dropout = heads, attention_dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(residual_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x (B, L, D)``, ``mask (B|1, 1, L, L)`` bool → ``(B, L, D)``."""
        b, length, d = x.shape
        q, k, v = self.qkv(x).reshape(b, length, 3, self.heads, d // self.heads).unbind(2)
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (B, H, L, dh)
        p = self.attention_dropout if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)  # (B, H, L, dh)
        return self.drop(self.proj(out.transpose(1, 2).reshape(b, length, d)))  # (B, L, D)


class GPTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, attention_dropout: float, residual_dropout: float):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attention = CausalSelfAttention(dim, heads, attention_dropout, residual_dropout)
        self.mlp = nn.Sequential(
            nn.Linear(dim, 4 * dim),
            nn.GELU(),
            nn.Linear(4 * dim, dim),
            nn.Dropout(residual_dropout),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.attention(self.ln1(x), mask)  # (B, L, D)
        return x + self.mlp(self.ln2(x))  # (B, L, D)


class GPT(nn.Module):
    """``tokens (B, L, D)`` → ``(B, L, D)``; output ``i`` depends only on tokens ``≤ i``
    (``causal=False``: on every token, as in BERT).

    ``valid (B, L)`` bool hides invalid keys (padding inside the sequence). Every query may always
    attend to itself, so a padded query never has an all-masked row (no NaN); its output is
    meaningless and must be masked by the caller.
    """

    def __init__(
        self,
        dim: int,
        layers: int,
        heads: int,
        attention_dropout: float = 0.0,
        residual_dropout: float = 0.0,
        causal: bool = True,
    ):
        super().__init__()
        self.causal = causal
        self.blocks = nn.ModuleList(
            GPTBlock(dim, heads, attention_dropout, residual_dropout) for _ in range(layers)
        )
        self.ln_f = nn.LayerNorm(dim)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        length = tokens.shape[1]
        mask = torch.ones(length, length, dtype=torch.bool, device=tokens.device)
        mask = (mask.tril() if self.causal else mask)[None, None]  # (1, 1, L, L)
        if valid is not None:
            self_only = torch.eye(length, dtype=torch.bool, device=tokens.device)
            mask = mask & (valid[:, None, None, :] | self_only)  # (B, 1, L, L)
        x = tokens
        for block in self.blocks:
            x = block(x, mask)
        return self.ln_f(x)  # (B, L, D)


class BidirectionalEncoder(nn.Module):
    """``tokens (B, L, D)`` with ``valid (B, L)`` → one summary vector ``(B, D)``.

    BERT's pooling: a learned summary token ([CLS]) is put in front and every token attends to
    every valid token, earlier or later; the summary token's output is the encoding. An input
    with no valid token encodes to the summary token alone (the same vector for every row).
    """

    def __init__(self, dim: int, layers: int, heads: int, dropout: float = 0.0):
        super().__init__()
        self.summary = nn.Parameter(torch.zeros(dim))
        nn.init.normal_(self.summary, mean=0.0, std=0.02)
        self.transformer = GPT(dim, layers, heads, dropout, dropout, causal=False)

    def forward(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        return self.outputs(tokens, valid)[:, 0]  # (B, D)

    def outputs(self, tokens: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Every position's output ``(B, 1 + L, D)``: the summary's first, then each token's."""
        b, _, d = tokens.shape
        summary = self.summary.expand(b, 1, d)  # (B, 1, D)
        x = torch.cat([summary, tokens], dim=1)  # (B, 1 + L, D)
        always = torch.ones(b, 1, dtype=torch.bool, device=tokens.device)
        return self.transformer(x, torch.cat([always, valid], dim=1))


def init_weights(module: nn.Module) -> None:
    """CORL ``DecisionTransformer._init_weights``: N(0, 0.02) weights, zero biases (for
    ``module.apply``); per-env projections alike."""
    if isinstance(module, (nn.Linear, nn.Embedding, PerEnvLinear)):
        nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if getattr(module, "bias", None) is not None:
            nn.init.zeros_(module.bias)
