"""Dimension tokens of the environment-agnostic networks (nn/agnostic.py): a vector's true dims
as a token sequence (value embedding + dimension-id embedding + token-type embedding), two
prefix-masked token sequences packed back to back, the global average pool over true tokens,
and the :class:`Layout` that stores sequences of several lengths back to back. Padded tokens
are zero and never counted. A mask of None means every token is true (an unpadded batch, as
agnostic IQL's width groups): the same maths without the masking passes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class Layout:
    """Token sequences of a few lengths stored back to back as one ``(T, ...)`` tensor: segment
    ``g`` holds ``rows[g]`` sequences of ``lengths[g]`` tokens each, row after row. Agnostic
    IQL's width groups are the segments, so every per-token layer runs once over all of them
    and only the per-sequence steps (convolution, attention, pooling) go segment by segment; a
    padded batch is one segment."""

    rows: tuple[int, ...]
    lengths: tuple[int, ...]

    @staticmethod
    def of(parts: Sequence[torch.Tensor]) -> Layout:
        """The layout of per-segment ``(B_g, L_g, ...)`` tensors."""
        return Layout(tuple(p.shape[0] for p in parts), tuple(p.shape[1] for p in parts))

    @property
    def sizes(self) -> list[int]:
        """Tokens per segment."""
        return [rows * length for rows, length in zip(self.rows, self.lengths, strict=True)]

    def split(self, x: torch.Tensor) -> list[torch.Tensor]:
        """``(T, ...)`` → one ``(B_g, L_g, ...)`` view per segment."""
        parts = x.split(self.sizes) if len(self.rows) > 1 else [x]
        return [
            part.unflatten(0, (rows, length))
            for part, rows, length in zip(parts, self.rows, self.lengths, strict=True)
        ]

    def join(self, parts: Sequence[torch.Tensor]) -> torch.Tensor:
        """One ``(B_g, L_g, ...)`` tensor per segment → ``(T, ...)``."""
        flat = [part.flatten(0, 1) for part in parts]
        return flat[0] if len(flat) == 1 else torch.cat(flat)

    def join_masks(self, masks: Sequence[torch.Tensor | None]) -> torch.Tensor | None:
        """Per-segment masks ``(B_g, L_g)`` (None: all true) → ``(T,)``, None if all are."""
        device = next((mask.device for mask in masks if mask is not None), None)
        if device is None:
            return None
        return self.join(
            [
                torch.ones(rows, length, dtype=torch.bool, device=device) if mask is None else mask
                for mask, rows, length in zip(masks, self.rows, self.lengths, strict=True)
            ]
        )

    def split_masks(self, mask: torch.Tensor | None) -> list[torch.Tensor | None]:
        """``(T,)`` → one ``(B_g, L_g)`` mask per segment (None stays None)."""
        return [None] * len(self.rows) if mask is None else self.split(mask)


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Global average pool over true tokens only: ``(B, L, H), (B, L) -> (B, H)``."""
    if mask is None:
        return tokens.mean(1)
    weights = mask.to(tokens.dtype)[..., None]  # (B, L, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def pool(tokens: torch.Tensor, layout: Layout, mask: torch.Tensor | None) -> torch.Tensor:
    """:func:`masked_mean` of every sequence of ``tokens (T, H)``: ``(rows, H)``, segment after
    segment."""
    pooled = [
        masked_mean(part, part_mask)
        for part, part_mask in zip(layout.split(tokens), layout.split_masks(mask), strict=True)
    ]
    return pooled[0] if len(pooled) == 1 else torch.cat(pooled)


def full_mask(tokens: torch.Tensor) -> torch.Tensor:
    """The all-true mask ``(B, L)`` of an unpadded ``(B, L, ...)`` sequence."""
    return torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)


def pack_tokens(
    first: torch.Tensor,
    first_mask: torch.Tensor | None,
    second: torch.Tensor,
    second_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Concatenate two prefix-masked sequences so the second's true tokens follow the first's
    true tokens directly (padding of both moves to the end): ``(B, L1, ·), (B, L2, ·) ->
    (B, L1 + L2, ·)`` and the packed mask. Keeps the state-action sequence independent of the
    padding width of the states. Two unpadded sequences are simply concatenated."""
    if first_mask is None and second_mask is None:
        return torch.cat([first, second], 1), None  # (B, L1+L2, ...)
    first_mask = full_mask(first) if first_mask is None else first_mask
    second_mask = full_mask(second) if second_mask is None else second_mask
    values = torch.cat([first, second], 1)  # (B, L1+L2, ...)
    mask = torch.cat([first_mask, second_mask], 1)  # (B, L1+L2)
    total = mask.shape[1]
    index = torch.arange(total, device=mask.device).expand_as(mask)  # (B, L1+L2)
    true_first = first_mask.sum(1, keepdim=True)  # (B, 1)
    position = torch.where(
        index < first.shape[1], index, index - first.shape[1] + true_first
    )  # true tokens: packed position
    key = torch.where(mask, position, total + index)  # padded tokens after every true one
    order = key.argsort(1)  # (B, L1+L2)
    gather = order.view(*order.shape, *([1] * (values.dim() - 2))).expand_as(values)
    return values.gather(1, gather), mask.gather(1, order)


class DimTokenizer(nn.Module):
    """Scalars ``(B, L)`` → tokens ``(B, L, H)``: value embedding (the S4 example model's
    ``Linear(1, H)`` encoder) + dimension-id embedding + token-type embedding."""

    def __init__(self, d_model: int, max_dims: int, token_type: int, num_types: int = 2):
        super().__init__()
        self.value = nn.Linear(1, d_model)
        self.dim_id = nn.Embedding(max_dims, d_model)
        self.token_type = token_type
        self.type_embedding = nn.Embedding(num_types, d_model)
        self.max_dims = max_dims

    def forward(self, values: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        length = values.shape[1]
        if length > self.max_dims:
            raise ValueError(f"{length} dims exceed the dimension-id table ({self.max_dims})")
        kind = self.type_embedding.weight[self.token_type]  # (H,)
        # value * w + (b + dim_id + type), written as one pass over the tokens: Linear(1, H)
        # is a rank-1 product, and the other terms depend on the position only
        offset = self.value.bias + self.dim_id.weight[:length] + kind  # (L, H)
        tokens = torch.addcmul(offset, values[..., None], self.value.weight[:, 0])  # (B, L, H)
        return tokens if mask is None else tokens * mask[..., None]  # (B, L, H)


__all__ = ["DimTokenizer", "Layout", "full_mask", "masked_mean", "pack_tokens", "pool"]
