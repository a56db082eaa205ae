"""Prompt-DT: a Decision Transformer conditioned on a short trajectory prompt of the task.

Paper: Xu et al. 2022, "Prompting Decision Transformer for Few-Shot Policy Generalization".
Reference implementation: mxu34/prompt-dt (``prompt_dt/prompt_decision_transformer.py``,
``prompt_dt/prompt_utils.py`` ``get_prompt``, ``pdt_main.py``; commit 5f665e50).

The model is the DT of :mod:`genworld.algos.dt` (same network, loss, optimiser and acting code,
composed, not copied) plus a prompt: a segment of ``prompt_length`` steps (returns-to-go, states,
actions, timesteps) from the *same* env, embedded by its own projections (the reference's
``prompt_embed_*`` layers) and prepended to every sequence. As in the reference's ``get_prompt``
the segment is the tail of a prompt episode (``start = max(0, T - prompt_length - 1)``), the
episode drawn at random for each training sequence (``stochastic_prompt``) and fixed per env at
evaluation (drawn once with a generator seeded by the run's seed, kept in the checkpoint).

Settings (PROTOCOL.md, TGW paper's baseline; reference ``pdt_main.py`` defaults): prompt length 5,
K=20, 3 layers, embed 128, 1 head, dropout 0.1, lr 1e-4, weight decay 1e-4, warmup 10k.

Deviations:
- Prompt episodes: the reference samples prompts from separate *expert* demonstrations of each
  task; we have one dataset per env, so prompts come from that env's own top-return episodes
  (the best ``prompt_top_fraction`` of them, at least one).
- Batch: 64 sequences in total, balanced over envs (the reference: 16 per task).
- Multi-env with different observation/action sizes (per-env tokenizers, env embedding), one
  return scale (1/1000) for all envs (the reference: 1/500 for cheetah-vel and ant-dir).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from genworld.algos import dt
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.trajectory_windows import Windows, gather_windows, returns_to_go
from genworld.errors import GenworldError


@dataclass(frozen=True)
class PromptDTConfig:
    dt: dt.DTConfig = field(default_factory=dt.DTConfig)
    """The Decision Transformer underneath (network, optimiser, targets)."""
    prompt_length: int = 5
    """Steps in the prompt segment (PROTOCOL.md, reference ``--prompt-length 5``)."""
    prompt_top_fraction: float = 0.1
    """Prompts come from this fraction of each env's episodes with the highest returns."""

    def validate(self) -> None:
        self.dt.validate()
        if self.prompt_length < 1:
            raise GenworldError(f"prompt_length must be >= 1, got {self.prompt_length}")
        if not 0.0 < self.prompt_top_fraction <= 1.0:
            raise GenworldError("prompt_top_fraction must be in (0, 1]")


PRESETS: dict[str, dict] = {
    "tiny": {"dt": dt.PRESETS["tiny"], "prompt_length": 2},
    "mini": {"dt": dt.PRESETS["mini"]},
    "full": {},
}


def build(ctx: AlgoContext) -> dt.DT:
    cfg = resolve_config(PromptDTConfig, PRESETS, ctx)
    source = ctx.prompts if ctx.prompts is not None else ctx.dataset
    prompt_rtgs = [returns_to_go(env) for env in source.envs]
    prompts = PromptBank(source, prompt_rtgs, cfg.prompt_length, cfg.prompt_top_fraction, ctx.seed)
    rtgs = prompt_rtgs if ctx.prompts is None else None  # (None: the DT computes its data's)
    return dt.DT(ctx.dataset, ctx.normalizer, cfg.dt, ctx.device, prompts=prompts, rtgs=rtgs)


class PromptBank:
    """Each env's candidate prompt segments (tails of its top-return episodes).

    ``sample(env_idx, generator)`` draws one candidate of the row's own env per row (training);
    ``fixed(env_idx)`` gives the env's evaluation prompt, drawn once with ``seed``.
    """

    def __init__(
        self,
        dataset: MultiEnvDataset,
        rtgs: list[torch.Tensor],
        length: int,
        top_fraction: float,
        seed: int,
    ):
        self.length = length
        self.candidates: list[Windows] = []
        self.episode_starts: list[torch.Tensor] = []
        """Per env: flat index of the first transition of each candidate's episode."""
        for k, env in enumerate(dataset.envs):
            starts = torch.nonzero(env.timesteps == 0).squeeze(1)  # (episodes,) in storage order
            lengths = env.steps_left[starts]  # (episodes,)
            returns = torch.as_tensor(env.episode_returns)
            top = torch.argsort(returns, descending=True, stable=True)
            top = top[: max(1, math.ceil(top_fraction * len(starts)))]
            # reference get_prompt: "select the last traj with length max_len"
            first = starts[top] + (lengths[top] - length - 1).clamp(min=0)
            self.candidates.append(
                gather_windows(env, rtgs[k], first, length, k, dataset.obs_max, dataset.act_max)
            )
            self.episode_starts.append(starts[top])
        generator = torch.Generator().manual_seed(seed)
        self.eval_choice = torch.stack(
            [torch.randint(len(c.env_idx), (), generator=generator) for c in self.candidates]
        )  # (num_envs,)

    def _select(self, env_idx: torch.Tensor, choice_for) -> Windows:
        env_idx = env_idx.cpu()
        parts, order = [], []
        for k, cands in enumerate(self.candidates):
            rows = torch.nonzero(env_idx == k).squeeze(1)
            if len(rows):
                pick = choice_for(k, len(rows))  # (rows,)
                parts.append(cands.map(lambda v, pick=pick: v[pick]))
                order.append(rows)
        windows = Windows.cat(parts)
        inverse = torch.empty_like(env_idx)
        inverse[torch.cat(order)] = torch.arange(len(env_idx))
        return windows.map(lambda v: v[inverse])

    def sample(self, env_idx: torch.Tensor, generator: torch.Generator) -> Windows:
        """One random candidate of each row's env: ``(B, prompt_length, ...)``."""
        return self._select(
            env_idx,
            lambda k, n: torch.randint(len(self.candidates[k].env_idx), (n,), generator=generator),
        )

    def fixed(self, env_idx: torch.Tensor) -> Windows:
        return self._select(env_idx, lambda k, n: self.eval_choice[k].repeat(n))

    def state_dict(self) -> dict:
        return {"eval_choice": self.eval_choice.clone()}

    def load_state_dict(self, state: dict) -> None:
        choice = torch.as_tensor(state["eval_choice"], dtype=torch.int64)
        if choice.shape != self.eval_choice.shape:
            raise GenworldError(
                f"checkpoint has prompts for {len(choice)} envs, this dataset has "
                f"{len(self.eval_choice)}"
            )
        self.eval_choice = choice.clone()
