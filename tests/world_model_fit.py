"""A few optimiser steps of a world model on a dataset, for the tiny "does it fit" tests."""

from __future__ import annotations

import torch


def fit(model, data, steps: int, lr: float = 3e-3, batch: int = 16, seed: int = 0) -> list[float]:
    """``steps`` Adam steps on ``model.loss`` of its own batches; the loss of each step."""
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    g = torch.Generator().manual_seed(seed)
    losses = []
    for _ in range(steps):
        loss, _ = model.loss(model.sample_batch(data, batch, g), g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    return losses
