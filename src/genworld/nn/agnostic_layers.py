"""The building blocks of the environment-agnostic networks (:mod:`genworld.nn.agnostic`): their
config and per-scale sizes, the sequence blocks along a state's dimensions (S4D, or the Bi-GRU
ablation), batch-first attention and pre-norm transformer layers over the tokens of width groups
laid back to back (:class:`~genworld.nn.dim_tokens.Layout`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from genworld.errors import GenworldError
from genworld.nn.dim_tokens import Layout
from genworld.nn.s4d import S4DBlock


@dataclass(frozen=True)
class AgnosticConfig:
    """Sizes of one agnostic network (paper Table 2b: 256/256/2/256/1/2/256/2)."""

    d_model: int = 256
    """Token width H."""
    d_state: int = 256
    """S4D state size N (N/2 complex modes per channel, as the reference)."""
    s4_layers: int = 2
    """S4D blocks after the value embedding (the 'dynamic feature embedding')."""
    sequence_layer: str = "s4d"
    """The state encoder's ``s4_layers`` blocks: s4d, or bigru (the paper's Bi-GRU ablation of
    the encoder, §4.3: a bidirectional GRU over the true tokens)."""
    transformer_layers: int = 2
    """Transformer encoder (state) / decoder (actions) layers."""
    n_heads: int = 1
    """Attention heads per transformer layer; must divide d_model (paper Table 2b: 1)."""
    dim_feedforward: int = 256
    """Hidden width of each transformer layer's feed-forward block (paper Table 2b: 256)."""
    mlp_hidden: int = 256
    """Hidden width of the residual MLP blocks."""
    mlp_depth: int = 2
    """Residual MLP blocks."""
    dropout: float = 0.0
    """Dropout in every block (paper 0.1; 0 keeps DDP and resume checks bit-comparable)."""
    num_tasks: int = 0
    """Task-embedding table size (env index); 0 = no task embedding (fully agnostic)."""


NET_PRESETS: dict[str, dict] = {
    # tiny: unit tests and smoke runs, seconds on CPU
    "tiny": {
        "d_model": 16,
        "d_state": 8,
        "s4_layers": 1,
        "transformer_layers": 1,
        "dim_feedforward": 32,
        "mlp_hidden": 32,
        "mlp_depth": 1,
    },
    # mini: a CPU-sized network
    "mini": {
        "d_model": 64,
        "d_state": 64,
        "s4_layers": 1,
        "transformer_layers": 1,
        "dim_feedforward": 128,
        "mlp_hidden": 128,
    },
    # full: the paper's Table 2b network (the AgnosticConfig defaults) with its dropout 0.1
    "full": {"dropout": 0.1},
}
"""AgnosticConfig overrides per scale, shared by the agnostic algorithms' presets."""


def zero_padding(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """``x (B, L, ...)`` or ``(T, ...)`` with the tokens where ``mask`` (``(B, L)`` or ``(T,)``)
    is False set to zero; ``x`` itself where the mask is None (every token true: unpadded)."""
    if mask is None:
        return x
    return x * mask.view(*mask.shape, *([1] * (x.dim() - mask.dim())))


def s4_blocks(cfg: AgnosticConfig) -> nn.ModuleList:
    return nn.ModuleList(
        S4DBlock(cfg.d_model, cfg.d_state, cfg.dropout) for _ in range(cfg.s4_layers)
    )


SEQUENCE_LAYERS = ("s4d", "bigru")


def encoder_blocks(cfg: AgnosticConfig) -> nn.ModuleList:
    """The state encoder's sequence blocks: S4D, or (the ablation) bidirectional GRUs."""
    if cfg.sequence_layer not in SEQUENCE_LAYERS:
        raise GenworldError(
            f"sequence_layer {cfg.sequence_layer!r}: choose from {', '.join(SEQUENCE_LAYERS)}"
        )
    if cfg.sequence_layer == "s4d":
        return s4_blocks(cfg)
    return nn.ModuleList(BiGRUBlock(cfg.d_model, cfg.dropout) for _ in range(cfg.s4_layers))


class BiGRUBlock(nn.Module):
    """Pre-norm residual bidirectional GRU along the tokens (the paper's Bi-GRU ablation of the
    encoder): each true token reads the true tokens on both sides; the padded ones (after the
    true ones: a prefix ``mask``) are packed away and come out zero."""

    def __init__(self, d_model: int, dropout: float):
        super().__init__()
        self.norm = nn.LayerNorm(d_model)
        self.gru = nn.GRU(d_model, d_model // 2, batch_first=True, bidirectional=True)
        self.out = nn.Linear(2 * (d_model // 2), d_model)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, layout: Layout, mask: torch.Tensor | None) -> torch.Tensor:
        """``x (T, H)`` laid out by ``layout``, ``mask (T,)`` or None (every token true)."""
        parts = layout.split(self.norm(x))  # (B_g, L_g, H) each
        masks = layout.split_masks(mask)
        y = layout.join([self.bigru(part, m) for part, m in zip(parts, masks, strict=True)])
        return zero_padding(x + self.dropout(self.out(y)), mask)  # (T, H)

    def bigru(self, x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

        if mask is None:  # every token true: nothing to pack away
            return self.gru(x)[0]
        lengths = mask.sum(1).clamp_min(1).cpu()
        packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
        return pad_packed_sequence(self.gru(packed)[0], batch_first=True, total_length=x.shape[1])[
            0
        ]


class Attention(nn.Module):
    """Multi-head attention of query sequences over key/value sequences whose ``key_mask`` is
    True on true tokens, batch-first throughout (torch's ``nn.MultiheadAttention`` works
    sequence-first and copies the packed q/k/v three times per layer, a sizeable share of an
    agnostic IQL update on CPU; measured: docs/notes/history.md)."""

    def __init__(self, d_model: int, n_heads: int, dropout: float):
        super().__init__()
        if d_model % n_heads:
            raise ValueError(f"d_model {d_model} is not divisible by n_heads {n_heads}")
        self.heads, self.dropout = n_heads, dropout
        self.q = nn.Linear(d_model, d_model)
        self.kv = nn.Linear(d_model, 2 * d_model)
        self.out = nn.Linear(d_model, d_model)
        # torch's MultiheadAttention init: Xavier-uniform over the packed (3d, d) in-projection,
        # zero in-projection and output biases
        bound = math.sqrt(6.0 / (4 * d_model))
        for layer in (self.q, self.kv):
            nn.init.uniform_(layer.weight, -bound, bound)
            nn.init.zeros_(layer.bias)
        nn.init.zeros_(self.out.bias)

    def forward(
        self,
        x: torch.Tensor,
        layout: Layout,
        memory: torch.Tensor,
        memory_layout: Layout,
        key_mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Queries ``x (Tq, H)`` laid out by ``layout`` attend to ``memory (Tk, H)`` laid out by
        ``memory_layout`` (segment by segment: the same rows); ``key_mask (Tk,)``, None: every
        key is true."""
        d = x.shape[-1]
        weight, bias = self.kv.weight, self.kv.bias
        # keys and values from the two halves of the kv weights: each comes out contiguous, not
        # as strided views of one (Tk, 2H) output that attention would copy (and its backward
        # copy again)
        k = memory_layout.split(F.linear(memory, weight[:d], bias[:d]))  # (B_g, Lk_g, H) each
        v = memory_layout.split(F.linear(memory, weight[d:], bias[d:]))
        q = layout.split(self.q(x))  # (B_g, Lq_g, H) each
        masks = memory_layout.split_masks(key_mask)
        y = layout.join(
            [
                self.attend(*segment)
                for segment in zip(q, k, v, masks, strict=True)  # one segment at a time
            ]
        )  # (Tq, H)
        return self.out(y)

    def attend(self, q, k, v, key_mask) -> torch.Tensor:
        """``(B, Lq, H), (B, Lk, H), (B, Lk, H), (B, Lk) or None -> (B, Lq, H)``."""
        (b, lq, d), lk, h = q.shape, k.shape[1], self.heads
        y = F.scaled_dot_product_attention(
            q.view(b, lq, h, d // h).transpose(1, 2),  # (B, h, Lq, d/h)
            k.view(b, lk, h, d // h).transpose(1, 2),  # (B, h, Lk, d/h)
            v.view(b, lk, h, d // h).transpose(1, 2),
            attn_mask=None if key_mask is None else key_mask[:, None, None, :],  # True: attend
            dropout_p=self.dropout if self.training else 0.0,
        )  # (B, h, Lq, d/h)
        return y.transpose(1, 2).reshape(b, lq, d)


class TransformerLayer(nn.Module):
    """Pre-norm transformer layer with GELU feed-forward: self-attention over the true tokens,
    then (``cross=True``, the decoder) attention to a memory sequence, then the feed-forward;
    the same maths as torch's ``TransformerEncoderLayer`` / ``TransformerDecoderLayer`` with
    ``norm_first=True, activation="gelu"``."""

    def __init__(self, cfg: AgnosticConfig, cross: bool = False):
        super().__init__()
        d = cfg.d_model
        self.norm_self, self.self_attn = nn.LayerNorm(d), Attention(d, cfg.n_heads, cfg.dropout)
        self.norm_cross = nn.LayerNorm(d) if cross else None
        self.cross_attn = Attention(d, cfg.n_heads, cfg.dropout) if cross else None
        self.norm_ff = nn.LayerNorm(d)
        self.ff = nn.Sequential(
            nn.Linear(d, cfg.dim_feedforward),
            nn.GELU(),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.dim_feedforward, d),
        )
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: torch.Tensor,
        layout: Layout,
        mask: torch.Tensor | None,
        memory: tuple[torch.Tensor, Layout, torch.Tensor | None] | None = None,
    ) -> torch.Tensor:
        """``x (T, H)`` laid out by ``layout``; ``memory``: (tokens, layout, mask) for the
        cross-attention. Masks (``(T,)``) are True on true tokens; None: every token is true."""
        y = self.norm_self(x)
        x = x + self.drop(self.self_attn(y, layout, y, layout, mask))
        if self.cross_attn is not None and self.norm_cross is not None:
            if memory is None:
                raise ValueError("a decoder layer needs the memory sequence")
            x = x + self.drop(self.cross_attn(self.norm_cross(x), layout, *memory))
        return x + self.drop(self.ff(self.norm_ff(x)))


def transformer_layers(cfg: AgnosticConfig, cross: bool = False) -> nn.ModuleList:
    """``cfg.transformer_layers`` pre-norm GELU layers (``cross``: decoder layers)."""
    return nn.ModuleList(TransformerLayer(cfg, cross) for _ in range(cfg.transformer_layers))


class SequenceEncoder(nn.Module):
    """Tokens ``(T, H)`` → S4D blocks → transformer encoder layers (padded keys ignored)."""

    def __init__(self, cfg: AgnosticConfig):
        super().__init__()
        self.s4 = encoder_blocks(cfg)
        self.layers = transformer_layers(cfg)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, tokens: torch.Tensor, layout: Layout, mask: torch.Tensor | None):
        for block in self.s4:
            tokens = block(tokens, layout, mask)  # (T, H)
        for layer in self.layers:
            tokens = zero_padding(layer(tokens, layout, mask), mask)  # (T, H)
        return zero_padding(self.norm(tokens), mask)  # (T, H)
