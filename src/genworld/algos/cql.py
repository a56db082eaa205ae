"""Conservative Q-Learning: SAC whose critics are pushed down on out-of-data actions.

Paper: Kumar, Zhou, Tucker & Levine 2020, "Conservative Q-Learning for Offline Reinforcement
Learning" (arXiv:2006.04779), the CQL(H) variant with importance-sampled log-sum-exp. Reference
implementation: CORL ``algorithms/offline/cql.py`` (commit 6afec904,
https://github.com/tinkoff-ai/CORL/blob/6afec90484bbf47dee05fdf525e26a3ebe028e9b/algorithms/offline/cql.py),
with CORL's D4RL locomotion configs (``configs/offline/cql/*/medium_v2.yaml``): conservative
weight ``cql_alpha`` 10, 10 sampled actions, importance sampling, temperature 1, no Lagrange,
critic lr 3e-4, batch 256, discount 0.99, tau 0.005, 3x256 critics with orthogonal init, auto-tuned
entropy with target -|A|, no entropy in the TD target. The actor lr is d3rlpy's 1e-4
(``reproductions/offline/cql.py``, also the original CQL README's ``--policy_lr=1e-4``; CORL: 3e-5)
and so is the entropy-temperature lr. ``lagrange=True`` tunes ``alpha'`` so the gap
``logsumexp Q - Q(data)`` stays at ``target_action_gap`` (CORL ``cql_lagrange``, whose
``log_alpha_prime`` starts at 1, so ``alpha' = e``, as here; d3rlpy's ``alpha_threshold`` is 10
and its ``initial_alpha`` 1.0, so ``alpha' = 1``).

Where d3rlpy 2.8.1 and CORL differ, genworld follows d3rlpy by default, each choice one flag
away from CORL's (``target_action``, ``update_order``, ``log_std_clamp``, ``alpha_loss``,
``orthogonal_init``, ``actor_init``); why, and every deviation from the references:
``docs/algorithms/cql.md``.

One step: critics ``sum_i MSE(Q_i(s, a), r + gamma (1 - d) min_j Q_target_j(s', tanh mu(s')))
+ cql_alpha * mean(logsumexp_k[Q_i(s, a_k) - log mu(a_k)] - Q_i(s, a))`` with the ``a_k`` being
``n_actions`` uniform actions and ``n_actions`` policy samples at ``s`` and at ``s'`` each (all
scored at ``s``), one optimiser step; then actor ``alpha log pi(a~|s) - min_i Q_i(s, a~)`` against
the updated critics and the entropy temperature towards ``-|A|``; Polyak on the critics.

Multi-env: observations normalised per env (``ctx.normalizer``), padded dims zeroed, a one-hot
env id appended to actor and critic inputs; actions, random actions and policy samples masked by
each env's action dims; log-probabilities, the uniform density ``-|A_k| log 2`` and the target
entropy ``-|A_k|`` use each env's real action dim; the entropy temperature is learned per env.

"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from genworld.algos.registry import (
    AlgoContext,
    agent_state,
    load_agent_state,
    resolve_config,
)
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.critics import (
    frozen_critic,
    orthogonal_init,
    q_many,
    resolve_ood_dtype,
)
from genworld.nn.distributions import LOG_2, sample_tanh_gaussian
from genworld.nn.mlp import EnsembleMLP
from genworld.policies import TanhGaussianActor
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer

HARD_LOG_STD_MIN, HARD_LOG_STD_MAX = -20.0, 2.0
"""``log_std_clamp="hard"``: d3rlpy's and CORL's bounds."""
ALPHA_PRIME_MAX = 1e6
"""alpha' is clipped to [0, 1e6] (CORL, d3rlpy)."""


def conservative_gap(
    q_ood: torch.Tensor, q_data: torch.Tensor, temperature: float = 1.0
) -> torch.Tensor:
    """CQL(H)'s log-sum-exp penalty (Kumar et al. 2020): ``(E,)`` mean over the batch of
    ``T logsumexp_k(Q(s, a_k) / T) - Q(s, a)``; ``q_ood (E, B, M)`` (importance weights already
    subtracted), ``q_data (E, B)``. Minimising it pushes Q down where the log-sum-exp puts its
    mass and up on the dataset's actions."""
    soft_max = torch.logsumexp(q_ood / temperature, dim=-1) * temperature  # (E, B)
    return (soft_max - q_data).mean(-1)


@dataclass(frozen=True)
class CQLConfig:
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden sizes of the actor and of each critic (CORL: 3 x 256)."""
    cql_alpha: float = 10.0
    """Weight of the conservative penalty (CORL locomotion: 10; paper/d3rlpy: 5)."""
    n_actions: int = 10
    """Uniform actions and policy samples (at s and at s', each) per state in the penalty."""
    temperature: float = 1.0
    """Temperature of the log-sum-exp."""
    importance_sample: bool = True
    """Subtract each sample's log-density in the log-sum-exp (CQL(H) with IS, CORL default)."""
    lagrange: bool = False
    """Tune alpha' so the penalty's gap stays at target_action_gap."""
    target_action_gap: float = 10.0
    """Lagrange threshold (d3rlpy alpha_threshold); unused without lagrange."""
    gamma: float = 0.99
    """Discount (CORL: 0.99)."""
    tau: float = 0.005
    """Polyak rate of the target critics."""
    actor_lr: float = 1e-4
    """Adam learning rate of the actor (d3rlpy and the CQL README: 1e-4; CORL: 3e-5)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the critics (CORL: 3e-4)."""
    alpha_lr: float = 1e-4
    """Learning rate of the entropy temperatures."""
    alpha_prime_lr: float = 3e-4
    """Learning rate of the Lagrange multiplier alpha' (CORL: the critic lr)."""
    batch_size: int = 256
    """Transitions per update, over all envs (CORL: 256)."""
    num_critics: int = 2
    """Q critics in the ensemble; the TD target and the actor use their minimum (CORL: 2)."""
    target_entropy_scale: float = 1.0
    """Target entropy = -scale * the env's action dim."""
    backup_entropy: bool = False
    """Subtract alpha log pi(a'|s') in the TD target (off in CORL's locomotion configs)."""
    target_action: str = "mean"
    """Action at s' in the TD target: ``sample`` a' ~ pi(s') (the CQL authors' code, CORL) or
    ``mean`` tanh of the policy's mean (d3rlpy 2.8's default, ``soft_q_backup=False``)."""
    update_order: str = "critic_first"
    """``joint``: every loss from the pre-step parameters, one backward and one optimiser step
    (CORL); ``critic_first``: the critics (and alpha') step first, then the actor and the
    entropy temperature learn against the *updated* critics (d3rlpy 2.8's order)."""
    log_std_clamp: str = "hard"
    """Actor log-std bounds: ``soft`` (tanh into [-5, 2], CleanRL; genworld's actor) or ``hard``
    (``clamp`` to [-20, 2], d3rlpy and CORL)."""
    alpha_loss: str = "alpha"
    """Entropy-temperature loss: ``log_alpha`` ``-log α (log π + target)`` (CORL, the CQL
    authors) or ``alpha`` ``-α (log π + target)`` (d3rlpy): the same fixed point, the gradient
    on log α scaled by α."""
    orthogonal_init: bool = False
    """True: CORL's critic init: orthogonal hidden layers (gain sqrt 2), last layer gain 1e-2."""
    actor_init: str = "default"
    """The actor's last layer: ``small`` (xavier, gain 1e-2, bias 0: CORL; the first actions
    are ~0 with std ~1) or ``default`` (PyTorch's ``nn.Linear`` init, as d3rlpy's heads)."""
    sampling: str = "balanced"
    """balanced (equal share per env) or proportional (to each env's transitions)."""
    ood_precision: str = "float32"
    """Precision of the critics' hidden layers on the 3 n_actions out-of-data actions of the
    conservative term (~90% of a CQL step's FLOPs; the TD term is always float32): float32 (the
    same maths on every machine), bfloat16, or auto = bfloat16 on CPUs with bfloat16 matmul
    units (AMX tiles, or AVX512-BF16: about twice the updates/s there, docs/algorithms/cql.md),
    else float32. A cell records the precision it resolved to (``numerics`` in its result),
    and reports count cells per precision, so a table grown on several machines with ``auto``
    says so."""

    def validate(self) -> None:
        if self.n_actions < 1 or self.batch_size < 1 or self.num_critics < 1:
            raise GenworldError("n_actions, batch_size and num_critics must be >= 1")
        if self.temperature <= 0:
            raise GenworldError(f"temperature must be > 0, got {self.temperature}")
        if self.ood_precision not in ("auto", "float32", "bfloat16"):
            raise GenworldError(
                f"ood_precision {self.ood_precision!r}: use auto, float32 or bfloat16"
            )
        if self.sampling not in ("balanced", "proportional"):
            raise GenworldError(f"sampling {self.sampling!r}: use balanced or proportional")
        if self.log_std_clamp not in ("soft", "hard"):
            raise GenworldError(f"log_std_clamp {self.log_std_clamp!r}: use soft or hard")
        if self.alpha_loss not in ("log_alpha", "alpha"):
            raise GenworldError(f"alpha_loss {self.alpha_loss!r}: use log_alpha or alpha")
        if self.update_order not in ("joint", "critic_first"):
            raise GenworldError(f"update_order {self.update_order!r}: use joint or critic_first")
        if self.actor_init not in ("small", "default"):
            raise GenworldError(f"actor_init {self.actor_init!r}: use small or default")
        if self.target_action not in ("sample", "mean"):
            raise GenworldError(f"target_action {self.target_action!r}: use sample or mean")
        if self.target_action == "mean" and self.backup_entropy:
            raise GenworldError(
                "backup_entropy needs target_action='sample' (the mean action has no log-prob)"
            )


PRESETS: dict[str, dict] = {
    "tiny": {"hidden": (32, 32), "batch_size": 32},
    # mini: 2 CPU cores, 10k updates per cell (train/table.py BUDGETS["mini"]): two hidden layers
    "mini": {"hidden": (256, 256)},
    "full": {},
}


def build(ctx: AlgoContext) -> CQL:
    return CQL(ctx.dataset, ctx.normalizer, resolve_config(CQLConfig, PRESETS, ctx), ctx.device)


class CQL:
    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: CQLConfig,
        device: torch.device,
    ):
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.num_envs, self.normalizer = dataset.num_envs, normalizer.to(device)
        obs_max, act_max = dataset.obs_max, dataset.act_max
        in_dim = obs_max + self.num_envs
        self.actor = TanhGaussianActor(in_dim, act_max, cfg.hidden).to(device)
        if cfg.actor_init == "small":  # CORL: the actor's last layer xavier(gain 1e-2), bias 0
            with torch.no_grad():
                nn.init.xavier_uniform_(self.actor.net[-1].weight, gain=1e-2)
                self.actor.net[-1].bias.zero_()
        self.critic = EnsembleMLP(cfg.num_critics, in_dim + act_max, cfg.hidden, 1).to(device)
        if cfg.orthogonal_init:
            orthogonal_init(self.critic)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        self.log_alpha = nn.Parameter(torch.zeros(self.num_envs, device=device))
        self.log_alpha_prime = nn.Parameter(torch.ones((), device=device))  # alpha' = e
        self.opt = torch.optim.Adam(
            [
                {"params": self.critic.parameters(), "lr": cfg.critic_lr},
                {"params": self.actor.parameters(), "lr": cfg.actor_lr},
                {"params": [self.log_alpha], "lr": cfg.alpha_lr},
                {"params": [self.log_alpha_prime], "lr": cfg.alpha_prime_lr},
            ],
            fused=fused_optimizer(device),
        )
        self.opt_min = Minimizer(self.opt)
        self.act_masks = dataset.act_masks().float().to(device)  # (K, A)
        self.obs_masks = dataset.obs_masks().float().to(device)  # (K, O)
        act_dims = self.act_masks.sum(-1)  # (K,)
        self.target_entropy = -cfg.target_entropy_scale * act_dims  # (K,)
        self.uniform_log_density = -LOG_2 * act_dims  # (K,) log of 0.5^|A_k|
        self.ood_dtype = resolve_ood_dtype(cfg.ood_precision, device)
        self.step = 0

    @property
    def numerics(self) -> dict[str, str]:
        """The precision ``ood_precision`` resolved to on this machine: a cell records it, since
        ``auto`` makes the same config compute differently on CPUs with and without bfloat16
        matmul units."""
        return {"ood_precision": str(self.ood_dtype).removeprefix("torch.")}

    def _inputs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """Per-env normalised observations (padded dims exactly 0) plus the one-hot env id."""
        x = self.normalizer.normalize_obs(obs, env_idx) * self.obs_masks[env_idx]  # (B, O)
        return torch.cat([x, nn.functional.one_hot(env_idx, self.num_envs).to(x.dtype)], -1)

    def _policy(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The actor's mean and log-std ``(B, A)`` with ``cfg.log_std_clamp``'s bounds."""
        if self.cfg.log_std_clamp == "soft":
            return self.actor(x)
        mean, log_std = self.actor.net(x).chunk(2, dim=-1)
        return mean, log_std.clamp(HARD_LOG_STD_MIN, HARD_LOG_STD_MAX)

    def _conservative_gap(self, batch, x, mask, policy, next_policy):
        """``(E,)`` log-sum-exp gap over uniform, pi(s) and pi(s') actions (all scored at s)
        and Q of the data actions ``(E, B)``; ``policy``/``next_policy`` are (actions
        ``(B, n, A)``, log-probs ``(B, n)``) samples without gradients."""
        env, n = batch.env_idx, self.cfg.n_actions
        uniform = torch.rand(len(x), n, mask.shape[-1], device=x.device) * 2 - 1  # (B, n, A)
        data_action = (batch.actions * mask)[:, None]  # (B, 1, A)
        candidates = torch.cat(
            [uniform * mask[:, None], policy[0], next_policy[0]], 1
        )  # (B, 3n, A): uniform, pi(s), pi(s')
        if self.ood_dtype == torch.float32:  # one batched forward for all 1 + 3n actions
            q_all = q_many(self.critic, x, torch.cat([data_action, candidates], 1))
            q_data, q_cand = q_all[..., 0], q_all[..., 1:]  # (E, B), (E, B, 3n)
        else:  # the TD term's Q in float32, the 3n out-of-data actions' in bf16
            q_data = q_many(self.critic, x, data_action)[..., 0]  # (E, B)
            q_cand = q_many(self.critic, x, candidates, self.ood_dtype)  # (E, B, 3n), float32 out
        if self.cfg.importance_sample:  # subtract log mu(a): uniform 0.5^|A_k|, the policy's
            uniform_log_density = self.uniform_log_density[env][:, None].expand(-1, n)
            log_density = torch.cat([uniform_log_density, policy[1], next_policy[1]], 1)
            q_ood = q_cand - log_density  # (E, B, 3n)
        else:  # CORL without importance sampling keeps the data action in
            q_ood = torch.cat([q_data[..., None], q_cand], -1)
        gap = conservative_gap(q_ood, q_data, self.cfg.temperature)  # (E,)
        return gap, q_data, q_cand[..., :n].detach().mean()

    def losses(self, batch) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every loss of one step from the current parameters, each reaching only its own
        parameters (critic, actor, alpha, alpha'), and detached metrics."""
        losses, metrics, policy_inputs = self._critic_losses(batch)
        return {**losses, **self.policy_losses(*policy_inputs)}, metrics

    def _critic_losses(self, batch) -> tuple[dict, dict, tuple]:
        """The critics' (and alpha''s) losses, the metrics, and what ``policy_losses`` needs:
        the rows' inputs and the actor's sample with its log-probability (with gradients)."""
        cfg, env, n = self.cfg, batch.env_idx, self.cfg.n_actions
        mask = self.act_masks[env]  # (B, A)
        x = self._inputs(batch.observations, env)  # (B, O + K)
        next_x = self._inputs(batch.next_observations, env)
        alpha = self.log_alpha.detach().exp()[env]  # (B,)
        mean, log_std = self._policy(x)  # (B, A) each, with gradients
        actions, log_probs = sample_tanh_gaussian(mean, log_std, mask, n + 1)  # (B, n+1, A)
        new_action, new_log_prob = actions[:, 0], log_probs[:, 0]  # the actor's sample
        with torch.no_grad():
            next_mean, next_log_std = self._policy(next_x)
            next_actions, next_log_probs = sample_tanh_gaussian(
                next_mean, next_log_std, mask, n + 1
            )
            if cfg.target_action == "mean":
                next_action = torch.tanh(next_mean) * mask
            else:
                next_action = next_actions[:, 0]
            next_q = self.critic_target(torch.cat([next_x, next_action], -1))
            next_v = next_q.squeeze(-1).min(0).values  # (B,)
            if cfg.backup_entropy:
                next_v = next_v - alpha * next_log_probs[:, 0]
            target = batch.rewards + cfg.gamma * (1.0 - batch.terminations) * next_v  # (B,)
        policy = actions[:, 1:].detach(), log_probs[:, 1:].detach()
        gap, q_data, q_random = self._conservative_gap(
            batch, x, mask, policy, (next_actions[:, 1:], next_log_probs[:, 1:])
        )
        td = (q_data - target).pow(2).mean(-1)  # (E,)
        losses = {}
        if cfg.lagrange:
            alpha_prime = self.log_alpha_prime.exp().clamp(0.0, ALPHA_PRIME_MAX)
            excess = cfg.cql_alpha * (gap - cfg.target_action_gap)  # (E,)
            penalty = alpha_prime.detach() * excess
            losses["alpha_prime_loss"] = -(alpha_prime * excess.detach()).mean()
        else:
            alpha_prime = torch.ones((), device=x.device)
            penalty = cfg.cql_alpha * gap
        losses["critic"] = (td + penalty).sum()
        metrics = {
            "td": td.detach().mean(),
            "cql_gap": gap.detach().mean(),
            "q_data": q_data.detach().mean(),
            "q_random": q_random,
            "entropy": -new_log_prob.detach().mean(),
            "alpha": alpha.mean(),
            "alpha_prime": alpha_prime.detach(),
        }
        return losses, metrics, (x, new_action, new_log_prob, env)

    def policy_losses(
        self, x: torch.Tensor, new_action: torch.Tensor, new_log_prob: torch.Tensor, env
    ) -> dict[str, torch.Tensor]:
        """The actor's and the entropy temperature's losses for rows ``x`` and the actor's
        sample there, against the critics as they are now (so after the critic step with
        ``update_order="critic_first"``)."""
        alpha = self.log_alpha.detach().exp()[env]  # (B,)
        q_new = frozen_critic(self.critic, torch.cat([x, new_action], -1)).min(0).values  # (B,)
        entropy_error = new_log_prob.detach() + self.target_entropy[env]  # (B,)
        log_alpha = self.log_alpha[env]
        scale = log_alpha.exp() if self.cfg.alpha_loss == "alpha" else log_alpha
        return {
            "actor": (alpha * new_log_prob - q_new).mean(),
            "alpha_loss": -(scale * entropy_error).mean(),
        }

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        batch = self.dataset.sample_transitions(self.cfg.batch_size, generator, self.cfg.sampling)
        losses, metrics, policy_inputs = self._critic_losses(batch.to(self.device))
        if self.cfg.update_order == "joint":  # one backward, one step for every loss
            losses.update(self.policy_losses(*policy_inputs))
        # critic_first: only the critics (and alpha') have gradients here
        self.opt_min.minimize(sum(losses.values()))
        if self.cfg.update_order == "critic_first":
            policy = self.policy_losses(*policy_inputs)
            # only the actor and the temperatures have gradients here
            self.opt_min.minimize(sum(policy.values()))
            losses.update({k: v.detach() for k, v in policy.items()})
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
        mean, log_std = self._policy(self._inputs(obs, env_idx))
        mask = self.act_masks[env_idx]
        if deterministic:
            return torch.tanh(mean) * mask
        return sample_tanh_gaussian(mean, log_std, mask, 1)[0][:, 0]

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object, so checkpoints forget nothing."""
        return {
            "actor": self.actor,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
            "normalizer": self.normalizer,
        }

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {"log_alpha": self.log_alpha, "log_alpha_prime": self.log_alpha_prime}

    def state_dict(self) -> dict:
        return agent_state(self.modules(), self._tensors(), step=self.step)

    def load_state_dict(self, state: dict) -> None:
        load_agent_state(self.modules(), self._tensors(), state)
        self.step = int(state["step"])
