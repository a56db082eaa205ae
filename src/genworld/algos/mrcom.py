"""MrCoM's scenario adaptation (seed 002, App. A, Algorithm 2): a standard RL agent trained on
rollouts of the trained MrCoM world model, started from the target scenario's data.

"Given target scenario, we perform rollouts based on the trained world model to augment the
dataset, which is then used to train a standard RL algorithm" (§3, App. A). The machinery is
offline MBPO (:mod:`genworld.algos.mbpo`): every ``rollout_every`` updates, start states (and
their context: the up to ``context_len − 1`` steps before each in its episode) are drawn from
the cell's data, the MrCoM model is rolled out ``horizon`` steps with the current policy, and
SAC learns on the imagined transitions mixed with the data's. The world model comes from the
runner (``ctx.world_model("mrcom")``): in ``genworld scenarios`` it is the model trained on
every training scenario, and the cell's data is the target scenario's small dataset (a model
trained on other envs is used through :func:`genworld.world_models.subset.on_envs`).

Offline by default. ``online_steps > 0`` is the paper's online variant (App. C.2: adaptation
"fixed at 100k interaction steps with the environment"): every ``online_every`` updates the
current stochastic policy runs ``online_steps`` steps in each of the cell's real envs (the
target scenario, ``ctx.task``, when the cell's data is one env), and the episodes join the data
that rollouts start from and real rows are drawn from (as MBPO's env buffer).

Policy (App. D): γ 0.99, actor lr 1e-4, critic lr 2e-4, rollout horizon 5; temperature lr as
the actor's (ours). Below full scale the policy learner is the one every model-based method
shares at that budget (``algos.tgw.MINI_POLICY``: half real rows, a TD3+BC-form behaviour
term), so a study compares world models, not policy learners.

Deviations:
- no uncertainty penalty (``mbpo.beta = 0``): the paper trains its agent on plain rollouts;
  ``mbpo.beta`` weighs the decoder's predicted spread when set;
- App. D's "policy updates 10" (SAC updates per environment step, we read) applies to the
  online variant only; ours: one update per ``update()`` call, ``online_steps`` real steps every
  ``online_every`` updates (10 updates per real step at the defaults);
- online episodes are collected in whole chunks: each collection resets the envs (seeded by the
  cell's seed and the collection's number), so a resumed run repeats no episode and continues
  exactly; an episode cut by the chunk's end is truncated there.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from genworld.algos.mbpo import MBPOAgent, MBPOConfig
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.algos.sac import SACConfig
from genworld.algos.tgw import AGENT_PRESETS, MINI_POLICY
from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.envs.registry import get_env_spec, make_env
from genworld.errors import GenworldError
from genworld.types import EnvSpec
from genworld.world_models.subset import on_envs

# App. D's policy: discount 0.99, actor lr 1e-4, critic lr 2e-4.
MRCOM_SAC = SACConfig(gamma=0.99, actor_lr=1e-4, critic_lr=2e-4, alpha_lr=1e-4)


@dataclass(frozen=True)
class MrCoMAgentConfig:
    mbpo: MBPOConfig = field(default_factory=lambda: MBPOConfig(horizon=5, beta=0.0, sac=MRCOM_SAC))
    """The policy learner: SAC on rollouts of the MrCoM world model (App. D: horizon 5; no
    uncertainty penalty, ``beta`` 0)."""
    online_steps: int = 0
    """Real environment steps per env and collection (the paper's online variant); 0 = offline
    adaptation from the target scenario's data only."""
    online_every: int = 1_000
    """Policy updates between two online collections (with ``online_steps`` > 0)."""

    def validate(self) -> None:
        self.mbpo.validate()
        if self.online_steps < 0 or self.online_every <= 0:
            raise GenworldError(
                f"online_steps must be ≥ 0 and online_every positive, got {self.online_steps}, "
                f"{self.online_every}"
            )


PRESETS: dict[str, dict] = {
    "tiny": {"mbpo": {**AGENT_PRESETS["tiny"]["mbpo"], "beta": 0.0}},
    "mini": {"mbpo": MINI_POLICY},
    "full": {"mbpo": {"rollout_every": 250, "rollout_batch": 50_000}},
}


def build(ctx: AlgoContext) -> MrCoMAgent:
    """The runner's MrCoM world model, then MBPO in it from the cell's data."""
    model = on_envs(ctx.world_model("mrcom"), ctx.dataset)
    cfg = resolve_config(MrCoMAgentConfig, PRESETS, ctx, skip=("world_model",))
    return MrCoMAgent(model, ctx.dataset, cfg, ctx.device, online_envs(ctx), ctx.seed)


def online_envs(ctx: AlgoContext) -> list[str]:
    """The real envs of the online variant, one per env of the cell's data: the cell's task
    (the target scenario) when its data is one env, else the data's own envs."""
    if ctx.task is not None and ctx.dataset.num_envs == 1:
        return [ctx.task]
    return [s.name for s in ctx.dataset.specs]


class MrCoMAgent:
    """SAC trained in a frozen MrCoM world model (offline MBPO), optionally with real steps."""

    def __init__(
        self,
        world_model,
        dataset: MultiEnvDataset,
        cfg: MrCoMAgentConfig,
        device: torch.device,
        envs: list[str] | None = None,
        seed: int = 0,
    ):
        cfg.validate()
        self.cfg, self.seed, self.base = cfg, seed, dataset
        self.envs = envs or [s.name for s in dataset.specs]
        if len(self.envs) != dataset.num_envs:
            raise GenworldError(f"give one real env per env of the data, got {self.envs}")
        self.mbpo = MBPOAgent(world_model, dataset, cfg.mbpo, device)
        self.collected: list[list[Episode]] = [[] for _ in self.envs]
        self.collections = 0

    @property
    def world_model(self):
        return self.mbpo.world_model

    @property
    def updates(self) -> int:
        return self.mbpo.updates

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        return self.mbpo.act(obs, env_idx, deterministic=deterministic)

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        if cfg.online_steps and self.mbpo.updates % cfg.online_every == 0:
            self.collect()
        metrics = self.mbpo.update(generator)
        if cfg.online_steps:
            metrics["online/steps"] = torch.tensor(float(self.collections * cfg.online_steps))
        return metrics

    # -------------------------------------------------------------- the online variant
    def collect(self) -> None:
        """``online_steps`` steps of the stochastic policy in each real env (fresh episodes,
        seeded by the seed and the collection's number), added to the data."""
        for k, name in enumerate(self.envs):
            seed = self.seed * 100_003 + self.collections * len(self.envs) + k
            spec = self.base.specs[k]
            self.collected[k] += collect_episodes(
                name, spec, k, self.mbpo, self.base.obs_max, self.cfg.online_steps, seed
            )
        self.collections += 1
        self.mbpo.dataset = self.base.extended(self.collected)

    def state_dict(self) -> dict:
        """MBPO's state, and the online episodes (arrays) and collections so far."""
        online = [
            [
                {
                    "observations": torch.from_numpy(ep.observations),
                    "actions": torch.from_numpy(ep.actions),
                    "rewards": torch.from_numpy(ep.rewards),
                    "terminations": torch.from_numpy(ep.terminations),
                    "truncations": torch.from_numpy(ep.truncations),
                }
                for ep in episodes
            ]
            for episodes in self.collected
        ]
        return {"mbpo": self.mbpo.state_dict(), "online": online, "collections": self.collections}

    def load_state_dict(self, state: dict) -> None:
        self.mbpo.load_state_dict(state["mbpo"])
        self.collections = int(state["collections"])
        self.collected = [
            [Episode.from_arrays(**{k: v.numpy() for k, v in ep.items()}) for ep in episodes]
            for episodes in state["online"]
        ]
        if self.collections:
            self.mbpo.dataset = self.base.extended(self.collected)


def collect_episodes(
    name: str, spec: EnvSpec, k: int, agent, obs_max: int, steps: int, seed: int
) -> list[Episode]:
    """``steps`` steps of ``agent``'s stochastic policy (as env ``k`` of its data, ``spec``'s
    sizes) in the real env ``name``, reset with ``seed`` and then ``seed + 1``, …; the last
    episode is truncated where the steps end."""
    real = get_env_spec(name)
    if (real.obs_dim, real.act_dim) != (spec.obs_dim, spec.act_dim):
        raise GenworldError(
            f"online env {name!r} has obs {real.obs_dim}/act {real.act_dim}, the data's env "
            f"{spec.name!r} obs {spec.obs_dim}/act {spec.act_dim}: give an env of the data's sizes"
        )
    env = make_env(name)
    episodes: list[Episode] = []
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    env_idx = torch.tensor([k])
    for t in range(steps):
        padded = torch.zeros(1, obs_max)
        padded[0, : spec.obs_dim] = torch.as_tensor(obs, dtype=torch.float32)
        action = agent.act(padded, env_idx, deterministic=False)[0, : spec.act_dim].cpu().numpy()
        obs, reward, terminated, truncated, _ = env.step(action)
        observations.append(obs)
        actions.append(action)
        rewards.append(reward)
        terminations.append(terminated)
        truncations.append(truncated or (t == steps - 1 and not terminated))
        if terminations[-1] or truncations[-1]:
            episodes.append(
                Episode.from_arrays(
                    np.array(observations),
                    np.array(actions),
                    np.array(rewards),
                    np.array(terminations),
                    np.array(truncations),
                    obs_dim=spec.obs_dim,
                    act_dim=spec.act_dim,
                    where=f"online {name}",
                )
            )
            obs, _ = env.reset(seed=seed + len(episodes))
            observations, actions, rewards, terminations, truncations = [obs], [], [], [], []
    env.close()
    return episodes
