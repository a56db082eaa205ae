"""WPT's fine-tuning (seed 004, §3.3–3.4, Alg. 1): DreamerV3-style online RL on a target task,
started from the reward-free pre-trained RSSM, with retrieval-based experience rehearsal and
execution guidance.

Paper: "Generalist World Model Pre-Training for Efficient Reinforcement Learning" (WPT); its
code is zhaoyi11/ncrl (``src/finetune.py``, ``src/dreamer/actor_critic.py``,
``config/finetune.yaml``), built on DreamerV3 (Hafner et al. 2023). The run around this agent
(loading the pre-trained model, retrieval, the loop, evaluation) is
:mod:`genworld.train.finetune`; ``genworld finetune`` calls it.

One training iteration is one episode (Alg. 1, ncrl's "epoch"):

1. **Collect** an episode in the real env. The agent tracks its latent state ``s_t = [h_t, z_t]``
   with the posterior (:meth:`~genworld.world_models.rssm.RSSMWorldModel.posterior_step`) and
   samples ``a_t ~ π(a | s_t)``; before ``warmup_steps`` the BC prior acts where the variant
   has one (ncrl), else actions are uniformly random (DreamerV3's prefill). **Execution
   guidance** (§3.4, ``g``): at the episode's start, with probability
   :func:`guidance_probability` (linear from 1 to 0 over ``guidance_steps``), a random window
   (:func:`guidance_window`) is handed to the BC prior ``π_BC(a | o)``, trained before fine-tuning
   on the retrieved trajectories (:func:`bc_loss`).
2. **Update**, ``ceil(episode steps × train_ratio / (batch × seq_len))`` times:
   - the **world model** on a batch of sequences whose ``rehearsal_ratio`` share comes from the
     trajectories retrieved from the pre-training data (**experience rehearsal**, eq. 5, ``er``;
     reward-free rows never reach the reward term) and the rest from the online episodes: eq. 1
     (reconstruction + balanced KL) plus the reward head's error on online rows (Alg. 1);
   - the **actor-critic in imagination** from every posterior state of that batch, or
     ``imagination_starts`` of them drawn at random (so rehearsed rows widen the start
     distribution ``p_0(s)``, Fig. 3): ``horizon`` steps of the prior under
     the actor, rewards from the reward head, λ-returns (eq. 2, :func:`lambda_returns`) bootstrapped
     from a slow critic; the critic learns their distribution by maximum likelihood (eq. 3,
     :func:`critic_loss`), the actor maximises them plus entropy (eq. 4, :func:`actor_loss`),
     with gradients through the frozen world model's dynamics (ncrl's ``actor_grad: dynamics``).

**Critic**: DreamerV3's symlog two-hot categorical (``bins`` bins evenly spaced in symlog space
on [−20, 20], ncrl's ``SymTwoHot(255, -20, 20)``): eq. 3's ``−ln v(V^λ | s)`` is the cross-entropy
to the two-hot encoding of ``symlog(V^λ)``, and ``v^λ`` the symexp of the expected bin. Chosen
over a Gaussian because returns of the two suites differ by orders of magnitude (DMC ≤ 1 a step,
Meta-World ≤ 10) and rewards stay in raw units. Its last layer starts at zero (v = 0).

Variants (:data:`VARIANTS`): ``p`` (pre-trained model only), ``p+er`` (plus rehearsal),
``p+er+g`` (plus guidance: WPT), ``scratch`` (the same RSSM untrained: DreamerV3).

Deviations:
- state observations, not pixels; the BC prior is ncrl's MLP head on normalised states (no CNN,
  no frame stack) and trains on every retrieved trajectory with the target's action size;
- sums over all ``H`` imagined states ``t = 0 … H−1`` (eq. 3–4 write ``1 … H−1``: ncrl drops the
  start state's target from the actor objective; with gradients through the dynamics it carries
  ``a_0``'s gradient, so we keep it); state ``t`` weighted by ``γ^t`` times the probability that
  the rollout is still alive (ncrl's ``cumprod([1, γ·cont_0, …])``; DMC and Meta-World never
  terminate: ``γ^t``);
- the actor is a tanh-Gaussian with DreamerV3's std (0.9·sigmoid(x + 2) + 0.1; ncrl: a truncated
  normal, also floored at 0.1), and its entropy the one-sample estimate ``−log π(a | s)`` (ncrl:
  the truncated normal's);
- the reward head of a pre-trained model learns on detached latents (ncrl's ``update_reward``;
  the run sets ``RSSMConfig.reward_gradient`` off), so rewards never reshape the pre-trained
  representation; ``scratch`` keeps DreamerV3's reward gradient into the latents, as the
  from-scratch baseline the paper compares with; both predict raw rewards with a squared error
  (DreamerV3: symlog two-hot);
- the guidance window's length is a uniform tenth of the episode, 1/10 … 10/10, and its start
  uniform where it fits (ncrl; the paper: "randomly select the starting time step and the
  horizon"); during warm-up the BC prior acts every step (ncrl), so only variants without one
  (scratch, p, p+er) start from random actions;
- everything runs at action repeat 1 (WPT App. E: 2), the repeat the pre-training datasets were
  recorded at, so fine-tuning, rehearsal and pre-training see the same dynamics;
- no return normalisation (DreamerV3 divides by a percentile range; ncrl with dynamics gradients
  does not).
"""

from __future__ import annotations

import contextlib
import copy
import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from genworld.data.episodes import Episode
from genworld.data.multi_env import MultiEnvDataset
from genworld.data.retrieval import RetrievalConfig
from genworld.envs.registry import make_env
from genworld.envs.termination import never_terminates
from genworld.errors import GenworldError
from genworld.policies import tanh_gaussian_sample
from genworld.types import SeqBatch
from genworld.world_models.base import registry_terminations
from genworld.world_models.rssm import RSSMState, RSSMWorldModel, ln_mlp

SYMLOG_RANGE = 20.0
"""The critic's bins span [−20, 20] in symlog space (DreamerV3, ncrl)."""
EPISODE_SEED = 10_000_019
"""Training episode ``i`` of seed ``s`` resets with ``EPISODE_SEED + s · 100_003 + i`` (apart
from the evaluation seeds and the retrieval queries)."""


@dataclass(frozen=True)
class WPTConfig:
    """Fine-tuning's budget and hyper-parameters; defaults: WPT App. E and ncrl's
    ``config/finetune.yaml`` (the ``full`` scale)."""

    env_steps: int = 250_000
    """Environment steps of fine-tuning (ncrl: 500k frames at action repeat 2); rounded up to
    whole episodes."""
    warmup_steps: int = 15_000
    """Environment steps collected before the first update (WPT App. E: warm-up 15,000), acted
    by the BC prior where the variant has one (ncrl), else by uniform random actions."""
    guidance_steps: int = 50_000
    """Execution guidance: the probability that the BC prior acts in an episode falls linearly
    from 1 to 0 over these environment steps (WPT App. E: linear(1, 0, 50000) on DMC)."""
    rehearsal_ratio: float = 0.25
    """Experience rehearsal: share of each world-model batch's sequences drawn from the retrieved
    offline trajectories (WPT App. E: offline data mix ratio 0.25)."""
    batch_size: int = 16
    """Sequences per world-model batch (WPT App. E: 16), each the pre-trained model's seq_len."""
    train_ratio: float = 256.0
    """Replayed steps per environment step (ncrl: 256): each episode is followed by
    ceil(steps × train_ratio / (batch_size × seq_len)) updates."""
    horizon: int = 16
    """Imagination horizon H (WPT App. E: 16)."""
    imagination_starts: int = 0
    """Posterior states of each world-model batch the actor-critic imagines from, drawn at
    random; 0 = every one (DreamerV3, ncrl). The actor-critic's backward through H imagined
    steps is most of an update's cost: fewer starts make it proportionally cheaper, with a
    noisier gradient per update."""
    gamma: float = 0.99
    """Discount γ of the λ-returns (eq. 2; WPT App. E)."""
    lam: float = 0.95
    """λ of the λ-returns (eq. 2; WPT App. E: discount lambda 0.95)."""
    actor_entropy: float = 1e-4
    """η, the entropy weight of the actor loss (eq. 4; WPT App. E: 1e-4)."""
    actor_min_std: float = 0.1
    """Smallest std of the actor's Gaussian before the tanh (DreamerV3: 0.1; ncrl's truncated
    normal is floored at 0.1 too): with η this small, the floor is what keeps it exploring."""
    actor_max_std: float = 1.0
    """Largest std of the actor's Gaussian before the tanh (DreamerV3: 1)."""
    model_lr: float = 1e-4
    """Adam learning rate of the world model while fine-tuning (WPT App. E: 1e-4, eps 1e-5,
    weight decay 1e-6)."""
    actor_lr: float = 8e-5
    """Adam learning rate of the actor (WPT App. E: 8e-5)."""
    critic_lr: float = 8e-5
    """Adam learning rate of the critic (WPT App. E: 8e-5)."""
    grad_clip: float = 100.0
    """Gradient-norm clip of every optimiser (WPT App. E: 100)."""
    slow_critic_fraction: float = 0.02
    """Polyak fraction of the slow critic that bootstraps the λ-returns, per update (WPT App. E:
    target critic update fraction 0.02)."""
    hidden: int = 512
    """Width of the actor's and the critic's LayerNorm-SiLU MLPs (WPT App. E: 512)."""
    layers: int = 3
    """Hidden layers of the actor and the critic (WPT App. E: [512, 512, 512])."""
    bins: int = 255
    """Bins of the symlog two-hot critic (DreamerV3, ncrl: 255)."""
    bc_steps: int = 150_000
    """Updates of the BC prior on the retrieved trajectories before fine-tuning (ncrl:
    bc_train_steps 150,000); only with guidance."""
    bc_batch_size: int = 256
    """Transitions per BC update (ncrl: 256)."""
    bc_lr: float = 1e-4
    """Adam learning rate of the BC prior (ncrl: 1e-4)."""
    bc_hidden: int = 512
    """Width of the BC prior's two LayerNorm MLP layers (ncrl: 512)."""
    retrieval: RetrievalConfig = field(default_factory=RetrievalConfig)
    """Eq. 5's retrieval of the pre-training trajectories nearest the target (WPT: the top 500)."""
    query_observations: int = 1
    """First observations of the target (reset seeds 0, 1, …) the retrieval queries with (Alg.
    1: one)."""
    eval_every: int = 10_000
    """Environment steps between evaluations (ncrl: 10,000 frames); rounded to whole episodes."""
    eval_episodes: int = 5
    """Evaluation episodes of the deterministic policy (ncrl: 5)."""

    def validate(self) -> None:
        positive = ("env_steps", "batch_size", "horizon", "bins", "eval_every", "eval_episodes")
        positive += ("query_observations", "bc_batch_size", "hidden", "layers", "bc_hidden")
        checks = {name: getattr(self, name) >= 1 for name in positive}
        checks |= {
            "warmup_steps": self.warmup_steps >= 0,
            "imagination_starts": self.imagination_starts >= 0,
            "guidance_steps": self.guidance_steps >= 0,
            "bc_steps": self.bc_steps >= 0,
            "rehearsal_ratio": 0.0 <= self.rehearsal_ratio < 1.0,
            "train_ratio": 0.0 < self.train_ratio < float("inf"),
            "gamma": 0.0 <= self.gamma <= 1.0,
            "lam": 0.0 <= self.lam <= 1.0,
            "slow_critic_fraction": 0.0 < self.slow_critic_fraction <= 1.0,
            "bins": self.bins >= 2,
        }
        for name in ("actor_entropy", "model_lr", "actor_lr", "critic_lr", "bc_lr", "grad_clip"):
            checks[name] = 0.0 <= getattr(self, name) < float("inf")
        for name, ok in checks.items():
            if not ok:
                raise GenworldError(
                    f"wpt.{name}={getattr(self, name)!r} is invalid (counts ≥ 1, steps ≥ 0, "
                    "0 ≤ rehearsal_ratio < 1, 0 ≤ gamma, lam ≤ 1, 0 < slow_critic_fraction ≤ 1, "
                    "bins ≥ 2, rates finite and ≥ 0)"
                )
        self.retrieval.validate()


PRESETS: dict[str, dict] = {
    # seconds on a CPU: three episodes, one of warm-up
    "tiny": {
        "env_steps": 3_000,
        "warmup_steps": 1_000,
        "guidance_steps": 2_000,
        "batch_size": 8,
        "train_ratio": 4.0,
        "model_lr": 1e-3,
        "actor_lr": 3e-4,
        "critic_lr": 3e-4,
        "hidden": 32,
        "layers": 2,
        "bc_steps": 100,
        "bc_batch_size": 64,
        "bc_lr": 1e-3,
        "bc_hidden": 32,
        "eval_every": 1_000,
        "eval_episodes": 1,
    },
    # a 2-core CPU: 50 episodes, guidance over the first 15 (50k scaled by 0.3)
    "mini": {
        "env_steps": 50_000,
        "warmup_steps": 5_000,
        "guidance_steps": 15_000,
        "train_ratio": 64.0,
        # 128 of a batch's 528 posterior states: a quarter of the actor-critic's cost, which
        # is most of an update's (docs/algorithms/wpt.md)
        "imagination_starts": 128,
        "model_lr": 3e-4,
        "hidden": 256,
        "layers": 2,
        "bc_steps": 5_000,
        "bc_hidden": 256,
        "eval_every": 5_000,
        "eval_episodes": 3,
        # mini pre-training holds about 100 episodes per DMC body: the top 20 of a target's
        # action size, so the ranking, not the action-size filter, picks them
        "retrieval": {"k": 20},
    },
    "full": {},
}
"""``WPTConfig`` fields per scale (full = the defaults: WPT App. E, ncrl)."""


@dataclass(frozen=True)
class Variant:
    """Which of WPT's parts a variant uses (the ablations of Fig. 6 and the baseline)."""

    pretrained: bool
    """Start from the pre-trained world model (else the same RSSM freshly initialised)."""
    rehearsal: bool
    """Mix retrieved offline trajectories into world-model batches (eq. 5)."""
    guidance: bool
    """Let the BC prior act in a random window of early episodes (§3.4)."""


VARIANTS: dict[str, Variant] = {
    "p": Variant(pretrained=True, rehearsal=False, guidance=False),
    "p+er": Variant(pretrained=True, rehearsal=True, guidance=False),
    "p+er+g": Variant(pretrained=True, rehearsal=True, guidance=True),
    "scratch": Variant(pretrained=False, rehearsal=False, guidance=False),
}
"""WPT (p+er+g), its ablations (p, p+er; Fig. 6) and DreamerV3 from scratch."""


def variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise GenworldError(f"--variant {name!r} is unknown: choose one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


# ------------------------------------------------------------------ the losses and schedules
def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """``values (...)`` (clipped to the bins' range) as weights ``(..., n)`` on their two
    neighbouring ``bins (n,)`` (ascending), linear in the distance: the weighted mean of the
    bins is the value."""
    x = values.clamp(float(bins[0]), float(bins[-1]))
    above = torch.searchsorted(bins, x.contiguous()).clamp(1, len(bins) - 1)  # first bin ≥ x
    below = above - 1
    w_above = (x - bins[below]) / (bins[above] - bins[below])
    out = torch.zeros(*x.shape, len(bins), dtype=x.dtype, device=x.device)
    out.scatter_(-1, below[..., None], (1.0 - w_above)[..., None])
    return out.scatter_add(-1, above[..., None], w_above[..., None])


def lambda_returns(
    rewards: torch.Tensor,
    values: torch.Tensor,
    continues: torch.Tensor,
    gamma: float,
    lam: float,
) -> torch.Tensor:
    """Eq. 2: ``V^λ_t = r_t + γ c_t ((1 − λ) v_{t+1} + λ V^λ_{t+1})``, ``V^λ_H = v_H``.
    ``rewards``, ``continues`` ``(H, N)``: the reward of the step from ``s_t`` to ``s_{t+1}`` and
    whether ``s_{t+1}`` is not terminal; ``values (H+1, N)``: ``v(s_0) … v(s_H)``. Returns
    ``(H, N)``: ``V^λ_0 … V^λ_{H−1}``."""
    returns, last = [], values[-1]
    for t in reversed(range(len(rewards))):
        last = rewards[t] + gamma * continues[t] * ((1.0 - lam) * values[t + 1] + lam * last)
        returns.append(last)
    return torch.stack(returns[::-1])


def critic_loss(
    logits: torch.Tensor, returns: torch.Tensor, weights: torch.Tensor, bins: torch.Tensor
) -> torch.Tensor:
    """Eq. 3: ``−ln v(V^λ_t | s_t)`` of the symlog two-hot critic, the cross-entropy of its
    ``logits (H, N, n)`` to ``two_hot(symlog(V^λ))`` (returns ``(H, N)``, no gradient), weighted
    by ``weights (H, N)`` and averaged."""
    target = two_hot(symlog(returns.detach()), bins)  # (H, N, n)
    nll = -(target * F.log_softmax(logits, -1)).sum(-1)  # (H, N)
    return (weights * nll).mean()


def actor_loss(
    returns: torch.Tensor, entropy: torch.Tensor, weights: torch.Tensor, eta: float
) -> torch.Tensor:
    """Eq. 4: ``−V^λ_t − η H[a_t | s_t]`` averaged over the imagined states, weighted by
    ``weights (H, N)``; ``returns`` carry the gradient through the dynamics to the actions."""
    return (weights * (-returns - eta * entropy)).mean()


def bc_loss(predicted: torch.Tensor, actions: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Alg. 1's BC objective ``−log π_BC(a | o)`` for a unit-variance Gaussian around the
    prediction, up to constants: the squared error over the real action dims (ncrl's MSE)."""
    squared = (predicted - actions).pow(2) * mask
    return squared.sum() / mask.sum().clamp_min(1)


def guidance_probability(env_steps: int, guidance_steps: int) -> float:
    """§3.4's schedule, linear(1, 0, ``guidance_steps``): the probability that the BC prior acts
    in an episode starting after ``env_steps`` environment steps."""
    if guidance_steps <= 0:
        return 0.0
    return max(0.0, 1.0 - env_steps / guidance_steps)


def guidance_window(episode_steps: int, u_length: float, u_start: float) -> tuple[int, int]:
    """The BC prior's ``(start, length)`` in an episode of ``episode_steps`` from two uniform
    draws in [0, 1): a length of 1/10 … 10/10 of the episode (equally likely) and a start where
    it fits (ncrl's ``finetune.py``); the prior acts at steps ``start ≤ t < start + length``."""
    tenths = min(int(u_length * 10), 9) + 1
    length = max(1, math.ceil(episode_steps * tenths / 10))
    start = min(int(u_start * (episode_steps - length + 1)), episode_steps - length)
    return start, length


def rehearsal_rows(batch_size: int, ratio: float) -> int:
    """Retrieved sequences in a world-model batch: ``round(ratio · batch)``, at least one row of
    online data left."""
    return min(int(round(ratio * batch_size)), batch_size - 1)


def updates_per_episode(steps: int, train_ratio: float, batch_size: int, seq_len: int) -> int:
    """ncrl's ``GRAD_PER_EPOCH``: ``ceil(steps · train_ratio / (batch · seq_len))``."""
    return math.ceil(steps * train_ratio / (batch_size * seq_len))


# ------------------------------------------------------------------ networks
class LatentActor(nn.Module):
    """``π(a | s)`` on the latent state: a LayerNorm-SiLU MLP to a tanh-Gaussian whose std is
    DreamerV3's ``(max − min)·sigmoid(x + 2) + min``, so it stays in [min_std, max_std] and the
    policy keeps exploring."""

    def __init__(
        self,
        in_dim: int,
        act_dim: int,
        hidden: int,
        layers: int,
        min_std: float = 0.1,
        max_std: float = 1.0,
    ):
        super().__init__()
        self.net = nn.Sequential(ln_mlp(in_dim, hidden, layers), nn.Linear(hidden, 2 * act_dim))
        self.min_std, self.max_std = min_std, max_std

    def mean_and_log_std(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mean, raw = self.net(latent).chunk(2, dim=-1)
        std = (self.max_std - self.min_std) * torch.sigmoid(raw + 2.0) + self.min_std
        return mean, std.log()

    def sample(self, latent: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Reparameterised action ``(N, A)`` and its log-probability ``(N,)``."""
        return tanh_gaussian_sample(*self.mean_and_log_std(latent))

    def mode(self, latent: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.mean_and_log_std(latent)[0])


class Critic(nn.Module):
    """``v(V^λ | s)``: logits over symlog bins; the output layer starts at zero (DreamerV3)."""

    def __init__(self, in_dim: int, hidden: int, layers: int, bins: int):
        super().__init__()
        self.net = nn.Sequential(ln_mlp(in_dim, hidden, layers), nn.Linear(hidden, bins))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("bins", torch.linspace(-SYMLOG_RANGE, SYMLOG_RANGE, bins))

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        return self.net(latent)

    def value(self, latent: torch.Tensor) -> torch.Tensor:
        """``v^λ = E[v(V^λ | s)]``: the symexp of the expected symlog bin ``(...)``."""
        return symexp((self.net(latent).softmax(-1) * self.bins).sum(-1))


class BCPrior(nn.Module):
    """``π_BC(a | o)`` on normalised observations: ncrl's two LayerNorm layers, tanh-bounded."""

    def __init__(self, obs_dim: int, act_dim: int, hidden: int):
        super().__init__()
        self.net = nn.Sequential(ln_mlp(obs_dim, hidden, 2), nn.Linear(hidden, act_dim))

    def forward(self, obs_n: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.net(obs_n))


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """No parameter gradients for ``modules`` inside the block (gradients still flow through
    them to their inputs): the actor learns through a world model it does not train."""
    params = [p for m in modules for p in m.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@dataclass(frozen=True)
class Rehearsal:
    """The retrieved offline trajectories: their own dataset (reward-free) and each of its envs'
    index in the fine-tuned model."""

    dataset: MultiEnvDataset
    env_map: torch.Tensor  # (envs of dataset,) int64 → model env index


def to_model(batch: SeqBatch, env_map: torch.Tensor, obs_max: int, act_max: int) -> SeqBatch:
    """``batch`` (its dataset's env indices and widths) in the model's: envs mapped, observations
    and actions zero-padded to ``obs_max`` / ``act_max``."""
    o, a = obs_max - batch.observations.shape[-1], act_max - batch.actions.shape[-1]
    return SeqBatch(
        observations=F.pad(batch.observations, (0, o)),
        actions=F.pad(batch.actions, (0, a)),
        rewards=batch.rewards,
        next_observations=F.pad(batch.next_observations, (0, o)),
        terminations=batch.terminations,
        timesteps=batch.timesteps,
        step_mask=batch.step_mask,
        env_idx=env_map[batch.env_idx],
        obs_mask=F.pad(batch.obs_mask, (0, o)),
        act_mask=F.pad(batch.act_mask, (0, a)),
    )


def concat(*batches: SeqBatch) -> SeqBatch:
    return SeqBatch(**{k: torch.cat([getattr(b, k) for b in batches]) for k in batches[0].__dict__})


# ------------------------------------------------------------------ the agent
class WPTAgent:
    """The world model, actor, critic (and its slow copy), BC prior, their optimisers and the
    online episodes; env 0 of ``model`` is the target task."""

    def __init__(
        self,
        model: RSSMWorldModel,
        cfg: WPTConfig,
        variant_name: str,
        device: torch.device,
        *,
        rehearsal: Rehearsal | None = None,
        seed: int = 0,
    ):
        cfg.validate()
        self.cfg, self.variant, self.device, self.seed = cfg, variant(variant_name), device, seed
        if model.reward_net is None:
            raise GenworldError("fine-tuning needs the RSSM's reward head (reward_head=True)")
        if (self.variant.rehearsal or self.variant.guidance) and rehearsal is None:
            raise GenworldError(f"variant {variant_name} needs the retrieved trajectories")
        self.model, self.spec = model.to(device), model.specs[0]
        self.rehearsal = rehearsal if self.variant.rehearsal or self.variant.guidance else None
        latent = model.cfg.deter_dim + model.cfg.latent_width
        act_dim = self.spec.act_dim
        self.actor = LatentActor(
            latent, act_dim, cfg.hidden, cfg.layers, cfg.actor_min_std, cfg.actor_max_std
        ).to(device)
        self.critic = Critic(latent, cfg.hidden, cfg.layers, cfg.bins).to(device)
        self.slow_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.model_opt = torch.optim.AdamW(
            model.parameters(), lr=cfg.model_lr, eps=1e-5, weight_decay=1e-6
        )
        self.actor_opt = torch.optim.Adam(self.actor.parameters(), lr=cfg.actor_lr, eps=1e-5)
        self.critic_opt = torch.optim.Adam(self.critic.parameters(), lr=cfg.critic_lr, eps=1e-5)
        self.bc = None
        if self.variant.guidance:
            self.bc = BCPrior(model.obs_max, act_dim, cfg.bc_hidden).to(device)
            self.bc_opt = torch.optim.Adam(self.bc.parameters(), lr=cfg.bc_lr)
        self.terminal = any(s.termination not in (None, never_terminates) for s in model.specs)
        self.episodes: list[Episode] = []
        self.sparse_hits: list[int | None] = []
        """Per online episode, its control steps a hard (sparse) task paid for (None
        elsewhere): whether the sparse reward ever reached the learner."""
        self.online: MultiEnvDataset | None = None
        self.env_steps = self.updates = self.bc_updates = 0
        self._env = None

    # -------------------------------------------------------------- world-model batches
    def world_model_batch(self, generator: torch.Generator) -> tuple[SeqBatch, torch.Tensor]:
        """A batch of ``batch_size`` sequences, ``rehearsal_ratio`` of them retrieved (with
        rehearsal), and ``(B,)`` which rows have labelled rewards (the online ones)."""
        cfg, model = self.cfg, self.model
        if self.online is None:
            raise GenworldError("no online episode yet: collect one before updating")
        n_re = rehearsal_rows(cfg.batch_size, cfg.rehearsal_ratio) if self.variant.rehearsal else 0
        length, zero = model.cfg.seq_len, torch.zeros(1, dtype=torch.int64)
        parts = [self.online.sample_windows(cfg.batch_size - n_re, length, generator)]
        parts[0] = to_model(parts[0], zero, model.obs_max, model.act_max)
        if n_re:
            retrieved = self.rehearsal.dataset.sample_windows(
                n_re, length, generator, mode="proportional"
            )
            parts.append(to_model(retrieved, self.rehearsal.env_map, model.obs_max, model.act_max))
        labelled = torch.arange(cfg.batch_size) < cfg.batch_size - n_re  # (B,)
        return concat(*parts).to(self.device), labelled.to(self.device)

    # -------------------------------------------------------------- one update (Alg. 1)
    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        """Eq. 1 (+ reward) on a mixed batch, then the actor and critic in imagination from
        the posterior states of that batch (every one, or ``imagination_starts`` of them)."""
        cfg = self.cfg
        batch, labelled = self.world_model_batch(generator)
        window = self.model.observe_batch(batch)
        loss, metrics = self.model.weighted(*self.model.window_terms(batch, window, labelled))
        self._step(self.model_opt, self.model, loss)
        valid = F.pad(batch.step_mask, (1, 0), value=True)  # (B, L+1): o_0 always exists
        env = batch.env_idx[:, None].expand_as(valid)[valid]  # (N,)
        deter, stoch = window.deter[valid].detach(), window.stoch[valid].detach()
        if 0 < cfg.imagination_starts < len(env):
            rows = torch.randperm(len(env), generator=generator)[: cfg.imagination_starts]
            rows = rows.to(self.device)
            deter, stoch, env = deter[rows], stoch[rows], env[rows]
        metrics |= self.actor_critic(RSSMState(deter, stoch, env))
        self.updates += 1
        return metrics

    def imagine(self, start: RSSMState):
        """``horizon`` steps of the prior under the actor, the world model and slow critic
        frozen: latents ``(H+1, N, F)``, rewards ``(H, N)``, slow values ``(H+1, N)``,
        continuation ``(H, N)`` and the actor's entropy estimates ``(H, N)``."""
        model, horizon = self.model, self.cfg.horizon
        states, entropies = [start], []
        with frozen(model, self.slow_critic):
            for _ in range(horizon):
                # the actor reads a detached state (ncrl's imagine; DreamerV1-3): its gradient
                # reaches earlier steps only through the dynamics, by the actions
                action, log_prob = self.actor.sample(model.latent(states[-1]).detach())
                states.append(model.imagine_step(states[-1], action))
                entropies.append(-log_prob)
            deter = torch.stack([s.deter for s in states])  # (H+1, N, D)
            stoch = torch.stack([s.stoch for s in states])  # (H+1, N, Z)
            latents = torch.cat([deter, stoch], -1)  # (H+1, N, F)
            env = start.env_idx.repeat(horizon)  # (H·N,)
            after = RSSMState(deter[1:].flatten(0, 1), stoch[1:].flatten(0, 1), env)
            rewards = model.predicted_reward(after).view(horizon, -1)  # (H, N)
            values = self.slow_critic.value(latents)  # (H+1, N)
            continues = self.continues(after).view(horizon, -1)  # (H, N)
        return latents, rewards, values, continues, torch.stack(entropies)

    @torch.no_grad()
    def continues(self, state: RSSMState) -> torch.Tensor:
        """1 where the imagined state is not terminal (the registry's functions on the decoded
        observation; all ones for envs that never terminate)."""
        if not self.terminal:
            return torch.ones(len(state.env_idx), device=state.deter.device)
        done = registry_terminations(self.model.specs, self.model.decoded(state), state.env_idx)
        return 1.0 - done.float()

    def actor_critic(self, start: RSSMState) -> dict[str, torch.Tensor]:
        """Eq. 2–4 on one imagination from ``start``; the slow critic follows the critic."""
        cfg = self.cfg
        latents, rewards, values, continues, entropy = self.imagine(start)
        returns = lambda_returns(rewards, values, continues, cfg.gamma, cfg.lam)  # (H, N)
        discounts = F.pad(cfg.gamma * continues[:-1], (0, 0, 1, 0), value=1.0)  # (H, N)
        weights = torch.cumprod(discounts, 0)  # γ^t × alive, ncrl's imagination weights
        a_loss = actor_loss(returns, entropy, weights, cfg.actor_entropy)
        self._step(self.actor_opt, self.actor, a_loss)
        logits = self.critic(latents[:-1].detach())  # (H, N, bins)
        c_loss = critic_loss(logits, returns, weights, self.critic.bins)
        self._step(self.critic_opt, self.critic, c_loss)
        with torch.no_grad():
            for slow, fast in zip(
                self.slow_critic.parameters(), self.critic.parameters(), strict=True
            ):
                slow.lerp_(fast, cfg.slow_critic_fraction)
        return {
            "losses/actor": a_loss.detach(),
            "losses/critic": c_loss.detach(),
            "imagine/return": returns.detach().mean(),
            "imagine/reward": rewards.detach().mean(),
            "imagine/entropy": entropy.detach().mean(),
        }

    def _step(self, opt: torch.optim.Optimizer, module: nn.Module, loss: torch.Tensor) -> None:
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(module.parameters(), self.cfg.grad_clip)
        opt.step()

    # -------------------------------------------------------------- the BC prior
    def train_bc(self, generator: torch.Generator) -> dict[str, float]:
        """``bc_steps`` updates of the BC prior on the retrieved transitions (Alg. 1)."""
        if self.bc is None:
            return {}
        data, norm, model = self.rehearsal.dataset, self.model.normalizer, self.model
        act_dim, loss = self.spec.act_dim, torch.zeros(())
        for _ in range(self.cfg.bc_steps):
            batch = data.sample_transitions(self.cfg.bc_batch_size, generator, "proportional")
            env = self.rehearsal.env_map[batch.env_idx].to(self.device)
            obs = F.pad(batch.observations, (0, model.obs_max - data.obs_max)).to(self.device)
            actions = batch.actions[:, :act_dim].to(self.device)
            mask = batch.act_mask[:, :act_dim].float().to(self.device)
            loss = bc_loss(self.bc(norm.normalize_obs(obs, env)), actions, mask)
            self.bc_opt.zero_grad(set_to_none=True)
            loss.backward()
            self.bc_opt.step()
            self.bc_updates += 1
        return {"bc/loss": float(loss.detach()), "bc/updates": float(self.bc_updates)}

    # -------------------------------------------------------------- acting
    def _padded(self, obs: np.ndarray | torch.Tensor) -> torch.Tensor:
        """Raw observations ``(n, ≤ obs_max)`` → ``(n, obs_max)`` on the device."""
        obs = torch.as_tensor(obs, dtype=torch.float32, device=self.device).reshape(
            -1, obs.shape[-1]
        )
        return F.pad(obs, (0, self.model.obs_max - obs.shape[-1]))

    @torch.no_grad()
    def bc_action(self, obs: torch.Tensor) -> torch.Tensor:
        """The BC prior's action ``(n, act_dim)`` for padded raw observations of the target."""
        env = torch.zeros(len(obs), dtype=torch.int64, device=self.device)
        return self.bc(self.model.normalizer.normalize_obs(obs, env))

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        """Actions of the target from observations alone (the state filtered from ``h_0``;
        evaluation uses :meth:`episode_policy`, which tracks the state through the episode)."""
        state = self.model.initial_state(self._padded(obs), torch.zeros_like(env_idx))
        latent = self.model.latent(state)
        return self.actor.mode(latent) if deterministic else self.actor.sample(latent)[0]

    def episode_policy(self, env_k: int, episodes: int) -> EpisodePolicy:
        """The deterministic policy over ``episodes`` evaluation episodes of the target, each
        tracking its latent state (:func:`genworld.eval.rollout.evaluate_agent_outcomes`)."""
        return EpisodePolicy(self, episodes)

    def env(self):
        if self._env is None:
            self._env = make_env(self.spec.name)
        return self._env

    @torch.no_grad()
    def collect_episode(self, generator: torch.Generator) -> dict[str, float]:
        """One training episode (Alg. 1's collection), added to the online data; with
        guidance, the BC prior acts in a window drawn at the start (with the schedule's
        probability). Returns the episode's return, steps and guided steps."""
        cfg, spec, model = self.cfg, self.spec, self.model
        probability = guidance_probability(self.env_steps, cfg.guidance_steps) if self.bc else 0.0
        u_use, u_length, u_start = torch.rand(3, generator=generator).tolist()
        start, length = guidance_window(spec.max_episode_steps, u_length, u_start)
        if u_use >= probability:
            start, length = 0, 0
        warm = self.env_steps < cfg.warmup_steps
        env = self.env()
        obs, _ = env.reset(seed=EPISODE_SEED + self.seed * 100_003 + len(self.episodes))
        observations, actions, rewards, terms, truncs = [obs], [], [], [], []
        success, guided, state, previous, hits = False, 0, None, None, None
        zero = torch.zeros(1, dtype=torch.int64, device=self.device)
        for t in range(spec.max_episode_steps):
            padded = self._padded(obs)
            if state is None:
                state = model.initial_state(padded, zero)
            else:
                state = model.posterior_step(state, previous, padded)
            # ncrl's finetune.py: during warm-up the BC prior, where there is one, acts the
            # whole episode, random actions only without one
            if start <= t < start + length or (warm and self.bc is not None):
                action, guided = self.bc_action(padded), guided + 1
            elif warm:
                action = torch.rand(1, spec.act_dim, generator=generator).to(self.device) * 2 - 1
            else:
                action = self.actor.sample(model.latent(state))[0]
            previous = action
            obs, reward, terminated, truncated, info = env.step(action[0].cpu().numpy())
            if "sparse_hits" in info:
                hits = (hits or 0) + int(info["sparse_hits"])
            success |= bool(info.get("success", False))
            last = t == spec.max_episode_steps - 1
            observations.append(obs)
            actions.append(action[0].cpu().numpy())
            rewards.append(reward)
            terms.append(terminated)
            truncs.append((truncated or last) and not terminated)
            if terminated or truncs[-1]:
                break
        episode = Episode.from_arrays(
            np.array(observations),
            np.array(actions),
            np.array(rewards),
            np.array(terms),
            np.array(truncs),
            obs_dim=spec.obs_dim,
            act_dim=spec.act_dim,
            where=f"online {spec.name}",
        )
        self.add_episode(episode, hits)
        out = {
            "train/episode_return": float(episode.rewards.sum()),
            "train/episode_steps": float(len(episode)),
            "train/guided_steps": float(guided),
            "train/guidance_probability": float(probability),
            "train/env_steps": float(self.env_steps),
        }
        if "success" in info:
            out["train/success"] = float(success)
        if hits is not None:
            out["train/sparse_hits"] = float(hits)
        return out

    def add_episode(self, episode: Episode, sparse_hits: int | None = None) -> None:
        self.episodes.append(episode)
        self.sparse_hits.append(sparse_hits)
        self.env_steps += len(episode)
        if self.online is None:
            self.online = MultiEnvDataset([(self.spec, [episode])])
        else:
            self.online = self.online.extended([[episode]])

    # -------------------------------------------------------------- checkpoints
    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object (d3rlpy's ``Modules``)."""
        out = {
            "model": self.model,
            "actor": self.actor,
            "critic": self.critic,
            "slow_critic": self.slow_critic,
            "model_opt": self.model_opt,
            "actor_opt": self.actor_opt,
            "critic_opt": self.critic_opt,
        }
        if self.bc is not None:
            out |= {"bc": self.bc, "bc_opt": self.bc_opt}
        return out

    def state_dict(self) -> dict:
        """Every module and optimiser, the online episodes (arrays) and the counters."""
        fields = ("observations", "actions", "rewards", "terminations", "truncations")
        episodes = [{k: torch.from_numpy(getattr(ep, k)) for k in fields} for ep in self.episodes]
        counters = {"updates": self.updates, "bc_updates": self.bc_updates}
        hits = [-1 if h is None else h for h in self.sparse_hits]  # -1: not a sparse task
        return {
            **{name: m.state_dict() for name, m in self.modules().items()},
            "episodes": episodes,
            "sparse_hits": torch.tensor(hits, dtype=torch.int64),
            **counters,
        }

    def load_state_dict(self, state: dict) -> None:
        for name, m in self.modules().items():
            m.load_state_dict(state[name])
        self.updates, self.bc_updates = int(state["updates"]), int(state["bc_updates"])
        self.episodes, self.sparse_hits, self.online, self.env_steps = [], [], None, 0
        hits = state["sparse_hits"].tolist()
        for ep, hit in zip(state["episodes"], hits, strict=True):
            episode = Episode.from_arrays(**{k: v.numpy() for k, v in ep.items()})
            self.add_episode(episode, None if hit < 0 else hit)


class EpisodePolicy:
    """Evaluation episodes run side by side: each tracks its own latent state with the
    posterior and acts with the actor's mode (the deterministic policy)."""

    def __init__(self, agent: WPTAgent, episodes: int):
        model, device = agent.model, agent.device
        self.agent, self.model = agent, model
        self.deter = torch.zeros(episodes, model.cfg.deter_dim, device=device)
        self.stoch = torch.zeros(episodes, model.cfg.latent_width, device=device)
        self.previous = torch.zeros(episodes, agent.spec.act_dim, device=device)
        self.started = torch.zeros(episodes, dtype=torch.bool, device=device)

    @torch.no_grad()
    def act(self, obs: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """Padded raw observations ``(n, ·)`` of the episodes ``idx (n,)`` → actions ``(n, A)``."""
        obs, idx = self.agent._padded(obs), idx.to(self.agent.device)
        env = torch.zeros(len(idx), dtype=torch.int64, device=obs.device)
        fresh = self.model.initial_state(obs, env)
        going = self.model.posterior_step(
            RSSMState(self.deter[idx], self.stoch[idx], env), self.previous[idx], obs
        )
        old = self.started[idx][:, None]
        self.deter[idx] = torch.where(old, going.deter, fresh.deter)
        self.stoch[idx] = torch.where(old, going.stoch, fresh.stoch)
        self.started[idx] = True
        action = self.agent.actor.mode(torch.cat([self.deter[idx], self.stoch[idx]], -1))
        self.previous[idx] = action
        return action

    def observe(self, idx, rewards) -> None:
        """Rewards are not part of the state."""


__all__ = [
    "PRESETS",
    "VARIANTS",
    "BCPrior",
    "Critic",
    "EpisodePolicy",
    "LatentActor",
    "Rehearsal",
    "Variant",
    "WPTAgent",
    "WPTConfig",
    "actor_loss",
    "bc_loss",
    "concat",
    "critic_loss",
    "guidance_probability",
    "guidance_window",
    "lambda_returns",
    "rehearsal_rows",
    "symexp",
    "symlog",
    "to_model",
    "two_hot",
    "updates_per_episode",
    "variant",
]
