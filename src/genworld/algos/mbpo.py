"""Offline MBPO: SAC on a mix of real transitions and short rollouts in a frozen world model.

The machinery shared by the model-based agents (TGW, MOPO, MOReL); each of them is a thin file
that picks a world model, a reward penalty and, optionally, a per-step rollout hook.

Paper: Janner et al. 2019, "When to Trust Your Model: Model-Based Policy Optimization" (branched
rollouts of length ``horizon`` from data states), in its offline form of Yu et al. 2020, "MOPO"
(Algorithm 2: the rollouts start from dataset states, the reward is ``r̂ − λ·u``, SAC trains on a
``real_ratio`` mix). Reference implementation: OfflineRL-Kit
(https://github.com/yihaosun1124/OfflineRL-Kit/blob/a63bdfe7186dbcd369f41a92dc2777efebc68587/offlinerlkit/policy/model_based/mopo.py
``rollout``: the current policy samples actions, rows stop at a predicted terminal; and
``mb_policy_trainer.py``: a rollout every ``rollout_freq`` updates, a model buffer of
``rollout_batch × horizon × retain`` transitions).

Every ``rollout_every`` updates, ``rollout_batch`` start states are drawn from the data of every
env (balanced), the world model is rolled out for ``horizon`` steps with the current stochastic
policy, and the imagined transitions, with reward ``extrinsic − β · uncertainty``, go to a
FIFO model buffer. A ``step_hook`` may then rewrite each step's rewards and terminations (MOReL's
HALT); a row that is terminal stops there.

Policies: ``shared`` — one SAC over all envs (padded observations, one-hot env id, masked actions,
entropy target per env = −its true action dim); ``per_env`` — one SAC per env, all trained in
the same shared world model, each on a batch of its own env's rows as large as a single-env
SAC's (``MBPOConfig.batch_per_env``).

The world model is frozen: rollouts run under ``torch.no_grad`` and the agent turns its
``requires_grad`` off, so no policy or critic loss can reach it.

Deviations:
- rollout sizes and update counts are scaled to the CPU budget by each algorithm's presets;
- rows stop at a predicted terminal (the registry's termination functions by default);
- ``obs_bounds="clip"`` clips imagined next observations to each env's data range (neither
  MBPO nor MOPO does; a documented option, see ``MBPOConfig.obs_bounds``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from genworld.algos.sac import SAC, SACConfig
from genworld.algos.sac_group import SACGroup
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.world_models.base import WMStep, registry_terminations, rows_from
from genworld.world_models.prompt_memory import sample_start_states

POLICIES = ("per_env", "per_env_batched", "shared")
OBS_BOUNDS = ("clip", "none")


@dataclass(frozen=True)
class MBPOConfig:
    policy: str = "per_env"
    """per_env (one SAC per env, all in the same world model), per_env_batched (the same SACs
    updated as one batched ensemble: faster policy steps and the same maths, tested, but its
    quick-start scores are not shown equal to per_env's) or shared (one SAC over all envs).
    per_env is the default: it scores above shared on the quick start (measured:
    docs/notes/history.md)."""
    rollout_every: int = 250
    """SAC updates between model rollouts (MBPO: 250; MOPO / OfflineRL-Kit: 1000)."""
    rollout_batch: int = 5_000
    """Start states per rollout, balanced over envs (MOPO: 50k)."""
    horizon: int = 5
    """Imagined steps per rollout (MOPO: 1–5)."""
    retain_rollouts: int = 5
    """Model buffer keeps this many rollouts' worth of transitions (MOPO: 5 epochs)."""
    real_ratio: float = 0.05
    """Share of real transitions in each SAC batch (MOPO: 0.05)."""
    beta: float = 1.0
    """Weight of the model's uncertainty in the imagined reward ``r = re − β·ri`` (TGW's risk
    tolerance β, seed 000 eq. 6; MOPO's λ). The one place this weight lives."""
    obs_bounds: str = "clip"
    """clip: an imagined next observation is clipped to its env's data range (min / max of the
    dataset's observations), and the clipped one is what is stored, what a clipped row's
    termination is computed on (the registry's termination function) and what the model
    continues from (TGW's prompt memory); the predicted reward stays the model's for (s, a).
    none: the model's prediction as it is (MBPO, MOPO)."""
    batch_per_env: bool = field(default=True, metadata={"absent": False})
    """per_env / per_env_batched: each env's SAC learns from a batch of ``sac.batch_size`` rows
    of its own env, as a single-env run's SAC does: the update draws ``K × sac.batch_size``
    rows for K envs, the same number from each, so a multi-env run and a single-env one differ in
    their world model, not in their SACs' batch. False: the K SACs share one batch of
    ``sac.batch_size`` rows (about B/K each; cheaper). The shared policy always takes one
    batch. A run saved before this field existed shared one batch: it resumes as False."""
    sac: SACConfig = field(default_factory=SACConfig)
    """Hyper-parameters of the SAC policy or policies (:class:`genworld.algos.sac.SACConfig`)."""

    def validate(self) -> None:
        if self.policy not in POLICIES:
            raise GenworldError(f"policy={self.policy!r} is invalid: choose {', '.join(POLICIES)}")
        if self.obs_bounds not in OBS_BOUNDS:
            raise GenworldError(
                f"obs_bounds={self.obs_bounds!r} is invalid: choose {' or '.join(OBS_BOUNDS)}"
            )
        if not 0 <= self.real_ratio <= 1:
            raise GenworldError(f"real_ratio must be in [0, 1], got {self.real_ratio}")
        if not 0 <= self.beta < float("inf"):  # also refuses NaN
            raise GenworldError(
                f"beta (the uncertainty penalty's weight) must be a finite number ≥ 0, got "
                f"{self.beta}"
            )
        for name in ("rollout_every", "rollout_batch", "horizon", "retain_rollouts"):
            if getattr(self, name) <= 0:
                raise GenworldError(f"{name} must be positive, got {getattr(self, name)}")


def penalised_reward(
    extrinsic: torch.Tensor, uncertainty: torch.Tensor, beta: float
) -> torch.Tensor:
    """``r = re − β·ri`` (seed 000 eq. 6; MOPO eq. 5 with λ = β): the imagined reward."""
    return extrinsic - beta * uncertainty


class RolloutHook(Protocol):
    """Called on every imagined step with the padded inputs, the model's output and the
    penalised rewards ``(B,)``; returns the rewards and terminations ``(B,) bool`` to store."""

    def __call__(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        env_idx: torch.Tensor,
        step: WMStep,
        rewards: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]: ...


class TransitionBuffer:
    """Preallocated ring buffer of padded transitions with their env ids."""

    def __init__(self, capacity: int, obs_max: int, act_max: int, device):
        self.capacity, self.size, self.pos = capacity, 0, 0
        self.obs = torch.zeros(capacity, obs_max, device=device)
        self.act = torch.zeros(capacity, act_max, device=device)
        self.rew = torch.zeros(capacity, device=device)
        self.next_obs = torch.zeros(capacity, obs_max, device=device)
        self.term = torch.zeros(capacity, device=device)
        self.env = torch.zeros(capacity, dtype=torch.int64, device=device)
        self._by_env: list[torch.Tensor] | None = None

    def add(self, obs, act, rew, next_obs, term, env) -> None:
        n = len(obs)
        idx = (self.pos + torch.arange(n, device=obs.device)) % self.capacity
        self.obs[idx], self.act[idx], self.rew[idx] = obs, act, rew
        self.next_obs[idx], self.term[idx], self.env[idx] = next_obs, term.float(), env
        self.pos = (self.pos + n) % self.capacity
        self.size = min(self.size + n, self.capacity)
        self._by_env = None

    def _rows_of_envs(self, envs: int) -> list[torch.Tensor]:
        """Each env's row indices, found once per change of the buffer."""
        if self._by_env is None or len(self._by_env) != envs:
            env = self.env[: self.size]
            self._by_env = [torch.nonzero(env == k).squeeze(1) for k in range(envs)]
        return self._by_env

    def state_dict(self) -> dict:
        n = self.size
        return {
            "obs": self.obs[:n],
            "act": self.act[:n],
            "rew": self.rew[:n],
            "next_obs": self.next_obs[:n],
            "term": self.term[:n],
            "env": self.env[:n],
            "pos": self.pos,
            "size": self.size,
        }

    def load_state_dict(self, state: dict) -> None:
        n = int(state["size"])
        for name in ("obs", "act", "rew", "next_obs", "term", "env"):
            getattr(self, name)[:n] = state[name]
        self.size, self.pos = n, int(state["pos"])
        self._by_env = None

    def sample(self, n: int, generator: torch.Generator, shares: list[int] | None = None):
        """``n`` rows drawn uniformly; with ``shares``, ``shares[k]`` rows of env k (uniformly
        among its rows; an env with no rows in the buffer gives none)."""
        if shares is None:
            idx = torch.randint(self.size, (n,), generator=generator)
        else:
            rows = self._rows_of_envs(len(shares))
            draws = [
                r[torch.randint(len(r), (m,), generator=generator)]
                for r, m in zip(rows, shares, strict=True)
                if len(r) and m > 0
            ]
            idx = torch.cat(draws) if draws else torch.zeros(0, dtype=torch.int64)
        return (
            self.obs[idx],
            self.act[idx],
            self.rew[idx],
            self.next_obs[idx],
            self.term[idx],
            self.env[idx],
        )


class PerEnvSACs:
    """One SAC per env, each updated on its env's rows of the batch, one after another (the
    reference form of :class:`~genworld.algos.sac_group.SACGroup`, which runs the same maths as
    one batched update)."""

    def __init__(self, obs_max, act_max, cfg: SACConfig, device, act_dims, obs_stats):
        mean, std = obs_stats
        self.act_max = act_max
        self.agents = [
            SAC(obs_max, act_max, cfg, device, 1, [d], obs_stats=(mean[i : i + 1], std[i : i + 1]))
            for i, d in enumerate(act_dims)
        ]

    def act(self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool):
        actions = torch.zeros(len(obs), self.act_max, device=obs.device)
        for k, agent in enumerate(self.agents):
            sel = env_idx == k
            if bool(sel.any()):
                actions[sel] = agent.act(obs[sel], None, deterministic=deterministic)
        return actions

    def update(self, obs, act, rew, next_obs, term, env, real_rows) -> dict[str, torch.Tensor]:
        """Every env's SAC on its rows; the mean over the envs of each loss."""
        per_env = [
            agent.update(
                obs[sel], act[sel], rew[sel], next_obs[sel], term[sel], None, real_rows[sel]
            )
            for agent, sel in ((a, env == k) for k, a in enumerate(self.agents))
            if int(sel.sum()) > 1
        ]
        keys = [k for k in (per_env[0] if per_env else {}) if all(k in m for m in per_env)]
        return {k: torch.stack([m[k] for m in per_env]).mean() for k in keys}

    def state_dict(self) -> list[dict]:
        return [a.state_dict() for a in self.agents]

    def load_state_dict(self, state: list[dict]) -> None:
        for agent, s in zip(self.agents, state, strict=True):
            agent.load_state_dict(s)


class MBPOAgent:
    """SAC policies trained in a frozen world model; ``update()`` is one policy step."""

    def __init__(
        self,
        world_model,
        dataset: MultiEnvDataset,
        cfg: MBPOConfig,
        device: torch.device,
        step_hook: RolloutHook | None = None,
    ):
        cfg.validate()
        self.cfg, self.world_model, self.dataset, self.device = cfg, world_model, dataset, device
        self.step_hook = step_hook
        # each env's data range: imagined observations outside it are counted (and clipped with
        # obs_bounds="clip")
        low = torch.zeros(len(dataset.envs), dataset.obs_max)
        high = torch.zeros(len(dataset.envs), dataset.obs_max)
        for k, data in enumerate(dataset.envs):
            d = data.spec.obs_dim
            both = torch.cat([data.observations, data.next_observations])
            low[k, :d], high[k, :d] = both.min(0).values, both.max(0).values
        self.obs_low, self.obs_high = low, high
        if isinstance(world_model, torch.nn.Module):
            world_model.requires_grad_(False).eval()
        specs = dataset.specs
        act_dims = [s.act_dim for s in specs]
        k, obs_max, act_max = len(specs), dataset.obs_max, dataset.act_max
        # the policies see observations standardised with the data's per-env statistics
        norm = Normalizer.fit(dataset)
        mean, std = norm.obs_mean, norm.obs_std  # (K, obs_max); padding: mean 0, std 1
        if cfg.policy == "shared":
            self.policy: SAC | SACGroup | PerEnvSACs = SAC(
                obs_max, act_max, cfg.sac, device, k, act_dims, obs_stats=(mean, std)
            )
        elif cfg.policy == "per_env_batched":  # the same SACs as one batched update
            self.policy = SACGroup(obs_max, act_max, cfg.sac, device, act_dims, (mean, std))
        else:
            self.policy = PerEnvSACs(obs_max, act_max, cfg.sac, device, act_dims, (mean, std))
        capacity = cfg.rollout_batch * cfg.horizon * cfg.retain_rollouts
        # rows of one SAC update, real and imagined (MBPOConfig.batch_per_env)
        per_env = cfg.batch_per_env and cfg.policy != "shared" and k > 1
        self.balanced_envs = k if per_env else None
        self.batch_rows = cfg.sac.batch_size * (self.balanced_envs or 1)
        self.model_buffer = TransitionBuffer(capacity, obs_max, act_max, device)
        self.updates = 0
        self.rollout_stats: dict[str, float] = {}

    # -------------------------------------------------------------- acting
    def _sample(
        self, obs: torch.Tensor, env_idx: torch.Tensor, deterministic: bool
    ) -> torch.Tensor:
        return self.policy.act(obs, env_idx, deterministic=deterministic)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        return self._sample(obs, env_idx, deterministic)

    # -------------------------------------------------------------- imagination
    @torch.no_grad()
    def imagine_step(self, state, obs, actions, env_idx, generator):
        """One model step → (WMStep, rewards (B,), terminations (B,) bool) as they are stored."""
        out = self.world_model.next(state, obs, actions, env_idx, generator)
        rewards = penalised_reward(out.extrinsic, out.uncertainty, self.cfg.beta)  # (B,)
        terminations = out.terminations
        if self.step_hook is not None:
            rewards, terminations = self.step_hook(obs, actions, env_idx, out, rewards)
        return out, rewards, terminations

    @torch.no_grad()
    def rollout(self, generator: torch.Generator) -> dict[str, float]:
        env_idx, index = sample_start_states(self.dataset, self.cfg.rollout_batch, generator)
        state = self.world_model.encode(self.dataset, env_idx, index)
        obs = torch.zeros(len(env_idx), self.dataset.obs_max)
        for k, data in enumerate(self.dataset.envs):
            sel = env_idx == k
            obs[sel, : data.spec.obs_dim] = data.observations[index[sel]]
        alive = torch.ones(len(env_idx), dtype=torch.bool)
        added, ended, clipped, penalties, rewards = 0, 0, 0, [], []
        low, high = self.obs_low[env_idx], self.obs_high[env_idx]
        for _ in range(self.cfg.horizon):
            actions = self._sample(obs, env_idx, deterministic=False)
            out, rew, term = self.imagine_step(state, obs, actions, env_idx, generator)
            bad = ~(torch.isfinite(out.next_observations).all(-1) & torch.isfinite(rew)) & alive
            if bool(bad.any()):
                raise GenworldError(
                    f"world model {type(self.world_model).__name__} imagined non-finite "
                    f"observations or rewards in {int(bad.sum())} rollout(s) at policy update "
                    f"{self.updates}; stopped (the last good checkpoint is kept) — retrain or "
                    "check the world model"
                )
            bounded = torch.maximum(torch.minimum(out.next_observations, high), low)
            outside = (bounded != out.next_observations).any(-1)
            clipped += int((outside & alive).sum())
            next_obs = out.next_observations
            if self.cfg.obs_bounds == "clip" and bool(outside.any()):
                next_obs = bounded
                added_by_hook = term & ~out.terminations  # e.g. MOReL's HALT: kept
                on_clipped = registry_terminations(self.dataset.specs, next_obs, env_idx)
                term = torch.where(outside, on_clipped | added_by_hook, term)
            self.model_buffer.add(
                obs[alive],
                actions[alive],
                rew[alive],
                next_obs[alive],
                term[alive],
                env_idx[alive],
            )
            added += int(alive.sum())
            ended += int((alive & term).sum())
            penalties.append(out.uncertainty[alive].mean())
            rewards.append(out.extrinsic[alive].mean())
            alive = alive & ~term
            if not bool(alive.any()):
                break
            obs, state = next_obs, out.state
            if next_obs is not out.next_observations:  # the clipped rows continue from s′
                state = rows_from(
                    outside, self.world_model.with_observations(state, next_obs), state
                )
        self.rollout_stats = {
            "rollout/transitions": float(added),
            "rollout/intrinsic_mean": float(torch.stack(penalties).mean()),
            "rollout/extrinsic_mean": float(torch.stack(rewards).mean()),
            "rollout/terminal_fraction": ended / max(added, 1),
            "rollout/outside_data_range_fraction": clipped / max(added, 1),
            "rollout/alive_at_end": float(alive.float().mean()),
        }
        return self.rollout_stats

    # -------------------------------------------------------------- learning
    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        if self.updates % self.cfg.rollout_every == 0:
            self.rollout(generator)
        self.updates += 1
        batch_size = self.batch_rows
        n_real = int(round(batch_size * self.cfg.real_ratio))
        real = self.dataset.sample_transitions(n_real, generator, "balanced") if n_real else None
        shares = None
        if self.balanced_envs is not None:  # each env's imagined rows fill its batch
            real_counts = torch.zeros(self.balanced_envs, dtype=torch.int64)
            if real is not None:
                real_counts = torch.bincount(real.env_idx.cpu(), minlength=self.balanced_envs)
            shares = (self.cfg.sac.batch_size - real_counts).tolist()
        fake = self.model_buffer.sample(batch_size - n_real, generator, shares)
        parts = [fake]
        if real is not None:
            parts.append(
                (
                    real.observations,
                    real.actions,
                    real.rewards,
                    real.next_observations,
                    real.terminations,
                    real.env_idx,
                )
            )
        obs, act, rew, next_obs, term, env = (
            torch.cat(x).to(self.device) for x in zip(*parts, strict=True)
        )
        real_rows = torch.arange(len(obs), device=obs.device) >= len(obs) - n_real  # (B,)
        metrics = self.policy.update(obs, act, rew, next_obs, term, env, real_rows)
        # the last rollout's statistics travel with the losses into eval.jsonl / TensorBoard
        # (imagined reward and uncertainty are what model exploitation shows up in)
        metrics.update({k: torch.tensor(v) for k, v in self.rollout_stats.items()})
        metrics["batch/reward_mean"] = rew.mean().detach()  # the SAC batch: imagined + real
        return metrics

    def state_dict(self) -> dict:
        """Policies, optimisers, update count and the model buffer: a resume continues exactly."""
        return {
            "policy": self.policy.state_dict(),
            "updates": self.updates,
            "model_buffer": self.model_buffer.state_dict(),
            "rollout_stats": dict(self.rollout_stats),  # logged until the next rollout
        }

    def load_state_dict(self, state: dict) -> None:
        if "policy" not in state:  # the older format: a list of SACs under "agents"
            if self.cfg.policy == "per_env_batched":
                raise GenworldError(
                    "this checkpoint holds separate per-env SACs (policy per_env) and cannot be "
                    "resumed as per_env_batched: resume it with policy per_env"
                )
            agents = state["agents"]
            state = {**state, "policy": agents[0] if self.cfg.policy == "shared" else agents}
        self.policy.load_state_dict(state["policy"])
        self.updates = int(state["updates"])
        self.model_buffer.load_state_dict(state["model_buffer"])
        stats = state.get("rollout_stats", {})  # absent from older-format checkpoints
        self.rollout_stats = {k: float(v) for k, v in stats.items()}
