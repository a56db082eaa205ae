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

from genworld.envs.groups import EnvGroup, env_info
from genworld.errors import GenworldError
from genworld.nn.agnostic import (
    NET_PRESETS,
    AgnosticActor,
    AgnosticConfig,
    AgnosticCritic,
    RunningObsNorm,
)
from genworld.utils.device import fused_optimizer

SEED_STRIDE = 0x9E3779B97F4A7C15
"""Mixes an env index into an iteration's seed (golden-ratio constant, splitmix64)."""


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
    num_envs: int = 1
    """Copies of each env stepped in parallel."""
    num_steps: int = 2048
    """Steps per copy per rollout."""
    anneal_lr: bool = True
    gamma: float = 0.99
    gae_lambda: float = 0.95
    num_minibatches: int = 32
    update_epochs: int = 10
    norm_adv: bool = True
    clip_coef: float = 0.2
    clip_vloss: bool = True
    ent_coef: float = 0.0
    vf_coef: float = 0.5
    max_grad_norm: float = 0.5
    """Global gradient-norm clip (CleanRL; paper §3.2)."""
    target_kl: float | None = None
    """Stop an iteration's epochs once the approximate KL exceeds this (None: never)."""
    normalize_observation: bool = True
    normalize_reward: bool = True
    clip_observation: float = 10.0
    clip_reward: float = 10.0
    seed: int = 0

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


def _stream(seed: int, key: int) -> torch.Generator:
    return torch.Generator().manual_seed((seed + (key + 1) * SEED_STRIDE) % 2**63)


class PPONetworks(nn.Module):
    """Actor and critic; ``forward`` is one minibatch's PPO loss (one DDP wrapper for both)."""

    def __init__(self, net: AgnosticConfig, cfg: PPOConfig, continuous: bool, discrete: bool):
        super().__init__()
        self.cfg = cfg
        self.actor = AgnosticActor(net, continuous=continuous, discrete=discrete)
        self.critic = AgnosticCritic(net)

    def distribution(self, x, obs_mask, env, act_mask, is_discrete):
        """Per-row (mean, log_std) and logits; the head a row's env does not use is None."""
        f = self.actor.features(x, obs_mask, env, act_mask)  # (B, A, H)
        gauss = self.actor.gaussian_head(f, act_mask) if self.actor.mean is not None else None
        logits = self.actor.categorical_head(f, act_mask) if self.actor.logit is not None else None
        return gauss, logits

    @staticmethod
    def log_prob_entropy(gauss, logits, actions, act_mask, is_discrete):
        """``(B,)`` log-probability of ``actions`` and entropy, over true dims only."""
        logp = torch.zeros(len(actions), device=actions.device)
        entropy = torch.zeros_like(logp)
        mask = act_mask.to(actions.dtype)
        if gauss is not None:
            mean, log_std = gauss
            z = (actions - mean) / log_std.exp()
            lp = ((-0.5 * z.pow(2) - log_std - 0.5 * math.log(2 * math.pi)) * mask).sum(-1)
            ent = ((0.5 + 0.5 * math.log(2 * math.pi) + log_std) * mask).sum(-1)
            logp, entropy = (
                torch.where(is_discrete, logp, lp),
                torch.where(is_discrete, entropy, ent),
            )
        if logits is not None:
            log_p = torch.log_softmax(logits, -1)  # (B, A)
            index = actions[:, :1].long().clamp(0, logits.shape[1] - 1)  # (B, 1)
            lp = log_p.gather(1, index).squeeze(1)
            ent = -(log_p.exp() * log_p * mask).sum(-1)
            logp, entropy = (
                torch.where(is_discrete, lp, logp),
                torch.where(is_discrete, ent, entropy),
            )
        return logp, entropy

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
        cfg = self.cfg
        gauss, logits = self.distribution(x, obs_mask, env, act_mask, is_discrete)
        logp, entropy = self.log_prob_entropy(gauss, logits, actions, act_mask, is_discrete)
        value = self.critic(x, obs_mask, env)  # (B,)
        log_ratio = logp - old_logp
        ratio = log_ratio.exp()
        pg_rows = torch.max(-adv * ratio, -adv * ratio.clamp(1 - cfg.clip_coef, 1 + cfg.clip_coef))
        if cfg.clip_vloss:
            clipped = old_values + (value - old_values).clamp(-cfg.clip_coef, cfg.clip_coef)
            v_rows = 0.5 * torch.max((value - returns).pow(2), (clipped - returns).pow(2))
        else:
            v_rows = 0.5 * (value - returns).pow(2)
        rows = pg_rows - cfg.ent_coef * entropy + cfg.vf_coef * v_rows  # (B,)
        with torch.no_grad():
            metrics = {
                "policy_loss": pg_rows.mean(),
                "value_loss": v_rows.mean(),
                "entropy": entropy.mean(),
                "approx_kl": ((ratio - 1) - log_ratio).mean(),
                "clipfrac": ((ratio - 1.0).abs() > cfg.clip_coef).float().mean(),
            }
        return scale * rows.sum(), metrics


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
        dims = torch.tensor([i.obs_dim for i in self.infos])
        adims = torch.tensor([i.act_dim for i in self.infos])
        self.obs_masks = (torch.arange(self.obs_max)[None] < dims[:, None]).to(device)
        self.act_masks = (torch.arange(self.act_max)[None] < adims[:, None]).to(device)
        self.discrete = torch.tensor([i.discrete for i in self.infos], device=device)
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.iteration = 0
        rows = cfg.num_steps * cfg.num_envs
        self.num_iterations = cfg.total_timesteps // (rows * num_envs)
        self.groups: list[EnvGroup] = []
        # column c of a rollout belongs to env self.columns[c] (all copies of a group together)
        cols = [g for g in self.env_ids for _ in range(cfg.num_envs)]
        self.columns = torch.tensor(cols, device=device)

    def use_ddp(self, wrap: Callable[[nn.Module], nn.Module], world_size: int) -> None:
        self.train_module, self.world_size = wrap(self.nets), world_size

    def _start_envs(self) -> None:
        self.close()
        seed = self.cfg.seed * 1_000_003 + self.iteration
        self.groups = [
            EnvGroup(self.infos[g], self.cfg.num_envs, seed + 7919 * (g + 1), key=g)
            for g in self.env_ids
        ]
        obs = [grp.reset() for grp in self.groups]
        self._obs = self._pad(obs)

    def _pad(self, per_group: list[np.ndarray]) -> torch.Tensor:
        out = torch.zeros(len(self.columns), self.obs_max)
        start = 0
        for grp, obs in zip(self.groups, per_group, strict=True):
            out[start : start + len(obs), : grp.info.obs_dim] = torch.as_tensor(
                obs, dtype=torch.float32
            )
            start += len(obs)
        return out.to(self.device)

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
        gauss, logits = self.nets.distribution(x, self.obs_masks[env], env, act_mask, is_discrete)
        actions = torch.zeros(len(x), self.act_max, device=x.device)
        if gauss is not None:
            mean, log_std = gauss
            sample = (mean + log_std.exp() * noise) * act_mask
            actions = torch.where(is_discrete[:, None], actions, sample)
        if logits is not None:
            cdf = torch.softmax(logits, -1).cumsum(-1)  # (B, A)
            choice = (cdf < uniform).sum(-1).clamp(max=self.act_max - 1).float()
            index = torch.zeros_like(actions)
            index[:, 0] = choice
            actions = torch.where(is_discrete[:, None], index, actions)
        logp, _ = self.nets.log_prob_entropy(gauss, logits, actions, act_mask, is_discrete)
        return actions, logp, self.nets.critic(x, self.obs_masks[env], env)

    def _draws(self, streams: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
        """This step's noise, each env's rows from its own stream (shard-independent)."""
        copies = self.cfg.num_envs
        noise = [torch.randn(copies, self.act_max, generator=s) for s in streams]
        uniform = [torch.rand(copies, 1, generator=s) for s in streams]
        return torch.cat(noise).to(self.device), torch.cat(uniform).to(self.device)

    def _collect(self, seed: int) -> dict[str, torch.Tensor]:
        cfg, env = self.cfg, self.columns
        streams = [_stream(seed, 10_000 + g) for g in self.env_ids]
        T, C = cfg.num_steps, len(env)
        buf = {
            "x": torch.zeros(T, C, self.obs_max, device=self.device),
            "actions": torch.zeros(T, C, self.act_max, device=self.device),
            **{
                k: torch.zeros(T, C, device=self.device)
                for k in ("logp", "rewards", "dones", "values")
            },
        }
        done = torch.zeros(C, device=self.device)
        for t in range(T):
            x = self._observe(self._obs, env, update=True)
            actions, logp, value = self._sample(x, env, *self._draws(streams))
            buf["x"][t], buf["actions"][t], buf["logp"][t], buf["values"][t] = (
                x,
                actions,
                logp,
                value,
            )
            buf["dones"][t] = done
            obs, rewards, dones, start = [], [], [], 0
            for grp in self.groups:
                n = len(grp.envs)
                o, r, term, d = grp.step(actions[start : start + n].cpu().numpy())
                obs.append(o)
                rewards.append(self._scale_rewards(grp, r, term))
                dones.append(d)
                start += n
            self._obs = self._pad(obs)
            buf["rewards"][t] = torch.as_tensor(np.concatenate(rewards), dtype=torch.float32)
            done = torch.as_tensor(np.concatenate(dones), dtype=torch.float32, device=self.device)
        with torch.no_grad():
            next_value = self.nets.critic(
                self._observe(self._obs, env, False), self.obs_masks[env], env
            )
        buf["advantages"] = self._gae(buf, next_value, done)
        buf["returns"] = buf["advantages"] + buf["values"]
        return buf

    def _scale_rewards(
        self, grp: EnvGroup, rewards: np.ndarray, terminated: np.ndarray
    ) -> np.ndarray:
        """gymnasium 1.0 ``NormalizeReward`` per env (stats shared by its copies), then clip."""
        if not self.cfg.normalize_reward:
            return rewards
        grp.discounted = grp.discounted * self.cfg.gamma * (1 - terminated) + rewards
        k = grp.key
        ids = torch.full((len(rewards),), k, device=self.device)
        self.return_norm.update(torch.as_tensor(grp.discounted[:, None], device=self.device), ids)
        std = math.sqrt(float(self.return_norm.var[k, 0]) + 1e-8)
        return np.clip(rewards / std, -self.cfg.clip_reward, self.cfg.clip_reward)

    def _gae(self, buf, next_value, next_done) -> torch.Tensor:
        cfg = self.cfg
        advantages = torch.zeros_like(buf["rewards"])
        last = torch.zeros_like(next_value)
        for t in reversed(range(cfg.num_steps)):
            if t == cfg.num_steps - 1:
                nonterminal, next_v = 1.0 - next_done, next_value
            else:
                nonterminal, next_v = 1.0 - buf["dones"][t + 1], buf["values"][t + 1]
            delta = buf["rewards"][t] + cfg.gamma * next_v * nonterminal - buf["values"][t]
            last = delta + cfg.gamma * cfg.gae_lambda * nonterminal * last
            advantages[t] = last
        return advantages

    def iterate(self) -> dict[str, float]:
        """One rollout of ``num_steps`` on every held env, then the PPO epochs."""
        cfg = self.cfg
        if not self.groups:
            self._start_envs()
        if cfg.anneal_lr:
            frac = 1.0 - self.iteration / max(self.num_iterations, 1)
            self.opt.param_groups[0]["lr"] = frac * cfg.learning_rate
        seed = int(torch.randint(0, 2**62, (1,), generator=self.generator))
        buf = self._collect(seed)
        metrics = self._learn(buf, seed)
        for grp in self.groups:
            if grp.finished:
                metrics[f"charts/{grp.info.name}/episodic_return"] = float(np.mean(grp.finished))
                grp.finished = []
        self.iteration += 1
        return metrics

    def _learn(self, buf, seed: int) -> dict[str, float]:
        cfg, S = self.cfg, len(self.env_ids)
        n = cfg.num_steps * cfg.num_envs  # rows per env
        m = n // cfg.num_minibatches

        def per_env(t: torch.Tensor) -> torch.Tensor:  # (T, C, ...) -> (S, n, ...)
            t = t.reshape(cfg.num_steps, S, cfg.num_envs, *t.shape[2:]).transpose(0, 1)
            return t.reshape(S, n, *t.shape[3:])

        data = {k: per_env(v) for k, v in buf.items()}
        env = per_env(self.columns.expand(cfg.num_steps, -1))  # (S, n)
        streams = [_stream(seed, g) for g in self.env_ids]
        scale = self.world_size / (m * len(self.infos))
        totals: dict[str, float] = {}
        updates = 0
        for _ in range(cfg.update_epochs):
            perm = torch.stack([torch.randperm(n, generator=s) for s in streams]).to(self.device)
            for start in range(0, n, m):
                idx = perm[:, start : start + m]  # (S, m)
                mb = {k: _take(v, idx) for k, v in data.items()}
                mb_env = env.gather(1, idx).reshape(-1)
                adv = mb["advantages"]  # (S, m)
                if cfg.norm_adv:
                    adv = (adv - adv.mean(1, keepdim=True)) / (adv.std(1, keepdim=True) + 1e-8)
                flat = {k: v.reshape(S * m, *v.shape[2:]) for k, v in mb.items()}
                loss, metrics = self.train_module(
                    flat["x"],
                    self.obs_masks[mb_env],
                    mb_env,
                    self.act_masks[mb_env],
                    self.discrete[mb_env],
                    flat["actions"],
                    flat["logp"],
                    adv.reshape(-1),
                    flat["returns"],
                    flat["values"],
                    scale,
                )
                self.opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(self.nets.parameters(), cfg.max_grad_norm)
                self.opt.step()
                for k, v in metrics.items():
                    totals[f"losses/{k}"] = totals.get(f"losses/{k}", 0.0) + float(v)
                updates += 1
            if cfg.target_kl is not None and float(metrics["approx_kl"]) > cfg.target_kl:
                break
        out = {k: v / updates for k, v in totals.items()}
        out["charts/learning_rate"] = self.opt.param_groups[0]["lr"]
        return out

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
        gauss, logits = self.nets.distribution(
            x, self.obs_masks[env_idx], env_idx, act_mask, is_discrete
        )
        self.nets.train(was_training)
        if not deterministic:
            noise = torch.randn(len(obs), self.act_max, device=self.device)
            uniform = torch.rand(len(obs), 1, device=self.device)
            actions, _, _ = self._sample(x, env_idx, noise, uniform)
            return actions.clamp(-1.0, 1.0)
        actions = torch.zeros(len(obs), self.act_max, device=self.device)
        if gauss is not None:
            actions = gauss[0].clamp(-1.0, 1.0) * act_mask
        if logits is not None:
            index = torch.zeros_like(actions)
            index[:, 0] = logits.argmax(-1).float()
            actions = torch.where(is_discrete[:, None], index, actions)
        return actions

    def evaluate(self, episodes: int, seed: int) -> dict[str, np.ndarray]:
        """Deterministic returns of the held envs; episode ``i`` is reset with ``seed + i``."""
        results = {}
        for g in self.env_ids:
            info = self.infos[g]
            group = EnvGroup(info, episodes, seed)
            obs = [e.reset(seed=seed + i)[0].reshape(-1) for i, e in enumerate(group.envs)]
            returns, alive = np.zeros(episodes), np.ones(episodes, bool)
            while alive.any():
                idx = np.flatnonzero(alive)
                padded = torch.zeros(len(idx), self.obs_max)
                padded[:, : info.obs_dim] = torch.as_tensor(
                    np.stack([obs[i] for i in idx]), dtype=torch.float32
                )
                actions = self.act(padded, torch.full((len(idx),), g)).cpu().numpy()
                for j, i in enumerate(idx):
                    env_action = group.to_env_actions(actions[j : j + 1])[0]
                    o, r, term, trunc, _ = group.envs[i].step(env_action)
                    obs[i], returns[i] = np.asarray(o).reshape(-1), returns[i] + r
                    alive[i] = not (term or trunc)
            group.close()
            results[info.name] = returns
        return results

    def stat_buffers(self) -> list[torch.Tensor]:
        """Per-env running statistics (env axis first): each env's are moved only by the
        process holding it, so a sum over processes of the held rows syncs them."""
        return [*self.obs_norm.buffers(), *self.return_norm.buffers()]

    def state_dict(self) -> dict:
        return {
            "nets": self.nets.state_dict(),
            "opt": self.opt.state_dict(),
            "obs_norm": self.obs_norm.state_dict(),
            "return_norm": self.return_norm.state_dict(),
            "generator": self.generator.get_state(),
            "iteration": self.iteration,
        }

    def load_state_dict(self, state: dict) -> None:
        self.nets.load_state_dict(state["nets"])
        self.opt.load_state_dict(state["opt"])
        self.obs_norm.load_state_dict(state["obs_norm"])
        self.return_norm.load_state_dict(state["return_norm"])
        self.generator.set_state(state["generator"])
        self.iteration = int(state["iteration"])
        self.close()

    def close(self) -> None:
        for grp in self.groups:
            grp.close()
        self.groups = []


def _take(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t (S, n, ...)`` rows ``idx (S, m)`` → ``(S, m, ...)``."""
    view = idx.view(*idx.shape, *([1] * (t.dim() - 2))).expand(*idx.shape, *t.shape[2:])
    return t.gather(1, view)
