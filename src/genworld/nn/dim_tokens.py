"""Dimension tokens of the environment-agnostic networks (nn/agnostic.py): a vector's true dims
as a token sequence (value embedding + dimension-id embedding + token-type embedding), two
prefix-masked token sequences packed back to back, and the global average pool over true tokens.
Padded tokens are zero and never counted."""

from __future__ import annotations

import torch
from torch import nn


def masked_mean(tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Global average pool over true tokens only: ``(B, L, H), (B, L) -> (B, H)``."""
    weights = mask.to(tokens.dtype)[..., None]  # (B, L, 1)
    return (tokens * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def pack_tokens(
    first: torch.Tensor, first_mask: torch.Tensor, second: torch.Tensor, second_mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate two prefix-masked sequences so the second's true tokens follow the first's
    true tokens directly (padding of both moves to the end): ``(B, L1, ·), (B, L2, ·) ->
    (B, L1 + L2, ·)`` and the packed mask. Keeps the state-action sequence independent of the
    padding width of the states."""
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

    def forward(self, values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        length = values.shape[1]
        if length > self.max_dims:
            raise ValueError(f"{length} dims exceed the dimension-id table ({self.max_dims})")
        ids = torch.arange(length, device=values.device)  # (L,)
        kind = self.type_embedding.weight[self.token_type]  # (H,)
        tokens = self.value(values[..., None]) + self.dim_id(ids) + kind  # (B, L, H)
        return tokens * mask[..., None]  # (B, L, H)


__all__ = ["DimTokenizer", "masked_mean", "pack_tokens"]
