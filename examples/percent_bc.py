"""%BC, an algorithm written outside genworld: behaviour cloning on the best episodes only.

Paper: Chen et al. 2021, "Decision Transformer" (arXiv:2106.01345), §5.3: "Percentile Behavior
Cloning (%BC)" clones the top X% of the dataset's episodes by return; the paper reports X = 10,
25 and 100 (plain BC). Here the top share is taken in each env of a multi-env dataset.

It reuses genworld's BC agent (``genworld.algos.bc``) on the kept transitions: the agent
contract (``update``, ``act``, ``state_dict``) comes with it. Register and run it::

    export GENWORLD_ALGOS=percent-bc=percent_bc:build   # this folder on PYTHONPATH
    genworld algos check percent-bc
    genworld table --envs hopper --qualities medium-replay --algos percent-bc,bc --seeds 3

(docs/EXTENDING.md walks through it.)
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from genworld.algos.bc import BC, BCConfig
from genworld.algos.bc import PRESETS as BC_PRESETS
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.errors import GenworldError


@dataclass(frozen=True)
class PercentBCConfig:
    percent: float = 10.0
    """Share of each env's episodes kept, the best by return (Chen et al.: 10, 25, 100)."""
    bc: BCConfig = field(default_factory=BCConfig)
    """The behaviour cloning on the kept transitions."""

    def validate(self) -> None:
        if not 0 < self.percent <= 100:
            raise GenworldError(f"percent must be in (0, 100], got {self.percent}")


PRESETS = {scale: {"bc": preset} for scale, preset in BC_PRESETS.items()}


def top_episode_rows(timesteps: torch.Tensor, returns: np.ndarray, percent: float) -> torch.Tensor:
    """Row indices of the transitions of the best ``percent`` % of episodes by return (at least
    one episode); ``timesteps (N,)``: each row's step in its episode, 0 where one starts."""
    episode_of_row = torch.cumsum(timesteps == 0, 0) - 1  # (N,)
    keep = max(1, int(np.ceil(len(returns) * percent / 100)))
    best = torch.as_tensor(np.argsort(-returns, kind="stable")[:keep])
    return torch.nonzero(torch.isin(episode_of_row, best)).squeeze(1)


def build(ctx: AlgoContext) -> BC:
    cfg = resolve_config(PercentBCConfig, PRESETS, ctx)
    cfg.validate()
    rows = [
        top_episode_rows(env.timesteps, env.episode_returns, cfg.percent)
        for env in ctx.dataset.envs
    ]
    return BC(ctx.dataset.rows(rows), ctx.normalizer, cfg.bc, ctx.device)
