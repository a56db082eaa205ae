"""Behaviour policies: a tanh-Gaussian actor saved as safetensors + a JSON card.

Shipped weights live in ``genworld/assets/policies/<env>-<name>.safetensors`` with a card
``<env>-<name>.json`` (algorithm, steps, seed, evaluated return, recipe), so datasets are
regenerated without retraining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save
from torch import nn

from genworld.errors import GenworldError
from genworld.nn.mlp import mlp
from genworld.utils.io import atomic_write_bytes, atomic_write_json

ASSETS = Path(__file__).parent / "assets" / "policies"
LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0


def mean_and_log_std(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """A network's ``(..., 2A)`` output → mean and log-std ``(..., A)``, the latter soft-clamped
    into [LOG_STD_MIN, LOG_STD_MAX] (as in CleanRL's SAC)."""
    mean, log_std = out.chunk(2, dim=-1)
    log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
    return mean, log_std


def tanh_gaussian_sample(
    mean: torch.Tensor, log_std: torch.Tensor, mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Reparameterised ``tanh(N(mean, std))`` sample ``(..., A)`` and its log-probability
    ``(...)``; ``mask`` (broadcastable to ``(..., A)``) zeroes padded action dims in both."""
    std = log_std.exp()
    pre_tanh = mean + std * torch.randn_like(mean)
    action = torch.tanh(pre_tanh)
    log_prob = -0.5 * ((pre_tanh - mean) / std).pow(2) - log_std - 0.5 * np.log(2 * np.pi)
    # log|det d tanh/dx| = sum log(1 - tanh^2), in the stable form 2(log2 - x - softplus(-2x))
    log_prob = log_prob - 2 * (np.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))
    if mask is not None:
        action, log_prob = action * mask, log_prob * mask
    return action, log_prob.sum(-1)


class TanhGaussianActor(nn.Module):
    """``obs -> (mean, log_std)``; actions are ``tanh`` of a Gaussian sample (SAC, Haarnoja 2018)."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.obs_dim, self.act_dim, self.hidden = obs_dim, act_dim, tuple(hidden)
        self.net = mlp(obs_dim, hidden, 2 * act_dim)

    def forward(self, observations: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return mean_and_log_std(self.net(observations))

    def sample(
        self, observations: torch.Tensor, mask: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised tanh-Gaussian sample and its log-probability ``(B, A), (B,)``.

        ``mask (B, A)``: padded action dims are 0 and add nothing to the log-probability (so the
        entropy is over each env's true action dims, STYLE §4)."""
        return tanh_gaussian_sample(*self(observations), mask)

    def act(
        self,
        observations: np.ndarray,
        *,
        deterministic: bool,
        generator: torch.Generator | None = None,
    ) -> np.ndarray:
        """Batched numpy actions in [-1, 1]; stochastic sampling uses ``generator`` if given.

        The same arithmetic as ``forward`` (bit for bit) without the modules' call overhead: it
        runs once per env step in data collection and evaluation, where a batch of 16 rows makes
        dispatch, not the matmuls, the cost (measured: docs/notes/history.md)."""
        with torch.inference_mode():
            x = torch.from_numpy(np.asarray(observations, dtype=np.float32))
            layers = self.net
            for i in range(0, len(layers) - 1, 2):  # Linear, ReLU pairs
                x = torch.addmm(layers[i].bias, x, layers[i].weight.t()).relu_()
            last = layers[len(layers) - 1]
            mean, log_std = torch.addmm(last.bias, x, last.weight.t()).chunk(2, dim=-1)
            if deterministic:
                return torch.tanh(mean).numpy()
            log_std = LOG_STD_MIN + 0.5 * (LOG_STD_MAX - LOG_STD_MIN) * (torch.tanh(log_std) + 1)
            noise = torch.randn(mean.shape, generator=generator)
            return torch.tanh(mean + log_std.exp() * noise).numpy()


class ConditionedActor:
    """A policy conditioned on a fixed vector (a scenario's parameters) acting on plain
    observations: ``act(obs)`` is ``actor.act([obs, condition])``."""

    def __init__(self, actor: TanhGaussianActor, condition: np.ndarray):
        if actor.obs_dim <= len(condition):
            raise GenworldError(
                f"a policy of {actor.obs_dim} inputs cannot take a {len(condition)}-dim condition"
            )
        self.actor, self.condition = actor, np.asarray(condition, dtype=np.float32)

    def act(self, observations: np.ndarray, **kwargs) -> np.ndarray:
        observations = np.asarray(observations, dtype=np.float32)
        tiled = np.broadcast_to(self.condition, (*observations.shape[:-1], len(self.condition)))
        return self.actor.act(np.concatenate([observations, tiled], axis=-1), **kwargs)


@dataclass(frozen=True)
class PolicyCard:
    """What a shipped policy is and how well it did; stored as JSON next to its weights."""

    env: str
    name: str
    obs_dim: int
    act_dim: int
    algorithm: str
    train_steps: int
    seed: int
    hidden: tuple[int, ...]
    eval_return_mean: float
    eval_return_std: float
    eval_normalized: float
    eval_episodes: int
    eval_mode: str
    extra: dict[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "hidden": list(self.hidden)}


def save_policy(actor: TanhGaussianActor, card: PolicyCard, path_stem: Path) -> None:
    """Atomically write ``<stem>.safetensors`` and ``<stem>.json``."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in actor.state_dict().items()}
    atomic_write_bytes(
        path_stem.with_suffix(".safetensors"), save(tensors, metadata={"env": card.env})
    )
    atomic_write_json(path_stem.with_suffix(".json"), card.to_json())


def load_policy(path_stem: Path) -> tuple[TanhGaussianActor, dict[str, Any]]:
    weights, card_path = path_stem.with_suffix(".safetensors"), path_stem.with_suffix(".json")
    if not weights.exists() or not card_path.exists():
        raise GenworldError(
            f"policy {path_stem.name} not found ({weights} / {card_path}); train it with "
            "`genworld data train-policy`"
        )
    try:
        card = json.loads(card_path.read_text())
        actor = TanhGaussianActor(card["obs_dim"], card["act_dim"], card["hidden"])
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise _corrupt(path_stem, card_path, err) from None
    try:
        actor.load_state_dict(load_file(weights))
    except (OSError, ValueError, KeyError, TypeError, RuntimeError, SafetensorError) as err:
        raise _corrupt(path_stem, weights, err) from None
    actor.eval()
    return actor, card


def _corrupt(path_stem: Path, path: Path, err: Exception) -> GenworldError:
    kind = "a safetensors weights file" if path.suffix == ".safetensors" else "a JSON policy card"
    reason = (str(err).splitlines() or [type(err).__name__])[0]
    return GenworldError(
        f"policy {path_stem.name} is corrupt: {path} is not {kind} ({reason}); "
        "restore it (shipped policies: reinstall genworld) or retrain it with `genworld data "
        "train-policy`"
    )


def shipped_policy_stem(env: str, name: str) -> Path:
    return ASSETS / f"{env}-{name}"
