"""CaDM, the context-aware dynamics model (Lee, Seo, Lee, Lee & Shin 2020, "Context-aware
Dynamics Model for Generalization in Model-Based Reinforcement Learning", ICML): a baseline of
MrCoM's studies (seed 002, §5.1), reimplemented here (its code is TensorFlow 1).

A context encoder reads the K past transitions of the same episode (K = ``history``) and gives
a context vector c (CaDM eq. 3); a forward model predicts ``s_{t+1} − s_t`` and ``r_t`` from
``(s_t, a_t, c)`` (:func:`forward_nll`) and a backward model ``s_t − s_{t+1}`` from
``(s_{t+1}, a_t, c)`` (:func:`backward_nll`, CaDM §3.2: predicting backwards too makes c carry
the dynamics rather than the state); ``L = NLL_forward + β · NLL_backward`` trains the encoder
through both. Observations are normalised per env, differences in units of the observation's
std, rewards by their own statistics.

Deviations (ours: the seed text names CaDM only):
- the encoder is a masked mean of per-transition features ``φ(s, a, s' − s, r)``, then a linear
  map to c, instead of one MLP over the K transitions concatenated: an episode's first steps
  (fewer than K before them) need no padding rule, and the context does not depend on where in
  the K slots a transition sits;
- one model with Gaussian heads (soft-clamped log-variances), not CaDM's probabilistic
  ensemble; several envs through padded dims, per-env masks and an env embedding;
- K = 10 and a 10-dim context are CaDM's; hidden width, depth and β = 1 are ours (one config
  field each).

Rollouts (``encode`` / ``next``) keep the last K + 1 steps in a prompt memory
(:mod:`genworld.world_models.prompt_memory`) and recompute the context at every step.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.mlp import mlp
from genworld.types import EnvSpec, SeqBatch
from genworld.world_models.base import (
    WMStep,
    check_compatible,
    check_finite,
    registry_terminations,
)
from genworld.world_models.prompt_memory import (
    PromptMemory,
    push,
    start_memory,
    with_current_observations,
)
from genworld.world_models.terms import gaussian_nll, masked_mean, soft_clamp


@dataclass(frozen=True)
class CaDMConfig:
    history: int = 10
    """K: past transitions the context encoder reads (CaDM: 10)."""
    context_dim: int = 10
    """Size of the context vector c (CaDM: 10)."""
    hidden: int = 200
    """Width of the encoder's, the forward and the backward model's hidden layers (ours)."""
    layers: int = 3
    """Hidden layers of the forward and the backward model (ours)."""
    env_embed: int = 8
    """Size of the env embedding every network reads (several envs in one model; ours)."""
    backward_weight: float = 1.0
    """β: weight of the backward prediction's NLL (ours)."""

    def validate(self) -> None:
        counts = (self.history, self.context_dim, self.hidden, self.layers, self.env_embed)
        if min(counts) < 1 or not self.backward_weight >= 0:
            raise GenworldError(
                "cadm: history, context_dim, hidden, layers and env_embed must be ≥ 1 and "
                f"backward_weight ≥ 0; got {self}"
            )


def forward_nll(mean, logvar, delta, reward, obs_mask) -> torch.Tensor:
    """CaDM's forward term: −log p(s_{t+1} − s_t, r_t | s_t, a_t, c) up to a constant, over the
    env's real observation dims and the reward (the last output)."""
    target = torch.cat([delta, reward[..., None]], -1)
    mask = torch.cat([obs_mask, torch.ones_like(obs_mask[..., :1])], -1)
    return (gaussian_nll((mean - target).pow(2), logvar) * mask).sum(-1)


def backward_nll(mean, logvar, delta, obs_mask) -> torch.Tensor:
    """CaDM's backward term: −log p(s_t − s_{t+1} | s_{t+1}, a_t, c) up to a constant."""
    return (gaussian_nll((mean + delta).pow(2), logvar) * obs_mask).sum(-1)


class CaDMWorldModel(nn.Module):
    """Meets the :class:`~genworld.world_models.base.WorldModel` contract."""

    def __init__(self, specs: list[EnvSpec], cfg: CaDMConfig, normalizer: Normalizer):
        super().__init__()
        cfg.validate()
        self.specs, self.cfg, self.normalizer = list(specs), cfg, normalizer
        self.obs_max = max(s.obs_dim for s in specs)
        self.act_max = max(s.act_dim for s in specs)
        o, a, h, e = self.obs_max, self.act_max, cfg.hidden, cfg.env_embed
        dims = torch.arange(o)[None] < torch.tensor([s.obs_dim for s in specs])[:, None]
        adims = torch.arange(a)[None] < torch.tensor([s.act_dim for s in specs])[:, None]
        self.register_buffer("obs_masks", dims.float())  # (K, O)
        self.register_buffer("act_masks", adims.float())  # (K, A)
        self.env_embedding = nn.Embedding(len(specs), e)
        self.features = mlp(2 * o + a + 1 + e, [h], h, nn.SiLU)  # φ(s, a, s' − s, r)
        self.to_context = nn.Linear(h, cfg.context_dim)
        inputs = o + a + cfg.context_dim + e
        self.forward_model = mlp(inputs, [h] * cfg.layers, 2 * (o + 1), nn.SiLU)
        self.backward_model = mlp(inputs, [h] * cfg.layers, 2 * o, nn.SiLU)

    # ---------------------------------------------------------------- normalisation
    def _obs(self, obs: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """Normalised observations ``(B, [L,] O)``, zero on padding."""
        norm = self.normalizer
        shape = (len(env),) + (1,) * (obs.dim() - 2) + (self.obs_max,)
        mean, std = norm.obs_mean[env].view(shape), norm.obs_std[env].view(shape)
        return (obs - mean) / std * self.obs_masks[env].view(shape)

    def _reward(self, reward: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        norm = self.normalizer
        shape = (len(env),) + (1,) * (reward.dim() - 1)
        return (reward - norm.reward_mean[env].view(shape)) / norm.reward_std[env].view(shape)

    # ---------------------------------------------------------------- the networks
    def _features(self, obs_n, act, next_n, rew_n, env) -> torch.Tensor:
        """φ of each transition ``(B, L, ·) -> (B, L, hidden)``."""
        e = self.env_embedding(env)[:, None].expand(-1, obs_n.shape[1], -1)
        return self.features(torch.cat([obs_n, act, next_n - obs_n, rew_n[..., None], e], -1))

    def _context(self, phi: torch.Tensor, history: torch.Tensor) -> torch.Tensor:
        """c of each target: the mean of φ over the transitions ``history`` marks, mapped to
        ``context_dim``; ``(B, L, hidden), (B, T, L) -> (B, T, context_dim)`` (no history:
        zero features)."""
        weights = history.float()
        pooled = weights @ phi / weights.sum(-1, keepdim=True).clamp_min(1.0)
        return self.to_context(pooled)

    def _heads(self, net: nn.Module, obs_n, act, context, env, width: int):
        out = net(torch.cat([obs_n, act, context, self.env_embedding(env)], -1))
        mean, logvar = out[..., :width], soft_clamp(out[..., width:])
        return mean, logvar

    # ---------------------------------------------------------------- training
    def sample_batch(
        self, dataset: MultiEnvDataset, batch_size: int, generator: torch.Generator
    ) -> SeqBatch:
        """Windows of K + 1 steps: every valid step a target, the steps before it its history."""
        batch = dataset.sample_windows(batch_size, self.cfg.history + 1, generator)
        check_finite(observations=batch.observations, rewards=batch.rewards)
        return batch

    def loss(self, batch: SeqBatch, generator: torch.Generator | None = None):
        env, valid = batch.env_idx, batch.step_mask.float()  # (B,), (B, L)
        b, length = valid.shape
        mask = self.obs_masks[env][:, None].expand(-1, length, -1)  # (B, L, O)
        act = batch.actions * self.act_masks[env][:, None]
        obs_n, next_n = self._obs(batch.observations, env), self._obs(batch.next_observations, env)
        rew_n = self._reward(batch.rewards, env)
        delta = next_n - obs_n
        # step j's history: the window's valid steps before it (at most K: the window is K + 1)
        before = torch.tril(torch.ones(length, length, device=env.device), -1).bool()  # i < j
        history = before[None] & batch.step_mask[:, None, :]  # (B, L_target, L_history)
        context = self._context(self._features(obs_n, act, next_n, rew_n, env), history)
        env_steps = env[:, None].expand(-1, length)
        o = self.obs_max
        f_mean, f_logvar = self._heads(self.forward_model, obs_n, act, context, env_steps, o + 1)
        b_mean, b_logvar = self._heads(self.backward_model, next_n, act, context, env_steps, o)
        forward = masked_mean(forward_nll(f_mean, f_logvar, delta, rew_n, mask), valid)
        backward = masked_mean(backward_nll(b_mean, b_logvar, delta, mask), valid)
        total = forward + self.cfg.backward_weight * backward
        obs_mse = masked_mean(
            ((f_mean[..., :o] - delta).pow(2) * mask).sum(-1) / mask.sum(-1), valid
        )
        metrics = {
            "wm/forward_nll": forward.detach(),
            "wm/backward_nll": backward.detach(),
            "wm/obs_mse": obs_mse.detach(),
            "wm/reward_mse": masked_mean((f_mean[..., o] - rew_n).pow(2), valid).detach(),
        }
        return total, metrics

    # ---------------------------------------------------------------- imagination
    def encode(
        self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor
    ) -> PromptMemory:
        """The up to K dataset steps before each start state in its episode, then the start."""
        check_compatible(self.specs, dataset)
        return start_memory(
            dataset, env_idx, index, self.cfg.history + 1, self.obs_max, self.act_max
        )

    @torch.no_grad()
    def next(
        self,
        state: PromptMemory,
        observations: torch.Tensor | None,
        actions: torch.Tensor,
        env_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep:
        """Act ``actions (B, act_max)`` in every rollout (the current observations are the
        memory's); ``deterministic``: the Gaussians' means, else samples."""
        memory = state
        env, count = memory.env_idx, memory.count
        b, slots = count.shape[0], memory.observations.shape[1]
        if slots != self.cfg.history + 1:
            raise GenworldError(
                f"the rollout memory has {slots} slots, the model reads history={self.cfg.history} "
                "steps; build it with model.encode(...)"
            )
        rows = torch.arange(b, device=actions.device)
        act_seq = memory.actions.clone()
        act_seq[rows, count - 1] = actions * self.act_masks[env]
        obs_n = self._obs(memory.observations, env)  # (B, K+1, O)
        rew_n = self._reward(memory.prev_rewards, env)  # (B, K+1): the reward into each slot
        history = torch.arange(slots - 1, device=env.device)[None] < (count - 1)[:, None]
        phi = self._features(obs_n[:, :-1], act_seq[:, :-1], obs_n[:, 1:], rew_n[:, 1:], env)
        context = self._context(phi, history[:, None])[:, 0]  # (B, context_dim)
        current = obs_n[rows, count - 1]
        o = self.obs_max
        mean, logvar = self._heads(
            self.forward_model, current, act_seq[rows, count - 1], context, env, o + 1
        )
        std = (0.5 * logvar).exp()
        if not deterministic:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device)
            mean = mean + std * noise
        norm, mask = self.normalizer, self.obs_masks[env]
        next_n = current + mean[:, :o]
        next_obs = (next_n * norm.obs_std[env] + norm.obs_mean[env]) * mask
        reward = mean[:, o] * norm.reward_std[env] + norm.reward_mean[env]
        uncertainty = (std[:, :o] * mask).sum(-1) / mask.sum(-1)
        terminations = registry_terminations(self.specs, next_obs, env)
        return WMStep(
            next_obs, reward, uncertainty, terminations, push(memory, act_seq, next_obs, reward)
        )

    def with_observations(self, state: PromptMemory, observations: torch.Tensor) -> PromptMemory:
        """The memory continuing from ``observations`` (its current slot replaced)."""
        return with_current_observations(state, observations)


__all__ = ["CaDMConfig", "CaDMWorldModel", "backward_nll", "forward_nll"]
