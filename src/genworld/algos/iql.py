"""Implicit Q-Learning: in-sample Q-learning by expectile regression, then advantage-weighted BC.

Paper: Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning"
(arXiv:2110.06169). Reference implementations: CORL ``algorithms/offline/iql.py`` (commit
6afec904, https://github.com/tinkoff-ai/CORL/blob/6afec90484bbf47dee05fdf525e26a3ebe028e9b/algorithms/offline/iql.py)
and the authors' ikostrikov/implicit_q_learning (``learner.py``/``train_offline.py``, commit
7bd6d760). Hyper-parameters are the paper's locomotion ones, as in CORL's D4RL configs
(``configs/offline/iql/*/medium_v2.yaml``) and d3rlpy ``reproductions/offline/iql.py``:
expectile 0.7, inverse temperature beta 3.0, advantage weights clipped at 100, lr 3e-4 for V, Q
and actor, batch 256, discount 0.99, Polyak tau 0.005, 256x256 MLPs, actor lr cosine-decayed to 0
over the training run (``optax.cosine_decay_schedule`` in ikostrikov, ``CosineAnnealingLR`` in
CORL). The actor is Gaussian with a tanh mean and a state-independent log-std (ikostrikov
``NormalTanhPolicy(state_dependent_std=False, tanh_squash_distribution=False)``, CORL
``GaussianPolicy``; CORL's locomotion configs use it everywhere except hopper medium and
medium-replay, where ``iql_deterministic: true``); ``deterministic_actor=True`` gives CORL's MSE
actor.

One step (CORL order, every loss from the pre-step parameters, so one backward serves all):
``V(s) -> expectile_tau(min Q_target(s, a) - V(s))``; ``Q(s, a) -> r + gamma (1 - d) V(s')``;
actor ``-exp(beta (min Q_target(s, a) - V(s))).clamp(max=100) * log pi(a | s)``; Polyak on Q.

Rewards: the locomotion trick ``r * 1000 / (max episode return - min episode return)``
(ikostrikov ``train_offline.py::normalize``; d3rlpy ``ReturnBasedRewardScaler(multiplier=1000)``;
CORL ``modify_reward`` multiplies by ``max_episode_steps``, 1000 on locomotion, with
``normalize_reward: true`` in its locomotion configs),
computed per env from that env's own episodes, so envs with different reward scales train with
comparable targets.

Multi-env: observations normalised per env (``ctx.normalizer``), padded dims zeroed, a one-hot
env id appended to every network's input, the actor's log-std learned per env, actions masked by
each env's action dims and the log-likelihood summed over real dims only.

Deviations:
- The actor's log-std is one vector per env (single env: exactly CORL's one vector), clamped to
  [-20, 2] like CORL (ikostrikov: [-5, 2]).
- V and the advantage use the pre-step V (CORL, gwthomas/IQL-PyTorch); ikostrikov's actor and Q
  see the V after its step. Q and V losses are CORL's means (ikostrikov sums the twin Q losses).
- The cosine schedule spans the run's updates unless ``actor_lr_decay_steps`` sets its length,
  and holds the lr at 0 after it (ikostrikov; CORL stops training there).
- The reward scale uses IQL's constant 1000 for every env (the D4RL episode length), also for
  tasks with shorter episodes; envs whose episodes all have the same return are left unscaled.
- Adam is one fused optimiser with a parameter group per network (same per-parameter maths).
- ``compile=True`` (the ``full`` preset) runs the losses through ``torch.compile``: the same
  maths, float results differ in the last bits from eager.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from genworld.algos.registry import (
    AlgoContext,
    agent_state,
    check_schedule_length,
    load_agent_state,
    resolve_config,
    schedule_length,
)
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.mlp import EnsembleMLP, mlp
from genworld.utils.device import fused_optimizer, maybe_compile
from genworld.utils.optim import Minimizer

REWARD_RANGE_TARGET = 1000.0
"""Rewards are scaled so the dataset's return range spans this (IQL paper, Appendix B)."""
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
"""Actor log-std clamp (CORL ``iql.py`` LOG_STD_MIN/LOG_STD_MAX)."""


@dataclass(frozen=True)
class IQLConfig:
    hidden: tuple[int, ...] = (256, 256)
    """Hidden sizes of the actor, the value net and each critic."""
    expectile: float = 0.7
    """tau of the asymmetric L2 loss for V (paper: 0.7 on locomotion)."""
    beta: float = 3.0
    """Inverse temperature of the advantage weights exp(beta * A)."""
    max_weight: float = 100.0
    """Advantage weights are clipped at this (CORL EXP_ADV_MAX)."""
    gamma: float = 0.99
    """Discount."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor before its cosine decay (paper: 3e-4)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the Q critics (paper: 3e-4)."""
    value_lr: float = 3e-4
    """Adam learning rate of the value net V (paper: 3e-4)."""
    actor_lr_decay_steps: int = 0
    """Cosine decay of the actor lr to 0 over this many updates; 0 = over the run's updates
    (the paper and ikostrikov: the whole run, 1M updates)."""
    batch_size: int = 256
    """Transitions per update, over all envs (paper: 256)."""
    num_critics: int = 2
    """Critics in the ensemble; V regresses to the minimum over their targets."""
    max_grad_norm: float = 0.0
    """Per-network gradient-norm clip; 0 = none (the IQL paper and CORL do not clip)."""
    deterministic_actor: bool = False
    """False: Gaussian actor, weighted log-likelihood. True: tanh actor, weighted MSE."""
    normalize_reward: bool = True
    """Scale each env's rewards by REWARD_RANGE_TARGET / its (max - min) episode return."""
    sampling: str = "balanced"
    """balanced (equal share per env) or proportional (to each env's transitions)."""
    compile: bool = False
    """``torch.compile`` the loss computation (eager fallback if compiling fails). Compiling
    costs seconds up front for a modest gain in updates/s (``genworld bench algos``; measured:
    docs/notes/history.md), so it pays only on long runs: on at ``full``, off at ``tiny``/``mini``."""

    def validate(self) -> None:
        validate_iql_fields(self)
        if self.sampling not in ("balanced", "proportional"):
            raise GenworldError(f"sampling {self.sampling!r}: use balanced or proportional")
        if self.max_grad_norm < 0:
            raise GenworldError(
                f"max_grad_norm must be >= 0 (0 = no clipping), got {self.max_grad_norm}"
            )


def cosine_decay(lr: float, step: int, length: int) -> float:
    """``lr`` cosine-decayed to 0 over ``length`` updates, then held at 0 (the actor's lr)."""
    progress = min(step, length) / length
    return lr * 0.5 * (1 + math.cos(math.pi * progress))


def validate_iql_fields(cfg) -> None:
    """The checks IQL's and DD-IQL's configs share (expectile, batch, critics, decay length)."""
    if not 0.0 < cfg.expectile < 1.0:
        raise GenworldError(f"expectile must be in (0, 1), got {cfg.expectile}")
    if cfg.batch_size < 1 or cfg.num_critics < 1:
        raise GenworldError("batch_size and num_critics must be >= 1")
    if cfg.actor_lr_decay_steps < 0:
        raise GenworldError(
            f"actor_lr_decay_steps must be >= 0 (0 = the run's updates), "
            f"got {cfg.actor_lr_decay_steps}"
        )


PRESETS: dict[str, dict] = {
    "tiny": {"hidden": (32, 32), "batch_size": 32},
    "full": {"compile": True},
}


def build(ctx: AlgoContext) -> IQL:
    cfg = resolve_config(IQLConfig, PRESETS, ctx)
    decay = schedule_length(cfg.actor_lr_decay_steps, ctx.updates, "actor_lr_decay_steps")
    return IQL(ctx.dataset, ctx.normalizer, cfg, ctx.device, actor_lr_decay_steps=decay)


def expectile_loss(diff: torch.Tensor, expectile: float) -> torch.Tensor:
    """Asymmetric L2 ``mean(|tau - 1(u < 0)| u^2)`` of ``u = target - prediction`` (paper eq. 5)."""
    weight = torch.where(diff < 0, 1.0 - expectile, expectile)
    return (weight * diff.pow(2)).mean()


def advantage_weights(advantage: torch.Tensor, beta: float, max_weight: float) -> torch.Tensor:
    """``exp(beta * A)`` clipped at ``max_weight`` (paper eq. 7; CORL EXP_ADV_MAX)."""
    return torch.exp(beta * advantage).clamp(max=max_weight)


def reward_scales(dataset: MultiEnvDataset) -> torch.Tensor:
    """``(num_envs,)`` per-env ``1000 / (max - min episode return)`` (1 where the range is 0)."""
    scales = []
    for env in dataset.envs:
        spread = float(np.max(env.episode_returns) - np.min(env.episode_returns))
        scales.append(REWARD_RANGE_TARGET / spread if spread > 1e-8 else 1.0)
    return torch.tensor(scales, dtype=torch.float32)


class IQL:
    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: IQLConfig,
        device: torch.device,
        *,
        actor_lr_decay_steps: int,
    ):
        """``actor_lr_decay_steps``: the cosine decay's length (the config's, or the run's)."""
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.decay_steps = actor_lr_decay_steps
        self.num_envs, self.normalizer = dataset.num_envs, normalizer.to(device)
        obs_max, act_max = dataset.obs_max, dataset.act_max
        in_dim = obs_max + self.num_envs
        self.actor = mlp(in_dim, cfg.hidden, act_max).to(device)
        self.log_std = nn.Parameter(torch.zeros(self.num_envs, act_max, device=device))
        self.value = mlp(in_dim, cfg.hidden, 1).to(device)
        self.critic = EnsembleMLP(cfg.num_critics, in_dim + act_max, cfg.hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        actor_params = [*self.actor.parameters()]
        if not cfg.deterministic_actor:
            actor_params.append(self.log_std)
        self.opt = torch.optim.Adam(
            [
                {"params": actor_params, "lr": cfg.actor_lr},
                {"params": self.critic.parameters(), "lr": cfg.critic_lr},
                {"params": self.value.parameters(), "lr": cfg.value_lr},
            ],
            fused=fused_optimizer(device),
        )
        self.opt_min = Minimizer(self.opt)
        self.act_masks = dataset.act_masks().float().to(device)  # (K, A)
        self.obs_masks = dataset.obs_masks().float().to(device)  # (K, O)
        scales = reward_scales(dataset) if cfg.normalize_reward else torch.ones(self.num_envs)
        self.reward_scale = scales.to(device)  # (K,)
        self.step = 0
        self._losses = maybe_compile(self.losses, cfg.compile, what="the IQL losses")

    def _inputs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """Per-env normalised observations (padded dims exactly 0) plus the one-hot env id."""
        x = self.normalizer.normalize_obs(obs, env_idx) * self.obs_masks[env_idx]  # (B, O)
        return torch.cat([x, nn.functional.one_hot(env_idx, self.num_envs).to(x.dtype)], -1)

    def _mean(self, x: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.actor(x)) * self.act_masks[env_idx]  # (B, A)

    def losses(self, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every loss of one step from the current parameters, each reaching only its own
        network (value, critic, actor), and detached metrics."""
        env, cfg = batch.env_idx, self.cfg
        mask = self.act_masks[env]  # (B, A)
        x, next_x = (
            self._inputs(batch.observations, env),
            self._inputs(batch.next_observations, env),
        )
        actions = batch.actions * mask  # (B, A)
        state_actions = torch.cat([x, actions], -1)  # (B, O + K + A)
        with torch.no_grad():
            target_q = self.critic_target(state_actions).min(0).values  # (B, 1)
            next_v = self.value(next_x).squeeze(-1)  # (B,)
            rewards = batch.rewards * self.reward_scale[env]  # (B,)
            target = rewards + cfg.gamma * (1.0 - batch.terminations) * next_v  # (B,)
        v = self.value(x).squeeze(-1)  # (B,)
        advantage = target_q.squeeze(-1) - v  # (B,)
        value_loss = expectile_loss(advantage, cfg.expectile)
        q = self.critic(state_actions).squeeze(-1)  # (E, B)
        critic_loss = (q - target).pow(2).mean()
        weights = advantage_weights(advantage.detach(), cfg.beta, cfg.max_weight)  # (B,)
        mean = self._mean(x, env)  # (B, A)
        if cfg.deterministic_actor:
            per_sample = ((mean - actions).pow(2) * mask).sum(-1)  # (B,)
        else:
            log_std = self.log_std[env].clamp(LOG_STD_MIN, LOG_STD_MAX)  # (B, A)
            nll = 0.5 * ((actions - mean) / log_std.exp()).pow(2) + log_std
            per_sample = ((nll + 0.5 * math.log(2 * math.pi)) * mask).sum(-1)  # (B,)
        actor_loss = (weights * per_sample).mean()
        losses = {"value": value_loss, "critic": critic_loss, "actor": actor_loss}
        return losses, {
            "q": q.detach().mean(),
            "v": v.detach().mean(),
            "advantage": advantage.detach().mean(),
            "weight": weights.mean(),
        }

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.dataset.sample_transitions(self.cfg.batch_size, generator, self.cfg.sampling)
        losses, metrics = self._losses(batch.to(self.device))
        self.opt.param_groups[0]["lr"] = cosine_decay(
            self.cfg.actor_lr, self.step, self.decay_steps
        )
        # param groups: actor (with its log-std), critic, value: a per-network clip
        self.opt_min.minimize(sum(losses.values()), self.cfg.max_grad_norm)
        with torch.no_grad():
            torch._foreach_lerp_(*self._polyak, self.cfg.tau)
        self.step += 1
        return {
            **{f"losses/{k}": v.detach() for k, v in losses.items()},
            **{f"losses/{k}": v for k, v in metrics.items()},
        }

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        obs, env_idx = obs.to(self.device), env_idx.to(self.device)
        mean = self._mean(self._inputs(obs, env_idx), env_idx)  # (n, A)
        if deterministic or self.cfg.deterministic_actor:
            return mean
        std = self.log_std[env_idx].clamp(LOG_STD_MIN, LOG_STD_MAX).exp()
        return (mean + std * torch.randn_like(mean)).clamp(-1.0, 1.0) * self.act_masks[env_idx]

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object, so checkpoints forget nothing."""
        return {
            "actor": self.actor,
            "value": self.value,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
            "normalizer": self.normalizer,
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"log_std": self.log_std, "reward_scale": self.reward_scale}

    def state_dict(self) -> dict:
        return agent_state(
            self.modules(), self._tensors(), step=self.step, actor_lr_decay_steps=self.decay_steps
        )

    def load_state_dict(self, state: dict) -> None:
        check_schedule_length(state, self.decay_steps, "actor_lr_decay_steps")
        load_agent_state(self.modules(), self._tensors(), state)
        self.step = int(state["step"])
