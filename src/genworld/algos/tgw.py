"""TGW policy learning: offline MBPO inside the TGW world model (seed 000 §5.4, Algorithm 2).

The paper chooses "the offline version of MBPO [Janner et al. 2019] to enable a fair comparison"
and gives no settings; ours follow MOPO's offline MBPO (Yu et al. 2020; OfflineRL-Kit
``mopo.py`` defaults where they fit the budget): every ``rollout_every`` updates, ``rollout_batch``
start states are drawn from the data of every env (balanced), the world model is rolled out for
``horizon`` steps with the current (stochastic) policy, each rollout's FIFO prompt memory filled
from its own history; the imagined transitions, with reward ``r = re − β·ri`` (eq. 6), go to a
model buffer; SAC trains on a ``real_ratio`` mix of real and imagined transitions. The machinery
is :mod:`genworld.algos.mbpo` (shared with MOPO and MOReL); this file picks the TGW world model
and its β.

Policies: ``shared`` — one SAC over all envs (padded observations, one-hot env id, masked actions,
entropy target per env = −its true action dim); ``per_env`` — one SAC per env, all trained in
the same shared world model.

Deviations:
- horizon / rollout sizes / updates are scaled to the CPU budget (scale presets);
- rollouts stop at a predicted terminal (registry functions by default) instead of continuing;
- mini scale only (``MINI_POLICY``): half of each SAC batch is real data and the actor carries a
  TD3+BC-form behaviour term (``SACConfig.bc_alpha = 1``), because plain SAC does not learn
  within the mini budget: it stays at random level with or without the uncertainty penalty, and
  even on real data alone (its critic is too young to follow), while the behaviour term lifts
  every env well above it (measured: docs/notes/history.md, "Why the policy learner has a behaviour
  term at mini scale"). Plain offline MBPO with SAC's initial temperature 0.1 stays at random
  level too (docs/RESULTS.md, "Quick start with plain offline MBPO"). Full scale is plain
  offline MBPO, as the paper.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genworld.algos.mbpo import MBPOAgent, MBPOConfig, penalised_reward
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.data.multi_env import MultiEnvDataset
from genworld.envs.tasks import task_reward_fn
from genworld.errors import GenworldError
from genworld.world_models.subset import on_envs


@dataclass(frozen=True)
class TGWAgentConfig:
    mbpo: MBPOConfig = field(default_factory=MBPOConfig)
    """The offline-MBPO policy learner, with β (risk tolerance, eq. 6) as its ``beta``."""
    reward: str = "model"
    """Extrinsic reward of imagined transitions: ``model`` (the reward module's re) or ``task``
    (the cell's task's true reward function on the imagined transition: TGW-newR, §6.2)."""
    reward_finetune_steps: int = 0
    """Reward-module fine-tuning steps on the cell's data before policy learning (TGW-finetune,
    §6.2); 0 = the world model as it is."""

    def validate(self) -> None:
        self.mbpo.validate()
        if self.reward not in ("model", "task"):
            raise GenworldError(f"reward={self.reward!r}: choose model or task")
        if self.reward_finetune_steps < 0:
            raise GenworldError(
                f"reward_finetune_steps must be ≥ 0, got {self.reward_finetune_steps}"
            )


# The policy learner of every model-based method at the mini budget (TGW, MOPO, MOReL: the same,
# so the table compares world models, not policy learners). Full scale: plain offline MBPO.
MINI_POLICY: dict = {"real_ratio": 0.5, "sac": {"bc_alpha": 1.0}}

# Agent presets per scale: tiny for tests, mini for the 2-core CPU, full = MOPO's settings.
AGENT_PRESETS: dict[str, dict] = {
    "tiny": {
        "mbpo": {
            "rollout_every": 20,
            "rollout_batch": 64,
            "horizon": 2,
            "real_ratio": MINI_POLICY["real_ratio"],  # tests run the mini policy learner
            "sac": {"hidden": (32, 32), "batch_size": 32, **MINI_POLICY["sac"]},
        }
    },
    # mini: plain SAC in the model stays at random level within 10k updates (measured,
    # docs/notes/history.md); a TD3+BC-form behaviour term on real rows (half of each batch) fixes it.
    "mini": {"mbpo": MINI_POLICY},
    "full": {"mbpo": {"rollout_every": 250, "rollout_batch": 50_000, "horizon": 5}},
}


def build(ctx: AlgoContext) -> TGWAgent:
    """TGW world model on the cell's data, then offline MBPO in it."""
    model = ctx.world_model("tgw")
    cfg = resolve_config(TGWAgentConfig, AGENT_PRESETS, ctx, skip=("world_model",))
    if cfg.reward_finetune_steps:
        model = model.finetune_reward(ctx.dataset, cfg.reward_finetune_steps, ctx.seed)
    reward_fn = None
    if cfg.reward == "task":
        if ctx.task is None:
            raise GenworldError("reward=task needs the cell's task env (AlgoContext.task)")
        reward_fn = task_reward_fn(ctx.task)
    model = on_envs(model, ctx.dataset)  # a model of more envs than the cell's (scenarios)
    return TGWAgent(model, ctx.dataset, cfg, ctx.device, reward_fn=reward_fn)


class TGWAgent:
    """SAC policies trained in a (frozen) TGW world model; ``update()`` is one policy step.

    A thin shell over :class:`~genworld.algos.mbpo.MBPOAgent` in the TGW world model."""

    def __init__(
        self,
        world_model,
        dataset: MultiEnvDataset,
        cfg: TGWAgentConfig,
        device: torch.device,
        reward_fn=None,
    ):
        """``reward_fn(obs, actions, next_obs) -> (B,)`` replaces the reward module's ``re``
        (TGW-newR: the new task's true reward on imagined transitions); ``r = fn − β·ri``."""
        cfg.validate()
        beta = cfg.mbpo.beta
        self.cfg = cfg
        hook = None
        if reward_fn is not None:

            def hook(obs, actions, env_idx, out, rewards):
                true = reward_fn(obs, actions, out.next_observations)
                new = penalised_reward(true, out.uncertainty, beta)
                return new, out.terminations

        self.mbpo = MBPOAgent(world_model, dataset, cfg.mbpo, device, step_hook=hook)

    @property
    def world_model(self):
        return self.mbpo.world_model

    @property
    def policy(self):
        return self.mbpo.policy

    @property
    def model_buffer(self):
        return self.mbpo.model_buffer

    @property
    def updates(self) -> int:
        return self.mbpo.updates

    @property
    def rollout_stats(self) -> dict[str, float]:
        return self.mbpo.rollout_stats

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        return self.mbpo.act(obs, env_idx, deterministic=deterministic)

    def rollout(self, generator: torch.Generator) -> dict[str, float]:
        return self.mbpo.rollout(generator)

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.mbpo.update(generator)

    def state_dict(self) -> dict:
        """Keys "policy", "updates", "model_buffer", "rollout_stats"."""
        return self.mbpo.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.mbpo.load_state_dict(state)
