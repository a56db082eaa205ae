"""MrCoM world model: a meta-regularised contextual world model across scenarios.

Paper: "MrCoM: A Meta-Regularized World-Model Generalizing Across Multi-Scenarios" (seed 002),
§3 (eq. 4–16), App. A (Algorithm 1) and App. D (hyper-parameters). There is no reference
implementation, and the seed text has lost most equations; every piece rebuilt from the text
around it is listed under *Deviations*.

One window of ``L`` steps of one scenario (an env of the dataset): observations ``o_0 … o_L``,
actions ``a_0 … a_{L-1}``, rewards ``r_0 … r_{L-1}``. Position ``j`` predicts step ``j+1``:

- **Context** (eq. 4): the last ``context_len`` (App. D: 20) transitions of the same scenario,
  first in first out (TGW's :class:`~genworld.world_models.prompt_memory.PromptMemory` at rollout
  time). Step ``j`` becomes the token ``κ_j = E_step(o_j, o_{j-1}, a_{j-1}, r_{j-1}) + p_j``: the
  transition that led to ``o_j`` through a per-body 3-layer MLP tokenizer (the unified mapping of
  Assumption 1, eq. 5; ``E_o`` and ``E_a`` embed single observations and actions the same way)
  and a position embedding. A causal transformer over the tokens gives the context ``c_j`` of
  everything observed up to ``o_j``; ``c_{-1}`` is a learned "empty context".
- **Stochastic state u** (eq. 6, 9): prior ``p(u_{j+1} | c_j)``, posterior
  ``q(u_{j+1} | c_j, o_{j+1})``, both diagonal Gaussians.
- **Deterministic state h** (eq. 7): a second causal transformer over the tokens
  ``g_j = W [u_j, c_j, E_a(a_j)]`` gives ``h_{j+1}``: it sees every past stochastic state, the
  context and the action just taken.
- **Auxiliary state x** (eq. 8, 9): prior ``p(x_{j+1} | c_j)``, posterior
  ``q(x_{j+1} | c_j, o_{j+1})``.
- **Decoder and reward** (eq. 9): ``z = [u, h, x]``; ``p(o_{j+1} | z_{j+1})`` a Gaussian over the
  normalised next observation in the body's own dims, ``p(r_j | z_{j+1})`` a Gaussian over the
  normalised reward, both of unit variance; a spread head on the detached latent predicts how
  far the next observation falls from the decoder's mean (imagination's noise).
- **World-model loss** (eq. 10): ``L_wm = −log p(o) − log p(r) + KL_u + KL_x``, each KL with
  DreamerV3's balancing and free nats (:func:`kl_loss`).
- **Meta-state regularisation** (eq. 11–12): ``KL(q(u_{j+1} | c_j, o_{j+1}) ‖ r(u_{j+1} | a_j,
  c_j))`` with a learned prior ``r`` conditioned on the action and the context: u keeps only what
  the action and the context determine, so scenarios with the same dynamics share u. The KL's
  two sides are two terms: ``meta_prior`` fits ``r`` to the posterior (always on: imagination
  draws u from ``r``), ``meta_state`` pulls the posterior towards ``r`` (the regulariser, λ_ms).
- **Meta-value regularisation** (eq. 13–15): a value ``V_m(z)`` shared by all scenarios, trained
  on posterior latents with a Bellman target (eq. 14, :func:`bellman_loss`); the world model is
  penalised by ``(V_m(ẑ_{j+1}) − V_m(z_{j+1}))²`` (eq. 15, :func:`meta_value_loss`), ``ẑ`` the
  latent it predicts (u from ``r``, x from its prior) and ``z`` the posterior one.
- **Total** (eq. 16): ``L = L_wm + λ_ms L_ms + λ_mv L_mv`` plus V_m's own Bellman loss; every
  weight is a field of :class:`MrCoMConfig` (:meth:`MrCoMWorldModel.loss_weights`).
- **Imagination** (``next``): the context transformer runs over the rollout's memory; each
  slot's u is its posterior mean, the new step's u is drawn from the meta-state prior
  ``r(u | a, c)`` and x from ``p(x | c)``; the decoder gives the next observation and reward.
  Terminations come from the registry's exact functions.

Deviations (reconstructions of unreadable equations and choices the paper leaves open):
- eq. 4: the context is the rollout's own last ``context_len`` steps read causally, one token per
  transition (as CaDM's context encoder: one token holds both ends of a transition, so a 1-layer
  transformer need not relate tokens to see the dynamics); the current action is not part of
  the context (it is the decision being modelled) and enters through ``h`` and the meta-state
  prior;
- eq. 6–9: u and x share one conditioning (``c``, plus ``o`` in the posteriors); only u has the
  action-conditioned meta-state prior (Denoised MDPs' controllable / uncontrollable split,
  which §3.2 cites); the window's first observation gets its u from ``c_{-1}``;
- eq. 7: the deterministic state is a second 1-layer causal transformer (App. D gives one
  transformer layer; we read it as one layer each) fed the previous stochastic state, so every
  one-step prediction ``h_{j+1}`` is exact at imagination time (it does not depend on
  ``u_{j+1}``);
- eq. 9: the decoder predicts the normalised next observation as a residual on the current one
  (as TGW); ``−log p(o)`` is summed over the env's real dims, averaged over steps;
- eq. 9–10: ``p(o | z)`` and ``p(r | z)`` have unit variance in normalised units, so their
  negative log-likelihoods are half squared errors (DreamerV3's decoder of vector observations,
  and genworld's RSSM). With a learned variance the dims the model finds easy (joint positions)
  drive theirs to its floor, their ``1/σ²`` weight takes the shared decoder's whole gradient,
  and the velocity dims are never learned: trained that way, even as a plain autoencoder
  (no KL terms), the model stayed at the one-step error of predicting no change. The spread
  head (:func:`spread_nll`) reads the detached latent and the detached error, so it moves
  nothing else;
- eq. 10–12: every KL is DreamerV3's balanced form ``kl_dyn·max(free, KL(sg q ‖ p)) +
  kl_rep·max(free, KL(q ‖ sg p))`` per step, with DreamerV3's values (0.5, 0.1, 1 nat) as
  defaults; ``kl_dyn = kl_rep = 1, free_nats = 0`` is the plain KL;
- eq. 13–14: no per-scenario value functions exist when the world model is trained offline, so
  V_m learns the behaviour policy's value with TD(0) on normalised rewards (γ = 0.99, the
  policy's discount in App. D), on detached latents, with the online network's detached value
  as the target (no target network); it learns in per-step reward units (``(1 − γ)·V``, so its
  values are O(1) and its gradients do not swamp the world model's under the trainer's one
  gradient-norm clip), and eq. 15 compares values in the same units, so a value error weighs as
  much as a reward error of its size (in return units, ÷ (1 − γ), the term is 10⁴ times larger
  and, once switched on, it undoes the decoder's fit);
- eq. 15: ``ẑ`` is a sample of the imagination priors with the same ``h``; the posterior's value
  is the target (detached) and V_m's weights are frozen in this term, so it moves the world
  model only; ``meta_value_warmup`` updates (ours: 500) pass before it is switched on, while
  V_m learns (the model counts its own training updates, saved with its weights);
- eq. 16 / App. D: the loss-scale table gives 0.1, 1, 1 without the terms' names; we give 0.1 to
  the meta-state KL (DreamerV3's representation-loss scale is 0.1 too) and 1 to the world-model
  loss and the meta-value term; V_m's Bellman loss has weight 1. The meta-state KL's prior side
  (fitting ``r``) has its own weight, ``meta_prior_scale`` (0.1, so the defaults give eq. 12's
  one balanced KL at 0.1): the "without meta-state regularisation" ablation sets λ_ms = 0 and
  still has an imagination prior;
- App. D: embedding 128 with 3 heads: the attention is 3 heads of ⌈128/3⌉ = 43 (129 inner
  dims), projected back to 128 (:class:`~genworld.nn.transformer.EnsembleBlock`);
  deterministic and stochastic states 128, the auxiliary state 128 (ours), 3-layer ReLU MLPs;
  "learning rate decay weight 1e-4" is read as AdamW weight decay;
- scenarios of one task (env names ``<task>@<params>``) share tokenizers and heads, so only the
  context tells them apart; different tasks or robots have their own (``share_scenarios``);
- no ensemble: ``uncertainty`` is the spread head's predicted std of the next observation (mean over
  the env's real dims, normalised units); the paper trains its agent on plain rollouts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.mlp import mlp
from genworld.nn.tokenizers import EnsemblePerEnvHead, PerEnvLinear
from genworld.nn.transformer import EnsembleCausalTransformer
from genworld.types import EnvSpec, SeqBatch
from genworld.world_models.base import WMStep, check_compatible, check_finite, registry_terminations
from genworld.world_models.prompt_memory import (
    PromptMemory,
    push,
    row_chunks,
    start_memory,
    with_current_observations,
)
from genworld.world_models.terms import (
    balanced_kl,
    gaussian_kl,
    gaussian_nll,
    masked_mean,
    normalised,
    previous,
    soft_clamp,
)

MIN_STD = 0.1
"""Smallest std of the latent Gaussians (Dreamer's ``min_std``)."""
ROLLOUT_CHUNK = 1024
"""Rollout rows computed together in ``next`` (bounds the activations' memory)."""


@dataclass(frozen=True)
class MrCoMConfig:
    """Defaults: App. D of the paper where it gives a value, DreamerV3 for the KL terms."""

    context_len: int = 20
    """Steps of context (eq. 4; App. D prompt length 20); 1 = no context (the current step)."""
    d_model: int = 128
    """Token width, also the context and deterministic-state width (App. D: 128)."""
    n_layers: int = 1
    """Layers of each of the two causal transformers (App. D: 1)."""
    n_heads: int = 3
    """Attention heads; width per head ⌈d_model / n_heads⌉ (App. D: 3)."""
    stoch_dim: int = 128
    """Width of the stochastic state u (App. D: 128)."""
    aux_dim: int = 128
    """Width of the auxiliary state x (ours: as u)."""
    hidden: int = 256
    """Hidden width of the tokenizer, latent-head, decoder, reward and value MLPs (ours)."""
    mlp_layers: int = 3
    """Linear layers of the tokenizer, latent-head and value MLPs (App. D: 3; the decoder and
    reward head always have 3)."""
    share_scenarios: bool = True
    """True: envs named ``<task>@<params>`` (scenarios of one task) share tokenizers and heads, so
    the context alone tells them apart; False: one set per env (as TGW)."""
    obs_scale: float = 1.0
    """Weight of the observation NLL −log p(o' | u, h, x) in L_wm (eq. 10)."""
    reward_scale: float = 1.0
    """Weight of the reward NLL in L_wm."""
    kl_u_scale: float = 1.0
    """Weight of KL(q(u | c, o) ‖ p(u | c)) in L_wm (eq. 10)."""
    kl_x_scale: float = 1.0
    """Weight of KL(q(x | c, o) ‖ p(x | c)) in L_wm (eq. 10)."""
    kl_dyn: float = 0.5
    """KL balancing: scale of KL(sg q ‖ p), the prior's side (DreamerV3: 0.5)."""
    kl_rep: float = 0.1
    """KL balancing: scale of KL(q ‖ sg p), the posterior's side (DreamerV3: 0.1)."""
    free_nats: float = 1.0
    """Each KL side is at least this many nats per step, no gradient below (DreamerV3: 1)."""
    meta_state_scale: float = 0.1
    """λ_ms: weight of the meta-state regulariser, the posterior's side of KL(q(u | c, o) ‖
    r(u | a, c)) (eq. 12, 16: ``kl_rep``·KL(q ‖ sg r))."""
    meta_prior_scale: float = 0.1
    """Weight of the same KL's prior side, ``kl_dyn``·KL(sg q ‖ r), which fits the imagination
    prior r (ours: λ_ms's default, so the defaults give eq. 12's balanced KL)."""
    meta_value_scale: float = 1.0
    """λ_mv: weight of (V_m(ẑ') − V_m(z'))² on the world model (eq. 15, 16)."""
    value_scale: float = 1.0
    """Weight of V_m's own Bellman loss (eq. 14); it trains V_m only."""
    discount: float = 0.99
    """γ of V_m's Bellman target (App. D: the policy's discount)."""
    meta_value_warmup: int = 500
    """Training updates before the meta-value term switches on; V_m learns from the first (ours:
    switched on at once, the term slowed the world model's fit; docs/notes/history.md)."""

    def validate(self) -> None:
        checks = {
            "context_len": self.context_len >= 1,
            "d_model": self.d_model > 0,
            "n_layers": self.n_layers >= 1,
            "n_heads": self.n_heads >= 1,
            "stoch_dim": self.stoch_dim >= 1,
            "aux_dim": self.aux_dim >= 1,
            "hidden": self.hidden > 0,
            "mlp_layers": self.mlp_layers >= 2,
            "discount": 0 <= self.discount < 1,
            "free_nats": self.free_nats >= 0,
            "meta_value_warmup": self.meta_value_warmup >= 0,
        }
        for name in self.loss_fields():
            checks[name] = 0 <= getattr(self, name) < float("inf")
        for name, ok in checks.items():
            if not ok:
                raise GenworldError(
                    f"MrCoMConfig.{name}={getattr(self, name)!r} is invalid (sizes ≥ 1, "
                    "mlp_layers ≥ 2, discount in [0, 1), weights finite "
                    "and ≥ 0)"
                )

    @staticmethod
    def loss_fields() -> tuple[str, ...]:
        return (
            "obs_scale",
            "reward_scale",
            "kl_u_scale",
            "kl_x_scale",
            "kl_dyn",
            "kl_rep",
            "meta_state_scale",
            "meta_prior_scale",
            "meta_value_scale",
            "value_scale",
        )


# ------------------------------------------------------------------ the loss terms, one per equation
@dataclass(frozen=True)
class Normal:
    """A diagonal Gaussian: ``mean`` and ``std`` of the same shape ``(..., dim)``."""

    mean: torch.Tensor
    std: torch.Tensor

    def sample(self, noise: torch.Tensor) -> torch.Tensor:
        return self.mean + self.std * noise  # reparameterised

    def detach(self) -> Normal:
        return Normal(self.mean.detach(), self.std.detach())

    def __getitem__(self, index) -> Normal:  # the same slice of both: normal[:, 1:]
        return Normal(self.mean[index], self.std[index])


def kl_nats(q: Normal, p: Normal) -> torch.Tensor:
    """KL(q ‖ p) per step, summed over the latent dims: ``(...)``."""
    return gaussian_kl(q.mean, q.std.log(), p.mean, p.std.log())


def _balanced(q: Normal, p: Normal, dyn: float, rep: float, free: float) -> torch.Tensor:
    """``dyn``·max(free, KL(sg q ‖ p)) + ``rep``·max(free, KL(q ‖ sg p)) per step."""
    return balanced_kl((q.mean, q.std.log()), (p.mean, p.std.log()), dyn, rep, free)[0]


def kl_loss(q: Normal, p: Normal, cfg: MrCoMConfig) -> torch.Tensor:
    """Eq. 10's KL terms per step, with DreamerV3's balancing and free nats: the prior moves
    towards the posterior at ``kl_dyn``, the posterior towards the prior at ``kl_rep``."""
    return _balanced(q, p, cfg.kl_dyn, cfg.kl_rep, cfg.free_nats)


def observation_nll(mean: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eq. 10's −log p(o' | u, h, x) of a unit-variance Gaussian up to a constant: half the
    squared error, summed over the env's real dims ``mask``."""
    return 0.5 * ((mean - target).pow(2) * mask).sum(-1)


def spread_nll(
    mean: torch.Tensor, logvar: torch.Tensor, target: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The spread head's loss: the Gaussian NLL of the decoder's detached error under the
    predicted log-variance, summed over the env's real dims; it trains the spread head only."""
    return (gaussian_nll((mean.detach() - target).pow(2), logvar) * mask).sum(-1)


def meta_state_loss(q_u: Normal, r_u: Normal, cfg: MrCoMConfig) -> torch.Tensor:
    """Eq. 12's regulariser: the posterior's side of KL(q(u | c, o) ‖ r(u | a, c)), the
    mutual-information bound of eq. 11, ``kl_rep``·max(free, KL(q ‖ sg r)) per step."""
    return _balanced(q_u, r_u, 0.0, cfg.kl_rep, cfg.free_nats)


def meta_prior_loss(q_u: Normal, r_u: Normal, cfg: MrCoMConfig) -> torch.Tensor:
    """The same KL's prior side, ``kl_dyn``·max(free, KL(sg q ‖ r)) per step: it fits the
    imagination prior r to the posterior."""
    return _balanced(q_u, r_u, cfg.kl_dyn, 0.0, cfg.free_nats)


def bellman_loss(
    value: torch.Tensor,
    reward: torch.Tensor,
    next_value: torch.Tensor,
    terminal: torch.Tensor,
    discount: float,
) -> torch.Tensor:
    """Eq. 14: ``(V_m(z_t) − [r_t + γ (1 − d_t) V_m(z_{t+1})])²``, the target detached."""
    target = reward + discount * (1.0 - terminal) * next_value.detach()
    return (value - target).pow(2)


def meta_value_loss(predicted_value: torch.Tensor, posterior_value: torch.Tensor) -> torch.Tensor:
    """Eq. 15: ``(V_m(ẑ') − V_m(z'))²``; the posterior latent's value is the target."""
    return (predicted_value - posterior_value.detach()).pow(2)


# ------------------------------------------------------------------ building blocks
def body_groups(specs: list[EnvSpec], share_scenarios: bool) -> tuple[list[EnvSpec], list[int]]:
    """One spec per body and each env's body: scenarios ``<task>@<params>`` of one task are one
    body when ``share_scenarios``; otherwise every env is its own."""
    names: list[str] = []
    bodies: list[EnvSpec] = []
    index = []
    for spec in specs:
        name = spec.name.partition("@")[0] if share_scenarios else spec.name
        if name not in names:
            names.append(name)
            bodies.append(spec)
        body = bodies[names.index(name)]
        if (body.obs_dim, body.act_dim) != (spec.obs_dim, spec.act_dim):
            raise GenworldError(
                f"{spec.name!r} and {body.name!r} are scenarios of {name!r} with different "
                "observation or action sizes; train with share_scenarios=False"
            )
        index.append(names.index(name))
    return bodies, index


class BodyMLP(nn.Module):
    """Padded inputs of a body, ``(B, ..., in_max)`` each → ``(B, ..., out)``: a per-body first
    layer over their concatenation (one :class:`PerEnvLinear` per input, summed, so each input's
    padded columns never enter), then shared layers, ReLU between. ``inputs``: each input's
    padded width and its real width per body."""

    def __init__(
        self, bodies: int, inputs: list[tuple[int, list[int]]], hidden: int, out: int, layers
    ):
        super().__init__()
        self.first = nn.ModuleList(
            PerEnvLinear(bodies, in_max, hidden, dims) for in_max, dims in inputs
        )
        self.rest = mlp(hidden, [hidden] * (layers - 2), out)

    def forward(self, *inputs: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        first = sum(layer(x, body) for layer, x in zip(self.first, inputs, strict=True))
        return self.rest(F.relu(first))


class GaussianHead(nn.Module):
    """Features → a diagonal Gaussian (``std = softplus(·) + MIN_STD``)."""

    def __init__(self, in_dim: int, hidden: int, out: int, layers: int):
        super().__init__()
        self.net = mlp(in_dim, [hidden] * (layers - 1), 2 * out)

    def forward(self, x: torch.Tensor) -> Normal:
        mean, raw_std = self.net(x).chunk(2, -1)
        return Normal(mean, F.softplus(raw_std) + MIN_STD)


class Window(NamedTuple):
    """What the model computes over one window (see the module docstring for the indices)."""

    q_u: Normal  # (B, L+1, S) posterior of u_0 … u_L
    p_u: Normal  # (B, L+1, S) prior of u_0 … u_L
    r_u: Normal  # (B, L, S) meta-state prior of u_1 … u_L
    q_x: Normal  # (B, L, X) posterior of x_1 … x_L
    p_x: Normal  # (B, L, X) prior of x_1 … x_L
    z: torch.Tensor  # (B, L, Z) posterior latents [u, h, x] of o_1 … o_L
    z_hat: torch.Tensor  # (B, L, Z) predicted latents [u ~ r, h, x ~ p]
    obs_mean: torch.Tensor  # (B, L, obs_max) normalised o_1 … o_L, zero on padding
    obs_logvar: torch.Tensor  # (B, L, obs_max)
    rew_mean: torch.Tensor  # (B, L) normalised r_0 … r_{L-1}


class MrCoMWorldModel(nn.Module):
    """The world model of the module docstring, meeting :class:`~genworld.world_models.base.
    WorldModel`: ``sample_batch`` (windows of ``context_len`` steps), ``loss`` (eq. 16),
    ``encode`` (a rollout's context from the data) and ``next`` (one imagined step)."""

    def __init__(self, specs: list[EnvSpec], cfg: MrCoMConfig, normalizer: Normalizer):
        super().__init__()
        cfg.validate()
        self.cfg, self.specs, self.normalizer = cfg, list(specs), normalizer
        bodies, body_of_env = body_groups(self.specs, cfg.share_scenarios)
        self.obs_max = max(s.obs_dim for s in specs)
        self.act_max = max(s.act_dim for s in specs)
        nb, d, s, x, h = len(bodies), cfg.d_model, cfg.stoch_dim, cfg.aux_dim, cfg.hidden
        obs_dims, act_dims = [b.obs_dim for b in bodies], [b.act_dim for b in bodies]
        layers = cfg.mlp_layers
        # context (eq. 4): per-body tokenizers and a causal transformer
        obs_in, act_in = (self.obs_max, obs_dims), (self.act_max, act_dims)
        self.step_embed = BodyMLP(nb, [obs_in, obs_in, act_in, (1, [1] * nb)], h, d, layers)
        self.obs_embed = BodyMLP(nb, [obs_in], h, d, layers)
        self.act_embed = BodyMLP(nb, [act_in], h, d, layers)
        self.context_pos = nn.Parameter(0.02 * torch.randn(cfg.context_len, d))
        self.context_transformer = EnsembleCausalTransformer(1, d, cfg.n_layers, cfg.n_heads)
        self.empty_context = nn.Parameter(torch.zeros(d))
        # stochastic and auxiliary states (eq. 6, 8, 9) and the meta-state prior (eq. 12)
        self.u_prior = GaussianHead(d, h, s, layers)
        self.u_posterior = GaussianHead(2 * d, h, s, layers)
        self.u_meta_prior = GaussianHead(2 * d, h, s, layers)
        self.x_prior = GaussianHead(d, h, x, layers)
        self.x_posterior = GaussianHead(2 * d, h, x, layers)
        # deterministic state (eq. 7)
        self.latent_in = nn.Linear(s + 2 * d, d)
        self.latent_pos = nn.Parameter(0.02 * torch.randn(cfg.context_len, d))
        self.latent_transformer = EnsembleCausalTransformer(1, d, cfg.n_layers, cfg.n_heads)
        # decoder, spread, reward (eq. 9) and the meta value (eq. 13–15), all on z = [u, h, x]
        z_dim = s + d + x
        self.decoder = EnsemblePerEnvHead(1, nb, z_dim, h, self.obs_max, obs_dims, 1, F.relu)
        self.spread_head = EnsemblePerEnvHead(1, nb, z_dim, h, self.obs_max, obs_dims, 1, F.relu)
        self.reward_head = EnsemblePerEnvHead(1, nb, z_dim, h, 1, [1] * nb, 1, F.relu)
        self.meta_value = mlp(z_dim, [h] * (layers - 1), 1)
        obs_masks = torch.zeros(len(specs), self.obs_max, dtype=torch.bool)
        act_masks = torch.zeros(len(specs), self.act_max, dtype=torch.bool)
        for k, spec in enumerate(specs):
            obs_masks[k, : spec.obs_dim], act_masks[k, : spec.act_dim] = True, True
        self.register_buffer("obs_masks", obs_masks)
        self.register_buffer("act_masks", act_masks)
        self.register_buffer("body_of_env", torch.tensor(body_of_env, dtype=torch.int64))
        self.register_buffer("updates", torch.zeros((), dtype=torch.int64))

    # ---------------------------------------------------------------- shared pieces
    def _normalised_obs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """Raw ``(B, L, obs_max)`` → per-env normalised, zero on padded dims."""
        norm = self.normalizer
        obs_n = normalised(obs, env_idx, norm.obs_mean, norm.obs_std)
        return obs_n * self.obs_masks[env_idx][:, None]

    def _normalised_prev_rewards(
        self, prev_rew: torch.Tensor, env_idx: torch.Tensor
    ) -> torch.Tensor:
        """Raw ``(B, L)`` previous rewards → normalised, zero at slot 0 (which carries none)."""
        norm = self.normalizer
        rew_n = normalised(prev_rew, env_idx, norm.reward_mean, norm.reward_std)
        return rew_n * (torch.arange(prev_rew.shape[1], device=prev_rew.device) > 0)

    def _context(self, obs_n, act, prev_rew_n, body, valid) -> torch.Tensor:
        """Eq. 4: ``c_j`` over the tokens ``κ_j = E_step(o_j, o_{j-1}, a_{j-1}, r_{j-1}) + p_j``
        (slot 0 has no previous step: zeros)."""
        previous_step = lambda x: F.pad(x[:, :-1], (0, 0, 1, 0))  # noqa: E731
        tokens = self.step_embed(
            obs_n, previous_step(obs_n), previous_step(act), prev_rew_n[..., None], body=body
        )
        tokens = tokens + self.context_pos[: obs_n.shape[1]]
        return self.context_transformer(tokens, valid)[0]  # (B, L, D)

    def _deterministic(self, u, context, e_act, valid, query_index=None) -> torch.Tensor:
        """Eq. 7: ``h_{j+1}`` from ``g_i = W [u_i, c_i, E_a(a_i)]`` for ``i ≤ j``: ``(B, L, D)``,
        or ``(B, 1, D)`` at ``query_index (B,)`` only."""
        tokens = self.latent_in(torch.cat([u, context, e_act], -1))
        tokens = tokens + self.latent_pos[: u.shape[1]]
        return self.latent_transformer(tokens, valid, query_index)[0]

    def _decode(self, z, obs_n, body) -> tuple[torch.Tensor, ...]:
        """Eq. 9: ``z (B, ..., Z)`` → next-observation mean (a residual on ``obs_n``) and the
        spread head's log-variance (of the detached ``z``) ``(B, ..., obs_max)``, reward mean
        ``(B, ...)``."""
        body = body.view(1, -1, *([1] * (z.dim() - 2)))  # broadcasts to (1, B, ...)
        delta = self.decoder(z[None], body)[0, ..., 0, :]
        obs_logvar = self.spread_head(z.detach()[None], body)[0, ..., 0, :]
        rew_mean = self.reward_head(z[None], body)[0, ..., 0, 0]
        return obs_n + delta, soft_clamp(obs_logvar), rew_mean

    def _value(self, z: torch.Tensor, frozen: bool = False) -> torch.Tensor:
        """``V_m(z)`` ``(...)``; ``frozen``: V_m's weights take no gradient (eq. 15)."""
        if not frozen:
            return self.meta_value(z)[..., 0]
        params = {n: p.detach() for n, p in self.meta_value.named_parameters()}
        return torch.func.functional_call(self.meta_value, params, (z,))[..., 0]

    # ---------------------------------------------------------------- training
    def forward_window(self, batch: SeqBatch, generator: torch.Generator | None = None) -> Window:
        """Every latent, prior and prediction of a window of training steps (sampled latents)."""
        env_idx, valid, body = batch.env_idx, batch.step_mask, self.body_of_env[batch.env_idx]
        length = batch.observations.shape[1]
        observed = torch.cat([batch.observations[:, :1], batch.next_observations], 1)
        obs_all = self._normalised_obs(observed, env_idx)  # o_0 … o_L
        act = batch.actions * self.act_masks[env_idx][:, None]  # a_0 … a_{L-1}
        rew_n = self._normalised_prev_rewards(previous(batch.rewards), env_idx)
        e_all, e_act = self.obs_embed(obs_all, body=body), self.act_embed(act, body=body)
        context = self._context(obs_all[:, :length], act, rew_n, body, valid)
        before = torch.cat([self.empty_context.expand(len(body), 1, -1), context], 1)
        q_u, p_u = self.u_posterior(torch.cat([before, e_all], -1)), self.u_prior(before)
        u = q_u.sample(_noise(q_u.mean, generator))  # u_0 … u_L
        h = self._deterministic(u[:, :length], context, e_act, valid)  # h_1 … h_L
        r_u = self.u_meta_prior(torch.cat([context, e_act], -1))
        q_x = self.x_posterior(torch.cat([context, e_all[:, 1:]], -1))
        p_x = self.x_prior(context)
        z = torch.cat([u[:, 1:], h, q_x.sample(_noise(q_x.mean, generator))], -1)
        u_hat, x_hat = (
            r_u.sample(_noise(r_u.mean, generator)),
            p_x.sample(_noise(p_x.mean, generator)),
        )
        z_hat = torch.cat([u_hat, h, x_hat], -1)
        obs_mean, obs_logvar, rew_mean = self._decode(z, obs_all[:, :length], body)
        return Window(q_u, p_u, r_u, q_x, p_x, z, z_hat, obs_mean, obs_logvar, rew_mean)

    def loss_terms(
        self, batch: SeqBatch, generator: torch.Generator | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Each term of eq. 16 unweighted (means over the window's valid steps), and metrics."""
        cfg, norm, env_idx = self.cfg, self.normalizer, batch.env_idx
        w = self.forward_window(batch, generator)
        valid = batch.step_mask.float()  # (B, L): step j, i.e. o_{j+1}, exists
        with_first = F.pad(valid, (1, 0), value=1.0)  # (B, L+1): o_0 always exists
        obs_mask = self.obs_masks[env_idx][:, None].float()
        target_obs = normalised(batch.next_observations, env_idx, norm.obs_mean, norm.obs_std)
        target_rew = normalised(batch.rewards, env_idx, norm.reward_mean, norm.reward_std)
        values = self._value(w.z.detach())  # V_m on posterior latents, trains V_m only
        in_returns = 1.0 / (1.0 - cfg.discount)  # V_m learns (1 − γ)·V; the metric in returns
        terms = {
            "obs_nll": masked_mean(observation_nll(w.obs_mean, target_obs, obs_mask), valid),
            "reward_nll": masked_mean(0.5 * (w.rew_mean - target_rew).pow(2), valid),
            "obs_spread": masked_mean(
                spread_nll(w.obs_mean, w.obs_logvar, target_obs, obs_mask), valid
            ),
            "kl_u": masked_mean(kl_loss(w.q_u, w.p_u, cfg), with_first),
            "kl_x": masked_mean(kl_loss(w.q_x, w.p_x, cfg), valid),
            "meta_state": masked_mean(meta_state_loss(w.q_u[:, 1:], w.r_u, cfg), valid),
            "meta_prior": masked_mean(meta_prior_loss(w.q_u[:, 1:], w.r_u, cfg), valid),
            "meta_value": masked_mean(
                meta_value_loss(self._value(w.z_hat, frozen=True), self._value(w.z, frozen=True)),
                valid,
            ),
            "value": masked_mean(
                bellman_loss(  # in per-step reward units: the reward enters as (1 − γ) r
                    values[:, :-1],
                    (1.0 - cfg.discount) * target_rew[:, 1:],
                    values[:, 1:],
                    batch.terminations[:, 1:],
                    cfg.discount,
                ),
                valid[:, 1:],
            ),
        }
        obs_err = (w.obs_mean - target_obs).pow(2) * obs_mask
        metrics = {
            "wm/obs_mse": (obs_err.sum(-1) * valid).sum() / (obs_mask.sum(-1) * valid).sum(),
            "wm/rew_mse": masked_mean((w.rew_mean - target_rew).pow(2), valid),
            "wm/kl_u_nats": masked_mean(kl_nats(w.q_u, w.p_u), with_first),
            "wm/kl_x_nats": masked_mean(kl_nats(w.q_x, w.p_x), valid),
            "wm/meta_state_nats": masked_mean(kl_nats(w.q_u[:, 1:], w.r_u), valid),
            "wm/meta_value_mean": in_returns * masked_mean(values, valid),
        }
        return terms, {k: v.detach() for k, v in metrics.items()}

    def loss_weights(self, meta_value_on: bool = True) -> dict[str, float]:
        """Eq. 16's weight of each of ``loss_terms``' terms (each one config field)."""
        cfg = self.cfg
        return {
            "obs_nll": cfg.obs_scale,
            "reward_nll": cfg.reward_scale,
            "obs_spread": 1.0,  # trains the spread head only, so its scale changes nothing
            "kl_u": cfg.kl_u_scale,
            "kl_x": cfg.kl_x_scale,
            "meta_state": cfg.meta_state_scale,
            "meta_prior": cfg.meta_prior_scale,
            "meta_value": cfg.meta_value_scale if meta_value_on else 0.0,
            "value": cfg.value_scale,
        }

    def loss(
        self, batch: SeqBatch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Eq. 16. A call in training mode with gradients counts as one update (the meta-value
        warm-up reads the count)."""
        meta_value_on = int(self.updates) >= self.cfg.meta_value_warmup
        if self.training and torch.is_grad_enabled():
            self.updates += 1
        terms, metrics = self.loss_terms(batch, generator)
        weights = self.loss_weights(meta_value_on)
        total = sum(weights[name] * term for name, term in terms.items())
        metrics |= {f"wm/{name}": term.detach() for name, term in terms.items()}
        return total, metrics

    def sample_batch(
        self, dataset: MultiEnvDataset, batch_size: int, generator: torch.Generator
    ) -> SeqBatch:
        batch = dataset.sample_windows(batch_size, self.cfg.context_len, generator)
        check_finite(observations=batch.observations, rewards=batch.rewards)
        return batch

    # ---------------------------------------------------------------- imagination
    def encode(
        self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor
    ) -> PromptMemory:
        """The context of rollouts starting at transition ``index`` of env ``env_idx``: the up to
        ``context_len − 1`` dataset steps before it in its episode, then the start observation."""
        check_compatible(self.specs, dataset)
        m = self.cfg.context_len
        return start_memory(dataset, env_idx, index, m, self.obs_max, self.act_max)

    @torch.no_grad()
    def next(
        self,
        state: PromptMemory,
        observations: torch.Tensor | None,
        actions: torch.Tensor,
        env_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep:
        """Act ``actions (B, act_max)`` in every rollout. The observations are the memory's
        current ones (``observations`` is accepted for the shared interface). ``deterministic``:
        every Gaussian's mean, else samples of u, x and the next observation."""
        memory = state
        b, m = memory.count.shape[0], memory.observations.shape[1]
        if m != self.cfg.context_len:
            raise GenworldError(
                f"the rollout context has {m} slots, the model was trained with "
                f"context_len={self.cfg.context_len}; build it with model.encode(...)"
            )
        rows = torch.arange(b, device=actions.device)
        act_seq = memory.actions.clone()
        act_seq[rows, memory.count - 1] = actions * self.act_masks[memory.env_idx]
        draws = {} if deterministic else self._draws(b, generator, actions.device)
        parts = [
            self._predict(memory, act_seq, c, {k: v[c] for k, v in draws.items()})
            for c in row_chunks(b, ROLLOUT_CHUNK)
        ]
        next_obs, reward, uncertainty = (torch.cat(x) for x in zip(*parts, strict=True))
        terminations = registry_terminations(self.specs, next_obs, memory.env_idx)
        new_memory = push(memory, act_seq, next_obs, reward)
        return WMStep(next_obs, reward, uncertainty, terminations, new_memory)

    def with_observations(self, state: PromptMemory, observations: torch.Tensor) -> PromptMemory:
        """The memory continuing from ``observations`` (its current slot replaced)."""
        return with_current_observations(state, observations)

    def _draws(self, b: int, generator, device) -> dict[str, torch.Tensor]:
        """A step's random numbers for all ``b`` rollouts, drawn in one fixed order before the
        rows are split into chunks, so the chunking does not change them."""
        cfg = self.cfg
        return {
            "u": torch.randn(b, cfg.stoch_dim, generator=generator, device=device),
            "x": torch.randn(b, cfg.aux_dim, generator=generator, device=device),
            "obs": torch.randn(b, self.obs_max, generator=generator, device=device),
        }

    def _predict(self, memory: PromptMemory, act_seq, c: slice, draws: dict) -> tuple:
        """Rows ``c`` of a rollout step: ``(next_obs, reward, uncertainty)`` in raw units."""
        env, count = memory.env_idx[c], memory.count[c]
        body, last = self.body_of_env[env], count - 1
        rows = torch.arange(len(env), device=env.device)
        obs_n = self._normalised_obs(memory.observations[c], env)
        act = act_seq[c] * self.act_masks[env][:, None]
        rew_n = self._normalised_prev_rewards(memory.prev_rewards[c], env)
        valid = torch.arange(obs_n.shape[1], device=env.device)[None] < count[:, None]
        e_obs, e_act = self.obs_embed(obs_n, body=body), self.act_embed(act, body=body)
        context = self._context(obs_n, act, rew_n, body, valid)
        before = torch.cat([self.empty_context.expand(len(env), 1, -1), context[:, :-1]], 1)
        u = self.u_posterior(torch.cat([before, e_obs], -1)).mean  # the memory's u_0 … u_t
        h = self._deterministic(u, context, e_act, valid, last)[:, 0]  # h_{t+1}
        c_t, a_t = context[rows, last], e_act[rows, last]
        r_u, p_x = self.u_meta_prior(torch.cat([c_t, a_t], -1)), self.x_prior(c_t)
        u_next = r_u.sample(draws["u"]) if draws else r_u.mean
        x_next = p_x.sample(draws["x"]) if draws else p_x.mean
        z = torch.cat([u_next, h, x_next], -1)
        mean, logvar, rew_mean = self._decode(z, obs_n[rows, last], body)
        std = (0.5 * logvar).exp()
        next_n = mean + std * draws["obs"] if draws else mean
        norm, mask = self.normalizer, self.obs_masks[env]
        next_obs = (next_n * norm.obs_std[env] + norm.obs_mean[env]) * mask
        reward = rew_mean * norm.reward_std[env] + norm.reward_mean[env]
        uncertainty = (std * mask).sum(-1) / mask.sum(-1)
        return next_obs, reward, uncertainty


def _noise(like: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.randn(like.shape, generator=generator, device=like.device)


__all__ = [
    "MrCoMConfig",
    "MrCoMWorldModel",
    "Normal",
    "bellman_loss",
    "body_groups",
    "kl_loss",
    "kl_nats",
    "meta_prior_loss",
    "meta_state_loss",
    "meta_value_loss",
    "observation_nll",
    "spread_nll",
]
