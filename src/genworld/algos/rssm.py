"""MrCoM's DreamerV3 baselines (seed 002, §5.1): SAC trained on rollouts of an RSSM world model
(:mod:`genworld.world_models.rssm`, ``--model rssm`` with its reward head), started from the
cell's data, through offline MBPO exactly as :mod:`genworld.algos.mrcom`.

- ``rssm`` — context-free: each rollout starts from the posterior of its start observation
  alone (no history filtered), so nothing tells the scenario apart but that observation;
- ``rssm-context`` (a variant, ``context = True``) — context-augmented, the DreamerV3 baseline
  the paper describes: the GRU first filters the up to ``context_steps`` dataset steps before the
  start state, the same history MrCoM's context holds at the scale, so its deterministic state
  carries the scenario.

Both read the same trained model: the context only changes how a rollout's state is built
(:meth:`~genworld.world_models.rssm.RSSMWorldModel.with_burn_in`), not training.

Deviations: DreamerV3 learns its actor and critic on imagined latent trajectories; here, as for
every model-based method of the study, SAC learns on decoded observations of MBPO rollouts (the
comparison is of world models, not of policy learners); no uncertainty penalty
(``mbpo.beta = 0``), as DreamerV3.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genworld.algos.mbpo import MBPOConfig
from genworld.algos.mrcom import MRCOM_SAC, MrCoMAgent, MrCoMAgentConfig, online_envs
from genworld.algos.mrcom import PRESETS as MRCOM_PRESETS
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.errors import GenworldError
from genworld.world_models.subset import on_envs


@dataclass(frozen=True)
class RSSMAgentConfig:
    mbpo: MBPOConfig = field(default_factory=lambda: MBPOConfig(horizon=5, beta=0.0, sac=MRCOM_SAC))
    """The policy learner, MrCoM's (App. D: horizon 5, no uncertainty penalty)."""
    context: bool = False
    """False: context-free rollouts (from the start observation alone); True: the GRU filters the
    ``context_steps`` dataset steps before each start state first (DreamerV3 with context)."""
    context_steps: int = 19
    """History filtered with ``context``: MrCoM's context length − 1 at the scale (App. D: 20)."""
    online_steps: int = 0
    """Real environment steps per env and collection (MrCoM's online variant); 0 = offline."""
    online_every: int = 1_000
    """Policy updates between two online collections (with ``online_steps`` > 0)."""

    def validate(self) -> None:
        self.mbpo.validate()
        if self.context_steps < 0:
            raise GenworldError(f"context_steps must be ≥ 0, got {self.context_steps}")


# MrCoM's context at each scale (its context_len − 1, train/world_model.py's MODEL_PRESETS)
PRESETS: dict[str, dict] = {
    "tiny": {**MRCOM_PRESETS["tiny"], "context_steps": 3},
    "mini": {**MRCOM_PRESETS["mini"], "context_steps": 9},
    "full": {**MRCOM_PRESETS["full"], "context_steps": 19},
}


def build(ctx: AlgoContext) -> MrCoMAgent:
    """The runner's RSSM, with or without context, then MBPO in it from the cell's data."""
    cfg = resolve_config(RSSMAgentConfig, PRESETS, ctx, skip=("world_model",))
    cfg.validate()
    model = ctx.world_model("rssm")
    if model.reward_net is None:
        raise GenworldError(
            "this RSSM has no reward head (reward-free pre-training): train it with "
            "rssm.reward_head on to learn a policy in it"
        )
    model = on_envs(model.with_burn_in(cfg.context_steps if cfg.context else 0), ctx.dataset)
    agent_cfg = MrCoMAgentConfig(cfg.mbpo, cfg.online_steps, cfg.online_every)
    return MrCoMAgent(model, ctx.dataset, agent_cfg, ctx.device, online_envs(ctx), ctx.seed)
