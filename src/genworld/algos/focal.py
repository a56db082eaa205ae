"""FOCAL: fully-offline meta-RL by distance metric learning and behaviour regularisation.

Paper: Li, Yang & Luo 2020, "FOCAL: Efficient Fully-Offline Meta-Reinforcement Learning via
Distance Metric Learning and Behavior Regularization" (arXiv:2010.01112, ICLR 2021). Reference
implementation: LanqingLi1993/FOCAL-ICLR (commit 36431edb: ``rlkit/torch/sac/sac.py``
``FOCALSoftActorCritic``, ``rlkit/torch/sac/agent.py``, ``launch_experiment.py``,
``configs/default.py``, ``configs/cheetah-vel.json``). Its actor-critic is BRAC's (Wu, Tucker &
Nachum 2019, "Behavior Regularized Offline Reinforcement Learning", arXiv:1911.11361; reference
google-research ``behavior_regularized_offline_rl/brac/brac_primal_agent.py``).

The tasks of a family are the envs of the dataset (one env per task). Nothing is per env: every
parameter is shared, the normaliser's env 0 serves every task, and a task is known to the
networks only through its code ``z``, so a trained agent applies unchanged to an unseen task
given a context set of that task's transitions.

Stages of one update:
1. Task inference: a deterministic context encoder maps each transition ``(s, a, r, s')`` of a
   context set to ``tanh(MLP(.))`` and averages over the set (reference ``MlpEncoder`` with
   ``output_activation=tanh``, ``PEARLAgent.infer_posterior`` without the information
   bottleneck): ``z``, permutation-invariant and bounded in [-1, 1]^d.
2. Distance metric learning (FOCAL §4, the negative-power DML loss): codes of the same task are
   pulled together by ``||z_i - z_j||^2``, codes of different tasks pushed apart by
   ``beta / (||z_i - z_j||^n + eps)``. It is the encoder's only loss: actor, critic and behaviour
   model see ``z`` detached (FOCAL's decoupled task inference; reference
   ``allow_backward_z=False``).
3. Behaviour model: ``pi_b(a | s, z)``, a tanh-Gaussian fitted by maximum likelihood on the
   data's actions (BRAC's estimated behaviour policy, there trained before the agent).
4. BRAC value penalty (BRAC §3; FOCAL §4): twin Q critics with target networks regress to
   ``reward_scale r + gamma (1 - d) (min Q'(s', a') - w_ent log pi(a'|s') - alpha D(s'))`` with
   ``a' ~ pi(. | s', z)``; the actor minimises ``w_ent log pi(a|s) + alpha D(s) - min Q(s, a)``.

The divergence ``D(s) = KL(pi(. | s, z) || pi_b(. | s, z))`` is computed in closed form between
the two *pre-tanh* diagonal Gaussians, summed over the env's real action dims. Both policies are
``tanh`` of a Gaussian, and a KL divergence is invariant under the same bijection applied to both
distributions, so this is exactly the KL between the squashed policies: the quantity BRAC's
primal ``kl`` estimates by Monte Carlo (``n_div_samples=4`` actions from pi, their log-density
under pi_b after clipping actions by 1e-3), here without sampling noise or clipping bias.

Acting: each env's code comes from one fixed context set per env, drawn once (generator seeded
by ``ctx.seed``, kept in the checkpoint) from ``ctx.prompts`` when given (the unseen-task study:
each task's small expert data) or else from the env's own data, and re-encoded with the current
encoder. The weights of an agent trained on N tasks load into an agent built on other tasks of
the same robot (only the evaluation context differs).

Deviations:
- Divergence: closed-form KL to an MLE behaviour model (BRAC's primal form). The reference
  (``use_brac``) uses BRAC's dual form: a critic network ``c`` trained with a gradient penalty
  (``divergences.KL.dual_estimate``), with alpha 500 trained towards a divergence of 0.05 (alpha
  max 2000). Those constants belong to the dual estimate, so alpha here is BRAC's primal default
  (1.0, fixed); ``train_alpha`` gives the reference's adaptive rule.
- The behaviour model is fitted alongside the agent from the first update (BRAC trains it
  first, then warm-starts the actor for 20k steps without its Q term).
- Critics: twin Q with target Q networks (BRAC); the reference keeps PEARL's V network with a
  target V. Entropy is a fixed weight on ``log pi`` (reference ``max_entropy=True``, SAC
  temperature 1 under ``reward_scale`` 5).
- DML: the paper's form with the Euclidean norm (the reference divides squared distances by the
  code size and takes a square root for same-task pairs). Each drawn task gets two context sets,
  so every update has same-task pairs (the reference draws distinct tasks, so it rarely does);
  the loss averages over same-task pairs plus over different-task pairs (as the reference).
- Every loss is computed from the pre-step parameters and one Adam step (a parameter group per
  network) serves them all; the reference steps encoder, critics, V and actor in turn.
- Context: ``(s, a, r, s')`` with ``s'`` (reference default ``use_next_obs_in_context=False``,
  enough for reward-varying families); observations and rewards normalised with env 0's
  statistics; no dropout in the encoder (reference: 0.1).
- Multi-env padding: observations zero-padded and masked, actions masked in sampling, log-probs,
  KL and regularisers, so envs of different sizes also work (FOCAL's families share one robot).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn

from genworld.algos.registry import AlgoContext, agent_state, load_agent_state, resolve_config
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.critics import frozen_critic
from genworld.nn.mlp import EnsembleMLP, mlp
from genworld.policies import TanhGaussianActor, tanh_gaussian_sample
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer
from genworld.world_models import terms

ACTION_CLIP = 1e-3
"""Data actions are clipped to [-1 + eps, 1 - eps] before ``atanh`` (BRAC ``CLIP_EPS``)."""
HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


@dataclass(frozen=True)
class FOCALConfig:
    hidden: tuple[int, ...] = (256, 256, 256)
    """Hidden sizes of the actor, the behaviour model and each critic (reference: 3 x net_size
    256)."""
    encoder_hidden: tuple[int, ...] = (200, 200, 200)
    """Hidden sizes of the per-transition context encoder (reference ``launch_experiment.py``)."""
    latent_dim: int = 20
    """Size of the task code z (reference ``latent_size`` 20)."""
    context_size: int = 100
    """Transitions per context set (reference cheetah-vel ``embedding_batch_size`` 100)."""
    context_next_obs: bool = True
    """Include s' in the context (the paper's (s, a, r, s'); reference default False, which
    suffices when only rewards vary across tasks)."""
    meta_batch: int = 16
    """Tasks drawn per update, without replacement, at most the number of envs (reference 16)."""
    batch_size: int = 256
    """Actor-critic transitions per drawn task per update (reference 256)."""
    gamma: float = 0.99
    """Discount (reference 0.99)."""
    tau: float = 0.005
    """Polyak rate of the target critics (reference ``soft_target_tau`` 0.005)."""
    actor_lr: float = 3e-4
    """Adam learning rate of the actor (reference ``policy_lr``)."""
    critic_lr: float = 3e-4
    """Adam learning rate of the twin critics (reference ``qf_lr``)."""
    encoder_lr: float = 3e-4
    """Adam learning rate of the context encoder (reference ``context_lr``)."""
    behavior_lr: float = 3e-4
    """Adam learning rate of the behaviour model (not in the paper: the actor's)."""
    reward_scale: float = 5.0
    """Rewards are multiplied by this in the TD target (reference ``reward_scale`` 5)."""
    entropy_weight: float = 1.0
    """Weight of log pi in the value target and actor loss (reference ``max_entropy=True``,
    temperature 1; BRAC's default is 0)."""
    alpha: float = 1.0
    """Weight of the KL value penalty, its start value with ``train_alpha`` (BRAC primal agent
    default 1.0; the reference's 500 is for its dual-form estimate)."""
    train_alpha: bool = False
    """Adapt alpha: ``alpha += alpha_lr (mean KL - target_divergence)``, clipped to
    [0, alpha_max] (reference rule; BRAC default off)."""
    target_divergence: float = 0.05
    """KL that the adaptive alpha aims at (reference 0.05)."""
    alpha_lr: float = 1.0
    """Step size of the adaptive alpha (reference ``alpha_lr`` 1, plain gradient steps)."""
    alpha_max: float = 2000.0
    """Upper clip of the adaptive alpha (reference ``alpha_max`` 2000)."""
    dml_weight: float = 10.0
    """Weight of the DML loss (reference ``z_loss_weight`` 10)."""
    dml_beta: float = 1.0
    """beta: weight of the different-task term (reference: 1)."""
    dml_power: float = 2.0
    """n: power of the distance in the different-task term (reference: 2)."""
    dml_epsilon: float = 0.1
    """eps in beta / (||z_i - z_j||^n + eps) (reference: 100 x its epsilon 1e-3)."""
    policy_reg: float = 1e-3
    """Weight of the actor's mean^2 and log-std^2 penalties (reference
    ``policy_mean_reg_weight``/``policy_std_reg_weight`` 1e-3)."""
    per_env_normalizer: bool = False
    """False: the normaliser's env 0 for every task (nothing per task, so weights transfer to new
    tasks); True: each env's own statistics (not in the paper: envs of different robots)."""

    def validate(self) -> None:
        sizes = (self.latent_dim, self.context_size, self.meta_batch, self.batch_size)
        if min(sizes) < 1:
            raise GenworldError("latent_dim, context_size, meta_batch and batch_size must be >= 1")
        if self.dml_power <= 0 or self.dml_epsilon <= 0:
            raise GenworldError("dml_power and dml_epsilon must be > 0")
        if self.alpha < 0 or self.alpha_max < self.alpha:
            raise GenworldError("need 0 <= alpha <= alpha_max")


PRESETS: dict[str, dict] = {
    # tiny: unit tests, seconds on CPU
    "tiny": {
        "hidden": (32, 32),
        "encoder_hidden": (32,),
        "latent_dim": 4,
        "context_size": 16,
        "meta_batch": 4,
        "batch_size": 16,
    },
    # mini: 2 CPU cores, 10k updates (train/table.py BUDGETS["mini"]): 8 tasks x 64 rows per
    # update (512, about two IQL batches), 2-layer nets
    "mini": {
        "hidden": (256, 256),
        "encoder_hidden": (128, 128),
        "context_size": 64,
        "meta_batch": 8,
        "batch_size": 64,
    },
    "full": {},
}


def build(ctx: AlgoContext) -> FOCAL:
    cfg = resolve_config(FOCALConfig, PRESETS, ctx)
    return FOCAL(ctx.dataset, ctx.normalizer, cfg, ctx.device, ctx.prompts, ctx.seed)


# ---------------------------------------------------------------- losses, one per equation


def dml_loss(
    z: torch.Tensor, labels: torch.Tensor, beta: float, power: float, epsilon: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """FOCAL §4 DML loss over all pairs i < j of codes ``z (N, Z)`` with task ``labels (N,)``:
    mean over same-task pairs of ``||z_i - z_j||^2`` plus mean over different-task pairs of
    ``beta / (||z_i - z_j||^power + epsilon)`` (a term without pairs is 0). Also returns the
    mean same-task and different-task distances (detached)."""
    d2 = (z[:, None] - z[None]).pow(2).sum(-1)  # (N, N)
    upper = torch.ones_like(d2, dtype=torch.bool).triu(1)
    same = labels[:, None] == labels[None]  # (N, N)
    pos, neg = (upper & same).float(), (upper & ~same).float()
    pos_loss = (d2 * pos).sum() / pos.sum().clamp_min(1)
    dist_n = d2.clamp_min(1e-12).pow(power / 2)  # ||z_i - z_j||^n
    neg_loss = (beta / (dist_n + epsilon) * neg).sum() / neg.sum().clamp_min(1)
    dist = d2.detach().clamp_min(0).sqrt()
    intra = (dist * pos).sum() / pos.sum().clamp_min(1)
    inter = (dist * neg).sum() / neg.sum().clamp_min(1)
    return pos_loss + neg_loss, intra, inter


def gaussian_kl(mean_p, log_std_p, mean_b, log_std_b, mask) -> torch.Tensor:
    """``(B,)`` KL(N(mean_p, std_p) || N(mean_b, std_b)) of diagonal Gaussians over the real
    action dims (``mask (B, A)``): the KL of their tanh-squashed policies (KL is invariant under
    the bijection tanh), BRAC's primal ``kl`` without Monte Carlo. The package's one Gaussian KL
    (:func:`genworld.world_models.terms.gaussian_kl`) on masked parameters: a padded dim is
    N(0, 1) on both sides and adds exactly 0."""
    return terms.gaussian_kl(mean_p * mask, log_std_p * mask, mean_b * mask, log_std_b * mask)


def tanh_gaussian_log_prob(actions, mean, log_std, mask) -> torch.Tensor:
    """``(B,)`` log-density of data ``actions (B, A)`` under ``tanh(N(mean, std))`` over the real
    dims, actions clipped by ACTION_CLIP first (BRAC ``get_log_density``): the behaviour model's
    maximum-likelihood objective."""
    a = actions.clamp(-1 + ACTION_CLIP, 1 - ACTION_CLIP)
    pre_tanh = torch.atanh(a)  # (B, A)
    log_prob = -0.5 * ((pre_tanh - mean) / log_std.exp()).pow(2) - log_std - HALF_LOG_2PI
    log_prob = log_prob - torch.log1p(-a.pow(2))  # change of variables through tanh
    return (log_prob * mask).sum(-1)


def td_target(rewards, terminations, next_value, cfg: FOCALConfig) -> torch.Tensor:
    """``reward_scale r + gamma (1 - d) V(s')`` (reference ``_take_step``)."""
    return cfg.reward_scale * rewards + cfg.gamma * (1.0 - terminations) * next_value


def penalised_value(q, log_prob, kl, entropy_weight: float, alpha) -> torch.Tensor:
    """BRAC's value penalty (BRAC §3; FOCAL §4): ``min Q'(s, a) - w_ent log pi(a|s) -
    alpha KL(s)`` with ``a ~ pi(. | s, z)``."""
    return q - entropy_weight * log_prob - alpha * kl


def actor_objective(q_pi, log_prob, kl, entropy_weight: float, alpha) -> torch.Tensor:
    """BRAC's actor loss: ``mean(w_ent log pi(a|s) + alpha KL(s) - min Q(s, a))``."""
    return (entropy_weight * log_prob + alpha * kl - q_pi).mean()


# ---------------------------------------------------------------- data


class Transitions(NamedTuple):
    """Raw zero-padded transitions, every field with the same leading dims ``(...)``."""

    observations: torch.Tensor  # (..., O)
    actions: torch.Tensor  # (..., A)
    rewards: torch.Tensor  # (...)
    next_observations: torch.Tensor  # (..., O)
    terminations: torch.Tensor  # (...)

    def to(self, device: torch.device) -> Transitions:
        return Transitions(*(t.to(device) for t in self))

    def flat(self, dims: int) -> Transitions:
        """The first ``dims`` leading dims merged into one."""
        return Transitions(*(t.flatten(0, dims - 1) for t in self))


class TransitionTable:
    """A dataset's transitions as one zero-padded ``(N, 2 O + A + 2)`` float table, so any
    (task, rows) draw of every task at once is a single gather."""

    def __init__(self, dataset: MultiEnvDataset, obs_max: int, act_max: int):
        self.sizes = torch.tensor([len(env) for env in dataset.envs])  # (K,)
        self.offsets = self.sizes.cumsum(0) - self.sizes  # (K,)
        self.widths = (obs_max, obs_max, act_max, 1, 1)
        self.table = torch.zeros(int(self.sizes.sum()), sum(self.widths))
        o, a = obs_max, act_max
        for env, start in zip(dataset.envs, self.offsets.tolist(), strict=True):
            rows = self.table[start : start + len(env)]
            d, ad = env.spec.obs_dim, env.spec.act_dim
            rows[:, :d], rows[:, o : o + d] = env.observations, env.next_observations
            rows[:, 2 * o : 2 * o + ad] = env.actions
            rows[:, 2 * o + a], rows[:, 2 * o + a + 1] = env.rewards, env.terminations

    def draw(self, envs: torch.Tensor, shape: tuple[int, ...], generator) -> torch.Tensor:
        """Uniform row indices ``(T, *shape)`` inside each of ``envs (T,)``, with replacement."""
        u = torch.rand(len(envs), *shape, generator=generator)
        size = self.sizes[envs].view(-1, *([1] * len(shape)))
        return (u * size).long().minimum(size - 1)

    def gather(self, envs: torch.Tensor, rows: torch.Tensor) -> Transitions:
        """Rows ``(T, ...)`` of ``envs (T,)`` as Transitions ``(T, ...)``."""
        index = rows + self.offsets[envs].view(-1, *([1] * (rows.dim() - 1)))
        obs, next_obs, act, rew, term = self.table[index].split(self.widths, -1)
        return Transitions(obs, act, rew.squeeze(-1), next_obs, term.squeeze(-1))


class Sample(NamedTuple):
    """One update's data: ``tasks (T,)``, two context sets per task ``(T, 2, C)`` and a batch
    ``(T, B)``."""

    tasks: torch.Tensor
    context: Transitions
    batch: Transitions


class ContextEncoder(nn.Module):
    """Per-transition ``tanh(MLP(c))`` averaged over the context set: ``(..., C, D) -> (..., Z)``
    (FOCAL's deterministic, permutation-invariant encoder)."""

    def __init__(self, in_dim: int, hidden: tuple[int, ...], latent_dim: int):
        super().__init__()
        self.net = mlp(in_dim, hidden, latent_dim)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(features)).mean(-2)


# ---------------------------------------------------------------- agent


class FOCAL:
    def __init__(
        self,
        dataset: MultiEnvDataset,
        normalizer: Normalizer,
        cfg: FOCALConfig,
        device: torch.device,
        prompts: MultiEnvDataset | None = None,
        seed: int = 0,
    ):
        self.cfg, self.dataset, self.device = cfg, dataset, device
        self.num_envs, self.normalizer = dataset.num_envs, normalizer.to(device)
        o, a, z = dataset.obs_max, dataset.act_max, cfg.latent_dim
        context_dim = (2 * o if cfg.context_next_obs else o) + a + 1
        self.encoder = ContextEncoder(context_dim, cfg.encoder_hidden, z).to(device)
        self.actor = TanhGaussianActor(o + z, a, cfg.hidden).to(device)
        self.behavior = TanhGaussianActor(o + z, a, cfg.hidden).to(device)
        self.critic = EnsembleMLP(2, o + z + a, cfg.hidden, 1).to(device)
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self._polyak = (list(self.critic_target.parameters()), list(self.critic.parameters()))
        self.opt = torch.optim.Adam(
            [
                {"params": self.encoder.parameters(), "lr": cfg.encoder_lr},
                {"params": self.actor.parameters(), "lr": cfg.actor_lr},
                {"params": self.critic.parameters(), "lr": cfg.critic_lr},
                {"params": self.behavior.parameters(), "lr": cfg.behavior_lr},
            ],
            fused=fused_optimizer(device),
        )
        self.opt_min = Minimizer(self.opt)
        self.alpha = torch.tensor(float(cfg.alpha), device=device)
        self.act_masks = dataset.act_masks().float().to(device)  # (K, A)
        self.obs_masks = dataset.obs_masks().float().to(device)  # (K, O)
        self.table = TransitionTable(dataset, o, a)
        self.step = 0
        self.set_prompts(prompts if prompts is not None else dataset, seed)

    # -------------------------------------------------------- inputs and codes

    def _norm_env(self, env: torch.Tensor) -> torch.Tensor:
        """The normaliser row of each env: its own, or 0 for all (shared statistics)."""
        return env if self.cfg.per_env_normalizer else torch.zeros_like(env)

    def _obs(self, obs: torch.Tensor, env: torch.Tensor) -> torch.Tensor:
        """``obs (B, O)`` normalised, padded dims exactly 0."""
        return self.normalizer.normalize_obs(obs, self._norm_env(env)) * self.obs_masks[env]

    def features(self, context: Transitions, env: torch.Tensor) -> torch.Tensor:
        """Encoder inputs ``(T, C, D)`` of raw context sets ``(T, C, ...)`` of ``env (T,)``."""
        t, c = context.rewards.shape
        rows = env.repeat_interleave(c)  # (T*C,)
        flat = context.flat(2)
        parts = [
            self._obs(flat.observations, rows),
            flat.actions * self.act_masks[rows],
            self.normalizer.normalize_reward(flat.rewards, self._norm_env(rows))[:, None],
        ]
        if self.cfg.context_next_obs:
            parts.append(self._obs(flat.next_observations, rows))
        return torch.cat(parts, -1).view(t, c, -1)  # (T, C, D)

    def encode(self, context: Transitions, env: torch.Tensor) -> torch.Tensor:
        """Task codes ``(T, Z)`` of context sets ``(T, C, ...)`` of ``env (T,)``."""
        return self.encoder(self.features(context, env))

    def set_prompts(self, prompts: MultiEnvDataset, seed: int) -> None:
        """Draw each env's evaluation context set (``context_size`` transitions, generator seeded
        by ``seed``) from ``prompts``, one env per env of this agent with the same sizes."""
        dims = lambda d: [(s.obs_dim, s.act_dim) for s in d.specs]  # noqa: E731
        if dims(prompts) != dims(self.dataset):
            raise GenworldError(
                f"FOCAL prompts need one env per training env with the same sizes: got "
                f"{dims(prompts)}, the data has {dims(self.dataset)}"
            )
        self.prompt_table = TransitionTable(prompts, self.dataset.obs_max, self.dataset.act_max)
        generator = torch.Generator().manual_seed(seed)
        envs = torch.arange(self.num_envs)
        self.context_rows = self.prompt_table.draw(envs, (self.cfg.context_size,), generator)
        self._codes: torch.Tensor | None = None

    @torch.no_grad()
    def context_codes(self) -> torch.Tensor:
        """Each env's task code ``(K, Z)`` from its evaluation context set and the current
        encoder (cached until the next update or load)."""
        if self._codes is None:
            envs = torch.arange(self.num_envs)
            context = self.prompt_table.gather(envs, self.context_rows).to(self.device)
            self._codes = self.encode(context, envs.to(self.device))
        return self._codes

    # -------------------------------------------------------- training

    def sample(self, generator: torch.Generator) -> Sample:
        """Draw ``min(meta_batch, K)`` distinct tasks, two context sets and a batch per task."""
        cfg = self.cfg
        tasks = torch.randperm(self.num_envs, generator=generator)[: cfg.meta_batch]  # (T,)
        context_rows = self.table.draw(tasks, (2, cfg.context_size), generator)  # (T, 2, C)
        batch_rows = self.table.draw(tasks, (cfg.batch_size,), generator)  # (T, B)
        return Sample(
            tasks.to(self.device),
            self.table.gather(tasks, context_rows).to(self.device),
            self.table.gather(tasks, batch_rows).to(self.device),
        )

    def losses(self, s: Sample) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Every loss of one step from the current parameters, each reaching only its own
        network (encoder, critic, actor, behaviour), and detached metrics."""
        cfg, b = self.cfg, s.batch.rewards.shape[1]
        sets = s.tasks.repeat_interleave(2)  # (2T,) task of each context set
        codes = self.encode(s.context.flat(2), sets)  # (2T, Z)
        dml, intra, inter = dml_loss(codes, sets, cfg.dml_beta, cfg.dml_power, cfg.dml_epsilon)
        z = codes[0::2].detach().repeat_interleave(b, 0)  # (T*B, Z) first set, encoder cut off
        batch, env = s.batch.flat(2), s.tasks.repeat_interleave(b)  # (T*B, ...), (T*B,)
        mask = self.act_masks[env]  # (T*B, A)
        x = torch.cat([self._obs(batch.observations, env), z], -1)  # (T*B, O + Z)
        next_x = torch.cat([self._obs(batch.next_observations, env), z], -1)  # (T*B, O + Z)
        mean_b, log_std_b = self.behavior(x)  # (T*B, A) each
        nll = -tanh_gaussian_log_prob(batch.actions, mean_b, log_std_b, mask).mean()
        critic_loss, q = self._critic_loss(x, next_x, batch, mask)
        actor_loss, kl = self._actor_loss(x, mask, mean_b.detach(), log_std_b.detach())
        losses = {
            "dml": cfg.dml_weight * dml,
            "critic": critic_loss,
            "actor": actor_loss,
            "behavior_nll": nll,
        }
        return losses, {
            "losses/q": q.mean(),
            "losses/kl": kl,
            "charts/z_intra": intra,
            "charts/z_inter": inter,
            "charts/alpha": self.alpha.clone(),
        }

    def _critic_loss(self, x, next_x, batch: Transitions, mask) -> tuple[torch.Tensor, ...]:
        """Twin-critic TD loss to the value-penalised target; also Q ``(2, B)`` (detached)."""
        with torch.no_grad():
            mean, log_std = self.actor(next_x)  # (B, A) each
            next_act, next_logp = tanh_gaussian_sample(mean, log_std, mask)
            next_kl = gaussian_kl(mean, log_std, *self.behavior(next_x), mask)  # (B,)
            next_q = self.critic_target(torch.cat([next_x, next_act], -1)).min(0).values
            value = penalised_value(
                next_q.squeeze(-1), next_logp, next_kl, self.cfg.entropy_weight, self.alpha
            )
            target = td_target(batch.rewards, batch.terminations, value, self.cfg)  # (B,)
        q = self.critic(torch.cat([x, batch.actions * mask], -1)).squeeze(-1)  # (2, B)
        return (q - target).pow(2).mean(1).sum(), q.detach()  # reference: sum of twin MSEs

    def _actor_loss(self, x, mask, mean_b, log_std_b) -> tuple[torch.Tensor, torch.Tensor]:
        """BRAC's actor loss plus the reference's mean/log-std penalties (critic weights and
        the behaviour model detached); also the mean KL (detached)."""
        mean, log_std = self.actor(x)  # (B, A) each
        act, logp = tanh_gaussian_sample(mean, log_std, mask)
        q_pi = frozen_critic(self.critic, torch.cat([x, act], -1)).min(0).values  # (B,)
        kl = gaussian_kl(mean, log_std, mean_b, log_std_b, mask)  # (B,)
        loss = actor_objective(q_pi, logp, kl, self.cfg.entropy_weight, self.alpha)
        reg = ((mean.pow(2) + log_std.pow(2)) * mask).sum() / mask.sum()
        return loss + self.cfg.policy_reg * reg, kl.detach().mean()

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        losses, metrics = self.losses(self.sample(generator))
        self.opt_min.minimize(sum(losses.values()))
        with torch.no_grad():
            torch._foreach_lerp_(*self._polyak, self.cfg.tau)
            if self.cfg.train_alpha:  # reference: alpha -= alpha_lr * d(-alpha (D - target))
                step = self.cfg.alpha_lr * (metrics["losses/kl"] - self.cfg.target_divergence)
                self.alpha.copy_((self.alpha + step).clamp(0.0, self.cfg.alpha_max))
        self.step += 1
        self._codes = None
        return {**{f"losses/{k}": v.detach() for k, v in losses.items()}, **metrics}

    # -------------------------------------------------------- acting and state

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        obs, env_idx = obs.to(self.device), env_idx.to(self.device)
        x = torch.cat([self._obs(obs, env_idx), self.context_codes()[env_idx]], -1)
        mask = self.act_masks[env_idx]  # (n, A)
        mean, log_std = self.actor(x)
        if deterministic:
            return torch.tanh(mean) * mask
        return tanh_gaussian_sample(mean, log_std, mask)[0]

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object (the normaliser apart, see ``load_state_dict``)."""
        return {
            "encoder": self.encoder,
            "actor": self.actor,
            "behavior": self.behavior,
            "critic": self.critic,
            "critic_target": self.critic_target,
            "opt": self.opt,
        }

    def state_dict(self) -> dict:
        modules = {**self.modules(), "normalizer": self.normalizer}
        return agent_state(
            modules, {"alpha": self.alpha}, step=self.step, context_rows=self.context_rows.clone()
        )

    def load_state_dict(self, state: dict) -> None:
        """Restore a checkpoint; one from an agent on other tasks of the same robot (N tasks into
        1) loads its shared weights and env 0's statistics and keeps this agent's own
        evaluation context sets."""
        load_agent_state(self.modules(), {"alpha": self.alpha}, state)
        self.step = int(state["step"])
        norm = state["normalizer"]
        if norm["obs_mean"].shape != self.normalizer.obs_mean.shape:
            if self.cfg.per_env_normalizer:
                raise GenworldError(
                    f"checkpoint has statistics of {len(norm['obs_mean'])} envs, this agent "
                    f"{self.num_envs}: per_env_normalizer needs the same envs"
                )
            own = self.normalizer.state_dict()
            norm = {k: v[:1].expand_as(own[k]).clone() for k, v in norm.items()}
        self.normalizer.load_state_dict(norm)
        rows = torch.as_tensor(state["context_rows"], dtype=torch.int64)
        sizes = self.prompt_table.sizes[:, None]  # (K, 1) (rows of other data may not fit)
        if rows.shape == self.context_rows.shape and bool((rows < sizes).all()):
            self.context_rows = rows.clone()
        self._codes = None
