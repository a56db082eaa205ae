"""Beam-search planning (Trajectory Transformer) with CMT's generator as the model, used once to
relabel a fixed subset of dataset states with better actions (:mod:`genworld.algos.cmt`, §4.1
"Improvement Stage").

:func:`beam_search` follows TT's ``beam_plan`` (jannerm/trajectory-transformer
``trajectory/search/core.py``, commit 3b7654a5): at every step of the horizon each kept
sequence is expanded into ``expand`` candidate actions, stepped through the model (reward, next
state, value), scored by its discounted rewards so far plus the discounted value after its last
step, and the ``beam`` best sequences of each start are kept.
The answer is the first action of each start's best sequence. Every start is planned in the
same batched forward passes.

The model is anything with the three verbs of :class:`PlanningModel`; :class:`GeneratorModel`
is CMT's generator A_g, conditioned on a fixed prompt z.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any, Protocol

import torch

from genworld.algos.cmt_config import CMTConfig
from genworld.algos.cmt_model import CMTNet
from genworld.data.normalization import Normalizer


class PlanningModel(Protocol):
    """What :func:`beam_search` needs. ``rows`` is the model's own state of M sequences."""

    def take(self, rows: Any, index: torch.Tensor) -> Any:
        """Rows ``index (M',)`` of ``rows`` (repeats allowed)."""
        ...

    def propose(self, rows: Any, expand: int, generator: torch.Generator) -> torch.Tensor:
        """``expand`` candidate actions per row: ``(M, expand, act_max)``."""
        ...

    def step(self, rows: Any, actions: torch.Tensor) -> tuple[Any, torch.Tensor, torch.Tensor]:
        """Take ``actions (M, act_max)``: the rows after the step, the rewards ``(M,)`` and
        the values ``(M,)`` (expected discounted return after the step)."""
        ...


@torch.no_grad()
def beam_search(
    model: PlanningModel,
    rows: Any,
    starts: int,
    horizon: int,
    beam: int,
    expand: int,
    discount: float,
    generator: torch.Generator,
) -> torch.Tensor:
    """The first action ``(starts, act_max)`` of the best plan from each of ``starts`` rows.

    The first step draws ``beam · expand`` candidates from each start (TT: ``beam`` copies of
    the start, each expanded ``expand`` times), later steps ``expand`` per kept sequence; each
    step keeps the ``beam`` best sequences of every start."""
    kept = 1  # sequences per start
    returns = first = score = None
    for h in range(horizon):
        candidates = model.propose(rows, expand * (beam if h == 0 else 1), generator)
        device, width = candidates.device, kept * candidates.shape[1]  # (S·kept, E, A)
        parents = torch.arange(starts * kept, device=device).repeat_interleave(width // kept)
        actions = candidates.flatten(0, 1)  # (S·width, A)
        rows, rewards, values = model.step(model.take(rows, parents), actions)
        returns = discount**h * rewards + (0.0 if returns is None else returns[parents])
        first = actions if first is None else first[parents]  # (S·width, A)
        score = returns + discount ** (h + 1) * values  # (S·width,)
        kept = min(beam, width)
        top = score.view(starts, width).topk(kept, dim=1).indices  # (S, kept)
        keep = (top + torch.arange(starts, device=device)[:, None] * width).flatten()
        rows, returns, first, score = (
            model.take(rows, keep),
            returns[keep],
            first[keep],
            score[keep],
        )
    best = score.view(starts, kept).argmax(dim=1)  # (S,)
    return first.view(starts, kept, -1)[torch.arange(starts, device=best.device), best]


@dataclass(frozen=True)
class GeneratorRows:
    """M sequences in the generator's input layout, left-padded: the last position is the step
    whose action is to be chosen (its action and reward are placeholders)."""

    observations: torch.Tensor  # (M, L, obs_max) normalised
    actions: torch.Tensor  # (M, L, act_max)
    rewards: torch.Tensor  # (M, L) normalised
    timesteps: torch.Tensor  # (M, L) int64
    step_mask: torch.Tensor  # (M, L) bool
    env_idx: torch.Tensor  # (M,) int64
    prompt: torch.Tensor  # (M, P)

    def index(self, index: torch.Tensor) -> GeneratorRows:
        index = index.to(self.env_idx.device)
        return GeneratorRows(**{f.name: getattr(self, f.name)[index] for f in fields(self)})

    def window(self) -> tuple:
        return self.observations, self.actions, self.rewards, self.timesteps, self.step_mask


class GeneratorModel:
    """A frozen :class:`CMTNet`'s generator as a :class:`PlanningModel`.

    Candidates are the policy's action plus Gaussian noise of std ``noise`` (``(K, act_max)``:
    per env and action dim, zero on padded dims; clipped to [-1, 1]); the first candidate of
    every row is the noise-free action, so the policy's own choice is always among the
    candidates. Rewards and values come back in
    the data's units (denormalised, unscaled); each start keeps its own beam, so plans of
    different envs are never compared.
    """

    def __init__(
        self,
        net: CMTNet,
        normalizer: Normalizer,
        act_masks: torch.Tensor,
        noise: torch.Tensor,
        value_scale: float,
        max_timestep: int,
    ):
        self.net, self.normalizer, self.act_masks = net, normalizer, act_masks
        self.noise, self.value_scale, self.max_timestep = noise, value_scale, max_timestep

    def take(self, rows: GeneratorRows, index: torch.Tensor) -> GeneratorRows:
        return rows.index(index)

    def propose(self, rows: GeneratorRows, expand: int, generator: torch.Generator) -> torch.Tensor:
        mean = self.net.generate(rows.prompt, rows.window(), rows.env_idx).actions[:, -1]
        noise = torch.randn(len(mean), expand, mean.shape[-1], generator=generator)
        noise[:, 0] = 0.0  # the policy's own action is a candidate
        mask = self.act_masks[rows.env_idx][:, None]  # (M, 1, A)
        std = self.noise[rows.env_idx][:, None]  # (M, 1, A)
        return ((mean[:, None] + std * noise.to(mean.device)).clamp(-1, 1)) * mask

    def step(self, rows: GeneratorRows, actions: torch.Tensor):
        act = rows.actions.clone()
        act[:, -1] = actions
        rows = GeneratorRows(**{**vars(rows), "actions": act})
        pred = self.net.generate(rows.prompt, rows.window(), rows.env_idx)
        reward = pred.rewards[:, -1]  # (M,) normalised
        next_obs = pred.next_observations[:, -1]  # (M, obs_max) normalised, zero-padded
        rewards = rows.rewards.clone()
        rewards[:, -1] = reward
        t = (rows.timesteps[:, -1] + 1).clamp(max=self.max_timestep - 1)
        following = GeneratorRows(
            observations=shift_in(rows.observations, next_obs),
            actions=shift_in(act, torch.zeros_like(actions)),
            rewards=shift_in(rewards, torch.zeros_like(reward)),
            timesteps=shift_in(rows.timesteps, t),
            step_mask=shift_in(rows.step_mask, torch.ones_like(rows.step_mask[:, -1])),
            env_idx=rows.env_idx,
            prompt=rows.prompt,
        )
        raw_reward = self.normalizer.denormalize_reward(reward, rows.env_idx)  # (M,)
        return following, raw_reward, pred.values[:, -1] / self.value_scale


def shift_in(values: torch.Tensor, new: torch.Tensor) -> torch.Tensor:
    """``values (M, L, ...)`` one position to the left, ``new (M, ...)`` in the last place."""
    return torch.cat([values[:, 1:], new[:, None]], dim=1)


@dataclass
class TuningSet:
    """The relabelled states as the adaptor's training data (the pretrained model is frozen,
    so each state's prompt z is computed once)."""

    prompts: torch.Tensor  # (N, P) z of each state's history
    window: tuple  # network inputs of the window ending at each state, (N, K, ...)
    env_idx: torch.Tensor  # (N,)
    actions: torch.Tensor  # (N, act_max) relabelled actions â


def residual_std(
    residuals: torch.Tensor, env_idx: torch.Tensor, act_masks: torch.Tensor
) -> torch.Tensor:
    """``(K, act_max)``: the root mean square of ``residuals (N, act_max)`` per env
    (``env_idx (N,)`` indexes ``act_masks (K, act_max)``) and action dim, zero on padded dims
    and for envs without rows."""
    squares = torch.zeros_like(act_masks, dtype=residuals.dtype).index_add_(
        0, env_idx, residuals.pow(2)
    )
    counts = torch.zeros(len(act_masks), device=residuals.device).index_add_(
        0, env_idx, torch.ones_like(env_idx, dtype=residuals.dtype)
    )
    return (squares / counts.clamp_min(1.0)[:, None]).sqrt() * act_masks


def plan_actions(
    net: CMTNet,
    normalizer: Normalizer,
    act_masks: torch.Tensor,
    cfg: CMTConfig,
    states: TuningSet,
    noise: torch.Tensor,
    generator: torch.Generator,
) -> torch.Tensor:
    """The first action of the best beam-search plan ``(N, act_max)`` from each of ``states``
    (their prompts and windows), ``cfg.relabel_batch`` states per batched search; candidates'
    noise std ``noise (K, act_max)`` per env and action dim."""
    model = GeneratorModel(
        net,
        normalizer,
        act_masks,
        noise,
        cfg.value_scale,
        int(net.embedding.max_timestep),
    )
    actions = []
    for first in range(0, len(states.env_idx), cfg.relabel_batch):
        rows = slice(first, first + cfg.relabel_batch)
        start = GeneratorRows(
            *(v[rows] for v in states.window), states.env_idx[rows], states.prompts[rows]
        )
        plan = beam_search(
            model,
            start,
            len(start.env_idx),
            cfg.planner_horizon,
            cfg.beam_width,
            cfg.expand,
            cfg.discount,
            generator,
        )
        actions.append(plan)
    return torch.cat(actions)
