"""CaDM's adaptation in MrCoM's studies (seed 002, §5.1): SAC trained on rollouts of the CaDM
world model (:mod:`genworld.world_models.cadm`), started from the cell's data, through offline
MBPO exactly as :mod:`genworld.algos.mrcom` adapts (horizon 5, no uncertainty penalty; the
online variant's real steps as an option), so the studies compare world models, not policy
learners.

Deviation: CaDM plans with MPC (CEM) in its model; here, as for every model-based method of the
study, SAC learns on its rollouts.
"""

from __future__ import annotations

from genworld.algos.mrcom import PRESETS, MrCoMAgent, MrCoMAgentConfig, online_envs
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.world_models.subset import on_envs


def build(ctx: AlgoContext) -> MrCoMAgent:
    """The runner's CaDM world model, then MBPO in it from the cell's data."""
    model = on_envs(ctx.world_model("cadm"), ctx.dataset)
    cfg = resolve_config(MrCoMAgentConfig, PRESETS, ctx, skip=("world_model",))
    return MrCoMAgent(model, ctx.dataset, cfg, ctx.device, online_envs(ctx), ctx.seed)
