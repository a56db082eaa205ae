"""PPO with environment-agnostic networks, online, over several different Gymnasium envs at once
(the paper's online multi-env agent; :mod:`genworld.train.distributed` runs it as DD-PPO).

Papers: Kim & Joo 2023, "Agnostic Architecture for Heterogeneous Multi-Environment Reinforcement
Learning" (§3, Algorithm 1); Schulman et al. 2017, "Proximal Policy Optimization Algorithms";
Wijmans et al. 2019, "DD-PPO". Reference implementation and hyper-parameters: CleanRL
``ppo_continuous_action.py`` (commit 016ca33a,
https://github.com/vwxyzjn/cleanrl/blob/016ca33aa70f188ef385082524373ccb6dd14e03/cleanrl/ppo_continuous_action.py):
lr 3e-4 (Adam eps 1e-5, linearly annealed), 2048 steps per env per rollout, 32 minibatches, 10
epochs, gamma 0.99, GAE lambda 0.95, advantage normalisation, clip 0.2, clipped value loss,
entropy 0, value coefficient 0.5, global grad-norm clip 0.5, observations normalised by running
statistics and clipped to ±10, rewards divided by the running std of the discounted return
(gymnasium 1.0 ``NormalizeReward``) and clipped to ±10; ``done = terminated or truncated``
(no bootstrap on time limits, as CleanRL).

Envs: genworld names (``hopper``: the registry's variant) or any Gymnasium id (``Pendulum-v1``,
``CartPole-v1``); Box actions (Gaussian head) and Discrete ones (categorical head: a discrete
env's ``n`` choices are its ``n`` 'action dims'). Every step, the observations of all envs this
process holds are padded into one batch and go through the networks in one forward (the point of
the agnostic architecture); each env type keeps ``num_envs`` copies stepped with same-step
auto-reset (gymnasium 1.0's vector envs reset on the next step).

Deviations:
- Continuous actions live in [-1, 1] for every env and are clipped and mapped affinely to the
  env's Box (CleanRL clips raw actions to the Box), so one network sees one action scale.
- The policy's log-std is state-dependent (paper §3.1) instead of CleanRL's free vector;
  orthogonal init is not used (the agnostic blocks use PyTorch defaults).
- The loss is the mean over envs of each env's PPO loss (paper Algorithm 1 sums them), and
  advantages are normalised per env within a minibatch (one env's reward scale cannot swamp
  another's); one lr for actor and critic (CleanRL; the paper uses 3e-4 / 5e-4).
- Minibatches: each env's rollout is shuffled by its own stream seeded by (iteration seed, env
  index) and minibatch ``m`` takes the ``m``-th slice of every env, so an env's minibatches do not
  depend on which process holds it. Running statistics are per env.
- 32 minibatches per epoch (CleanRL) against the paper's 8 (Table 2a); ``num_minibatches``.
- A resumed run continues from the checkpointed networks, optimiser, statistics and iteration,
  with freshly reset envs (simulator states are not checkpointed).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch
from torch import nn

from genworld.algos.registry import agent_state, load_agent_state
from genworld.data import rollouts
from genworld.envs.groups import EnvGroup, env_info
from genworld.envs.padded_groups import PaddedGroups, group_returns, padded_masks
from genworld.errors import GenworldError
from genworld.nn.agnostic import (
    NET_PRESETS,
    AgnosticActor,
    AgnosticConfig,
    AgnosticCritic,
    RunningObsNorm,
)
from genworld.nn.distributions import (
    masked_log_prob_entropy,
    mode_actions,
    sample_actions,
)
from genworld.utils.device import fused_optimizer


@dataclass(frozen=True)
class PPOConfig:
    envs: tuple[str, ...] = ("halfcheetah", "hopper", "walker2d", "ant")
    """genworld env names or Gymnasium ids; envs of different sizes train one network."""
    net: AgnosticConfig = field(default_factory=AgnosticConfig)
    """Actor and critic sizes (``num_tasks`` is set from the env count)."""
    task_embedding: bool = True
    """Learned per-env task embedding in the residual MLP (paper Fig. 1a)."""
    total_timesteps: int = 1_000_000
    """Env steps over all envs and processes."""
    learning_rate: float = 3e-4
    """Adam learning rate of actor and critic together (CleanRL: 3e-4, Adam eps 1e-5)."""
    num_envs: int = 1
    """Copies of each env stepped in parallel."""
    num_steps: int = 2048
    """Steps per copy per rollout."""
    anneal_lr: bool = True
    """Anneal the learning rate linearly to 0 over the run's iterations (CleanRL: on)."""
    gamma: float = 0.99
    """Discount of GAE and of the reward normaliser's running return (CleanRL: 0.99)."""
    gae_lambda: float = 0.95
    """lambda of GAE advantages (CleanRL: 0.95)."""
    num_minibatches: int = 32
    """Minibatches per epoch, each an equal slice of every env's rollout (CleanRL: 32)."""
    update_epochs: int = 10
    """Passes over each rollout (CleanRL: 10)."""
    norm_adv: bool = True
    """Normalise advantages per env within each minibatch (CleanRL: per minibatch)."""
    clip_coef: float = 0.2
    """Clip range of the policy ratio, and of the value change with clip_vloss (CleanRL: 0.2)."""
    clip_vloss: bool = True
    """Clip the value loss around the rollout's value estimates (CleanRL: on)."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus in the loss (CleanRL: 0)."""
    vf_coef: float = 0.5
    """Weight of the value loss (CleanRL: 0.5)."""
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (CleanRL; paper §3.2)."""
    target_kl: float | None = None
    """Stop an iteration's epochs once the approximate KL exceeds this (None: never)."""
    normalize_observation: bool = True
    """Normalise observations by per-env running mean and variance (CleanRL: on)."""
    normalize_reward: bool = True
    """Divide rewards by the per-env running std of the discounted return (CleanRL: on)."""
    clip_observation: float = 10.0
    """Normalised observations are clipped to ±this (CleanRL: 10)."""
    clip_reward: float = 10.0
    """Normalised rewards are clipped to ±this (CleanRL: 10)."""
    seed: int = 0
    """Seed of the envs' resets and of the sampling and minibatch random streams."""

    def validate(self) -> None:
        if not self.envs:
            raise GenworldError("PPO needs at least one env")
        rows = self.num_envs * self.num_steps
        if rows % self.num_minibatches:
            raise GenworldError(
                f"num_envs * num_steps = {rows} is not divisible by num_minibatches "
                f"{self.num_minibatches}"
            )
        if self.total_timesteps < rows * len(self.envs):
            raise GenworldError(
                f"total_timesteps {self.total_timesteps} is less than one rollout "
                f"({rows * len(self.envs)} steps over {len(self.envs)} envs)"
            )


PRESETS: dict[str, dict] = {
    "tiny": {
        "net": NET_PRESETS["tiny"],
        "num_envs": 2,
        "num_steps": 64,
        "num_minibatches": 4,
        "update_epochs": 2,
        "total_timesteps": 2 * 64 * 4 * 2,
    },
    "mini": {
        "net": NET_PRESETS["mini"],
        "num_envs": 4,
        "num_steps": 512,
        "total_timesteps": 200_000,
    },
    "full": {"net": NET_PRESETS["full"], "num_envs": 32},
}


class PPONetworks(nn.Module):
    """Actor and critic; ``forward`` is one minibatch's PPO loss (one DDP wrapper for both)."""

    def __init__(self, net: AgnosticConfig, cfg: PPOConfig, continuous: bool, discrete: bool):
        super().__init__()
        self.cfg = cfg
        self.actor = AgnosticActor(net, continuous=continuous, discrete=discrete)
        self.critic = AgnosticCritic(net)

    def forward(
        self,
        x,
        obs_mask,
        env,
        act_mask,
        is_discrete,
        actions,
        old_logp,
        adv,
        returns,
        old_values,
        scale,
    ):
        gauss, logits = self.actor.heads(x, obs_mask, env, act_mask)
        logp, entropy = masked_log_prob_entropy(gauss, logits, actions, act_mask, is_discrete)
        value = self.critic(x, obs_mask, env)  # (B,)
        cfg, log_ratio = self.cfg, logp - old_logp
        ratio = log_ratio.exp()
        pg_rows = clipped_surrogate(adv, ratio, cfg.clip_coef)
        v_rows = value_loss(value, old_values, returns, cfg.clip_coef if cfg.clip_vloss else None)
        rows = pg_rows - cfg.ent_coef * entropy + cfg.vf_coef * v_rows  # (B,) CleanRL's total
        with torch.no_grad():
            metrics = {"policy_loss": pg_rows.mean(), "value_loss": v_rows.mean()}
            metrics["entropy"] = entropy.mean()
            metrics["approx_kl"] = ((ratio - 1) - log_ratio).mean()  # Schulman's k3 estimator
            metrics["clipfrac"] = ((ratio - 1.0).abs() > cfg.clip_coef).float().mean()
        return scale * rows.sum(), metrics


def clipped_surrogate(adv: torch.Tensor, ratio: torch.Tensor, clip: float) -> torch.Tensor:
    """Per-row −L^CLIP (Schulman et al. 2017, eq. 7): max(−A·r, −A·clip(r, 1 ± ε))."""
    return torch.max(-adv * ratio, -adv * ratio.clamp(1 - clip, 1 + clip))


def value_loss(value, old_values, returns, clip: float | None) -> torch.Tensor:
    """Per-row ½(V − R)², or with ``clip`` the larger of it and the clipped V's (CleanRL)."""
    if clip is None:
        return 0.5 * (value - returns).pow(2)
    clipped = old_values + (value - old_values).clamp(-clip, clip)
    return 0.5 * torch.max((value - returns).pow(2), (clipped - returns).pow(2))


class PPO:
    """PPO over the envs ``env_ids`` (indices into ``cfg.envs``) held by this process."""

    def __init__(self, cfg: PPOConfig, device: torch.device, env_ids: Sequence[int] | None = None):
        cfg.validate()
        self.cfg, self.device = cfg, device
        self.infos = [env_info(name) for name in cfg.envs]
        self.env_ids = list(range(len(cfg.envs))) if env_ids is None else list(env_ids)
        num_envs = len(self.infos)
        self.obs_max = max(i.obs_dim for i in self.infos)
        self.act_max = max(i.act_dim for i in self.infos)
        kinds = {i.discrete for i in self.infos}
        net = replace(cfg.net, num_tasks=num_envs if cfg.task_embedding else 0)
        self.nets = PPONetworks(net, cfg, False in kinds, True in kinds).to(device)
        self.mixed_heads = len(kinds) == 2
        self.train_module: nn.Module = self.nets
        self.world_size = 1
        self.opt = torch.optim.Adam(
            self.nets.parameters(), lr=cfg.learning_rate, eps=1e-5, fused=fused_optimizer(device)
        )
        self.obs_norm = RunningObsNorm(num_envs, self.obs_max, cfg.clip_observation).to(device)
        self.return_norm = RunningObsNorm(num_envs, 1, clip=math.inf).to(device)
        obs_masks, act_masks = padded_masks(self.infos)
        self.obs_masks, self.act_masks = obs_masks.to(device), act_masks.to(device)
        self.discrete = torch.tensor([i.discrete for i in self.infos], device=device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0
        rows = cfg.num_steps * cfg.num_envs
        self.num_iterations = cfg.total_timesteps // (rows * num_envs)
        self.envs: PaddedGroups | None = None
        # column c of a rollout belongs to env self.columns[c] (all copies of a group together)
        cols = [g for g in self.env_ids for _ in range(cfg.num_envs)]
        self.columns = torch.tensor(cols, device=device)

    def use_ddp(self, wrap: Callable[[nn.Module], nn.Module], world_size: int) -> None:
        self.train_module, self.world_size = wrap(self.nets), world_size

    def _start_envs(self) -> None:
        self.close()
        seed = self.cfg.seed * 1_000_003 + self.iteration
        groups = [
            EnvGroup(self.infos[g], self.cfg.num_envs, seed + 7919 * (g + 1), key=g)
            for g in self.env_ids
        ]
        self.envs = PaddedGroups(groups, self.obs_max, self.device)
        self._obs = self.envs.reset()

    def _observe(self, raw: torch.Tensor, env: torch.Tensor, update: bool) -> torch.Tensor:
        if not self.cfg.normalize_observation:
            return raw * self.obs_masks[env, : raw.shape[1]]
        if update:
            self.obs_norm.update(raw, env)
        return self.obs_norm(raw, env) * self.obs_masks[env, : raw.shape[1]]

    @torch.no_grad()
    def _sample(self, x, env, noise, uniform):
        """Actions from standard-normal ``noise (B, A)`` (Box envs) or by inverse CDF from
        ``uniform (B, 1)`` (Discrete envs); their log-probabilities and the values."""
        act_mask, is_discrete = self.act_masks[env], self.discrete[env]
        gauss, logits = self.nets.actor.heads(x, self.obs_masks[env], env, act_mask)
        actions = sample_actions(gauss, logits, act_mask, is_discrete, noise, uniform, self.act_max)
        logp, _ = masked_log_prob_entropy(gauss, logits, actions, act_mask, is_discrete)
        return actions, logp, self.nets.critic(x, self.obs_masks[env], env)

    def _collect(self, seed: int) -> dict[str, torch.Tensor]:
        cfg, env = self.cfg, self.columns
        streams = [rollouts.seed_stream(seed, 10_000 + g) for g in self.env_ids]
        buf = rollouts.rollout_buffer(cfg.num_steps, env, self.obs_max, self.act_max)
        done = torch.zeros(len(env), device=self.device)
        for t in range(cfg.num_steps):
            x = self._observe(self._obs, env, update=True)
            draws = rollouts.stream_draws(streams, cfg.num_envs, self.act_max, self.device)
            actions, logp, value = self._sample(x, env, *draws)
            buf["x"][t], buf["actions"][t] = x, actions
            buf["logp"][t], buf["values"][t] = logp, value
            buf["dones"][t] = done
            self._obs, buf["rewards"][t], done = self.envs.step(actions, self._scale_rewards)
        with torch.no_grad():
            x = self._observe(self._obs, env, False)
            next_value = self.nets.critic(x, self.obs_masks[env], env)
        buf["advantages"] = rollouts.gae(buf, next_value, done, cfg)
        buf["returns"] = buf["advantages"] + buf["values"]
        return buf

    def _scale_rewards(self, grp: EnvGroup, rewards, terminated) -> np.ndarray:
        """gymnasium 1.0 ``NormalizeReward`` per env (stats shared by its copies), then clip."""
        cfg = self.cfg
        if not cfg.normalize_reward:
            return rewards
        stats = (self.return_norm, cfg.gamma, cfg.clip_reward)
        return rollouts.normalize_rewards(grp, rewards, terminated, *stats)

    def iterate(self) -> dict[str, float]:
        """One rollout of ``num_steps`` on every held env, then the PPO epochs."""
        cfg = self.cfg
        if self.envs is None:
            self._start_envs()
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / max(self.num_iterations, 1)
            self.opt.param_groups[0]["lr"] = frac * cfg.learning_rate
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        buf = self._collect(seed)
        metrics = self._learn(buf, seed)
        for name, mean in self.envs.pop_returns().items():
            metrics[f"charts/{name}/episodic_return"] = mean
        self.iteration += 1
        return metrics

    def _learn(self, buf, seed: int) -> dict[str, float]:
        cfg, S = self.cfg, len(self.env_ids)
        n = cfg.num_steps * cfg.num_envs  # rows per env
        m = n // cfg.num_minibatches  # rows per env in a minibatch
        data = {k: rollouts.per_env(v, S) for k, v in buf.items()}
        env = rollouts.per_env(self.columns.expand(cfg.num_steps, -1), S)  # (S, n)
        streams = [rollouts.seed_stream(seed, g) for g in self.env_ids]
        scale = self.world_size / (m * len(self.infos))
        totals: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.update_epochs):
            batches = rollouts.minibatches(data, env, streams, cfg.num_minibatches, self.device)
            for mb, mb_env in batches:
                adv = mb["advantages"]  # (S, m)
                if cfg.norm_adv:
                    adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
                flat = {k: v.reshape(S * m, *v.shape[2:]) for k, v in mb.items()}
                inputs = (flat["x"], self.obs_masks[mb_env], mb_env, self.act_masks[mb_env])
                rollout = (self.discrete[mb_env], flat["actions"], flat["logp"], adv.reshape(-1))
                loss, metrics = self.train_module(
                    *inputs, *rollout, flat["returns"], flat["values"], scale
                )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.nets.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for k, v in metrics.items():
                    totals[f"losses/{k}"] = totals.get(f"losses/{k}", 0.0) + float(v)
                updates += 1
            if (
                cfg.target_kl is not None
                and self.kl_over_processes(metrics["approx_kl"]) > cfg.target_kl
            ):
                break
        out = {k: v / updates for k, v in totals.items()}
        out["charts/learning_rate"] = self.opt.param_groups[0]["lr"]
        return out

    def kl_over_processes(self, kl: torch.Tensor) -> float:
        """The last minibatch's KL estimate averaged over the processes: every rank then stops its
        epochs at the same one (a rank stopping alone would leave the others waiting in DDP's
        gradient all-reduce)."""
        kl = kl.detach().float().reshape(1).clone()
        if self.world_size > 1:
            import torch.distributed as dist

            dist.all_reduce(kl)
            kl /= self.world_size
        return float(kl)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        """Padded raw observations → actions in [-1, 1] (Box envs; zero on padded dims) or the
        choice index in column 0 (Discrete envs)."""
        obs, env_idx = obs.to(self.device), env_idx.to(self.device)
        x = self._observe(obs, env_idx, update=False)
        act_mask, is_discrete = self.act_masks[env_idx], self.discrete[env_idx]
        was_training = self.nets.training
        self.nets.eval()
        gauss, logits = self.nets.actor.heads(x, self.obs_masks[env_idx], env_idx, act_mask)
        self.nets.train(was_training)
        if not deterministic:
            noise = torch.randn(len(obs), self.act_max, device=self.device)
            uniform = torch.rand(len(obs), 1, device=self.device)
            actions, _, _ = self._sample(x, env_idx, noise, uniform)
            return actions.clamp(-1.0, 1.0)
        return mode_actions(gauss, logits, act_mask, is_discrete, self.act_max)

    def evaluate(self, episodes: int, seed: int) -> dict[str, np.ndarray]:
        """Deterministic returns of the held envs; episode ``i`` is reset with ``seed + i``."""
        results = {}
        for g in self.env_ids:
            info = self.infos[g]
            results[info.name] = group_returns(info, g, episodes, seed, self.act, self.obs_max)
        return results

    def stat_buffers(self) -> list[torch.Tensor]:
        """Per-env running statistics (env axis first): each env's are moved only by the
        process holding it, so a sum over processes of the held rows syncs them."""
        return [*self.obs_norm.buffers(), *self.return_norm.buffers()]

    def _modules(self) -> dict:
        return dict(
            nets=self.nets, opt=self.opt, obs_norm=self.obs_norm, return_norm=self.return_norm
        )

    def state_dict(self) -> dict:
        generator = self.generator.get_state()
        return agent_state(self._modules(), generator=generator, iteration=self.iteration)

    def load_state_dict(self, state: dict) -> None:
        load_agent_state(self._modules(), None, state)
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.close()

    def close(self) -> None:
        if self.envs is not None:
            self.envs.close()
        self.envs = None
