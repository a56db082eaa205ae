"""RSSM world model, the DreamerV3 kind: WPT's generalist world model, pre-trained reward-free.

Paper: "Generalist World Model Pre-Training for Efficient Reinforcement Learning" (WPT, seed 004),
§3.2 (eq. 1) and App. E (hyper-parameters); reference code zhaoyi11/ncrl (the work renamed NCRL:
``src/dreamer/rssm.py``, ``config/pretrain.yaml``), built on DreamerV3 (Hafner et al. 2023,
danijar/dreamerv3). One model serves several embodiments, and the same model with its reward
head on is MrCoM's context-free baseline.

A window of ``L`` steps of one env: observations ``o_0 … o_L``, actions ``a_0 … a_{L-1}``.

- **Encoder** ``e(o)``: the observation in its env's normalised units (padded dims zero), through
  its body's own first layer (:class:`~genworld.nn.tokenizers.PerEnvLinear`; envs of one robot
  share it, :func:`encoder_group`) and a shared LayerNorm-SiLU MLP. ``e(o)`` is also the feature
  space of WPT's retrieval (eq. 5, :meth:`RSSMWorldModel.features`). Pixels would replace
  :meth:`RSSMWorldModel._embed` with a CNN giving the same features; only states exist here.
- **Sequence model**: ``h_{t+1} = GRU(h_t, [z_t, a_t])``, a LayerNorm GRU cell (:class:`NormGRUCell`);
  ``h_0`` is learned. Actions are zero-padded to the widest embodiment (WPT §3.2 (ii)) and masked
  to their env's own dims, so padded columns never reach the model.
- **Posterior** ``q(z_t | h_t, e(o_t))`` and **prior** ``p(z_t | h_t)``: diagonal Gaussians (std =
  softplus + ``min_std``) or ``stoch_dim`` categoricals of ``classes`` classes mixed with
  ``unimix`` uniform (DreamerV3 §"Robust predictors"), sampled with straight-through gradients.
- **Decoder** ``d(o_t | h_t, z_t)``: a shared MLP and the body's own output layer; a unit-variance
  Gaussian over the normalised observation, so ``−ln d`` is the squared error summed over the
  env's real dims (up to constants).
- **Loss** (eq. 1): reconstruction + KL with DreamerV3's balancing and free nats,
  ``dyn·max(free, KL(sg q ‖ p)) + rep·max(free, KL(q ‖ sg p))`` (``terms.balanced_kl``), each a mean
  over the window's valid steps; plus, with ``reward_head``, the squared error of ``r_t`` predicted
  from ``(h_{t+1}, z_{t+1})`` in normalised reward units.
- **Imagination**: ``encode`` filters the up to ``burn_in`` dataset steps before each start state
  with the posterior (means / modes); ``next`` steps the GRU with the action, draws ``z`` from the
  prior and decodes the next observation (the decoder's mean). Terminations come from the
  registry's exact functions.

Deviations:
- state observations, not pixels: per-env normalisation instead of DreamerV3's symlog, and one
  input and one output layer per body (a pixel CNN is shared by every embodiment);
- a plain LayerNorm GRU, not the block-diagonal GRU (8 blocks) of WPT's 280M-parameter pixel
  model; ``full``'s sizes are DreamerV3's small model (deterministic 512, hidden 512);
- Gaussian latents by default; WPT and DreamerV3 use categoricals (32 × 96 and 32 × 32 classes:
  ``latent = categorical``);
- KL scales dynamics 1, representation 0.1 (ncrl's ``config/pretrain.yaml``; DreamerV3 uses 0.5
  for the dynamics term);
- each training window starts from the learned ``h_0`` at a uniform step of an episode
  (DreamerV3 carries the state across consecutive chunks of an episode);
- no continuation head (terminations come from the registry); the reward head is a squared error
  on normalised rewards, not DreamerV3's two-hot symlog head;
- ``uncertainty``: the prior's spread (Gaussian: its mean std; categorical: the mean entropy of a
  variable, nats); WPT's agent does not use one.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, replace

import torch
from torch import nn
from torch.nn import functional as F

from genworld.data.multi_env import MultiEnvDataset
from genworld.data.normalization import Normalizer
from genworld.envs.dmc import DMC_TASKS, HARD
from genworld.envs.metaworld import PREFIX as MW_PREFIX
from genworld.errors import GenworldError
from genworld.nn.tokenizers import PerEnvLinear
from genworld.types import EnvSpec, SeqBatch
from genworld.world_models.base import WMStep, check_compatible, check_finite, registry_terminations
from genworld.world_models.prompt_memory import start_memory
from genworld.world_models.terms import (
    balanced_kl,
    categorical_kl,
    gaussian_kl,
    masked_mean,
    normalised,
)

LATENTS = ("gaussian", "categorical")
SHARING = ("body", "env")


@dataclass(frozen=True)
class RSSMConfig:
    """Defaults: DreamerV3's small model for state observations; the KL terms as ncrl."""

    deter_dim: int = 512
    """Width of the GRU's deterministic state h (DreamerV3 S: 512; WPT's pixel model: 12288)."""
    stoch_dim: int = 32
    """Gaussian latent dims, or the number of categorical variables (DreamerV3 and WPT: 32)."""
    latent: str = "gaussian"
    """gaussian (diagonal) or categorical (``stoch_dim`` variables of ``classes`` classes)."""
    classes: int = 32
    """Classes per categorical variable (DreamerV3: 32; WPT: 96); unused for gaussian."""
    hidden: int = 512
    """Width of every MLP and of the encoder's features e(o) (DreamerV3 S: 512)."""
    mlp_layers: int = 2
    """Layers of the encoder and decoder MLPs (each Linear, LayerNorm, SiLU)."""
    seq_len: int = 64
    """Steps per training window (WPT App. E: sequence length 64)."""
    burn_in: int = 8
    """Dataset steps before a rollout's start state that ``encode`` filters (at most
    ``seq_len`` − 1: training windows are that long)."""
    unimix: float = 0.01
    """Share of the uniform distribution mixed into categorical latents (DreamerV3: 1%)."""
    min_std: float = 0.1
    """Smallest std of the Gaussian latents (Dreamer's ``min_std``)."""
    kl_dyn: float = 1.0
    """KL balancing: scale of KL(sg q ‖ p), which trains the prior (ncrl: 1; DreamerV3: 0.5)."""
    kl_rep: float = 0.1
    """KL balancing: scale of KL(q ‖ sg p), which trains the posterior (DreamerV3, ncrl: 0.1)."""
    free_nats: float = 1.0
    """Each KL side is at least this many nats per step, no gradient below (DreamerV3: 1)."""
    obs_scale: float = 1.0
    """Weight of the reconstruction term (eq. 1; ncrl's ``recon`` scale 1)."""
    reward_head: bool = True
    """Predict rewards (fine-tuning, MrCoM's context-free baseline, MBPO rollouts); off in
    reward-free pre-training (``genworld pretrain world-model``)."""
    reward_scale: float = 1.0
    """Weight of the reward term when ``reward_head`` is on."""
    reward_gradient: bool = True
    """The reward term trains the latents it reads too (DreamerV3); False: the reward head only,
    on detached latents (ncrl's fine-tuning, so rewards never reshape a pre-trained model)."""
    share_encoders: str = "body"
    """body: envs of one robot with the same observation size share the encoder's input and the
    decoder's output layer (scenarios ``<env>@…``, one DMC domain's tasks, all Meta-World tasks);
    env: one per env."""

    def validate(self) -> None:
        checks = {
            "deter_dim": self.deter_dim >= 1,
            "stoch_dim": self.stoch_dim >= 1,
            "latent": self.latent in LATENTS,
            "classes": self.classes >= 2,
            "hidden": self.hidden >= 1,
            "mlp_layers": self.mlp_layers >= 1,
            "seq_len": self.seq_len >= 2,
            "burn_in": 0 <= self.burn_in < self.seq_len,
            "unimix": 0 <= self.unimix < 1,
            "min_std": self.min_std > 0,
            "free_nats": self.free_nats >= 0,
            "share_encoders": self.share_encoders in SHARING,
        }
        for name in ("kl_dyn", "kl_rep", "obs_scale", "reward_scale"):
            checks[name] = 0 <= getattr(self, name) < float("inf")
        for name, ok in checks.items():
            if not ok:
                raise GenworldError(
                    f"RSSMConfig.{name}={getattr(self, name)!r} is invalid (sizes ≥ 1, classes "
                    f"≥ 2, seq_len ≥ 2, 0 ≤ burn_in < seq_len, latent one of {LATENTS}, "
                    f"share_encoders one of {SHARING}, weights finite and ≥ 0)"
                )

    @property
    def latent_width(self) -> int:
        """Width of a flattened latent z."""
        return self.stoch_dim * (self.classes if self.latent == "categorical" else 1)


@dataclass
class RSSMState:
    """The rollout state of each imagined trajectory: ``s_t = [h_t, z_t]`` and its env."""

    deter: torch.Tensor  # (B, deter_dim) h_t
    stoch: torch.Tensor  # (B, latent_width) z_t
    env_idx: torch.Tensor  # (B,) int64


@dataclass(frozen=True)
class Window:
    """Posterior states of a filtered window of ``T`` observations and both distributions."""

    deter: torch.Tensor  # (B, T, deter_dim)
    stoch: torch.Tensor  # (B, T, latent_width) posterior samples
    posterior: tuple[torch.Tensor, ...]  # (mean, log-std) or (log-probs,), each (B, T, ...)
    prior: tuple[torch.Tensor, ...]  # the same, of p(z_t | h_t)


# ------------------------------------------------------------------ building blocks
def encoder_group(spec: EnvSpec, share: str) -> str:
    """Which encoder input / decoder output layer env ``spec`` uses: with ``share`` = body, its
    robot and observation size (``dmc-walker:24`` for every walker task, hard variant and
    scenario of that size, ``mw:39`` for every Meta-World task); with ``share`` = env, its own."""
    if share == "env":
        return spec.name
    base = spec.name.partition("@")[0].removesuffix(HARD)
    if base.startswith(MW_PREFIX):
        robot = "mw"
    elif base in DMC_TASKS:
        robot = f"dmc-{DMC_TASKS[base][0]}"
    else:
        robot = base
    return f"{robot}:{spec.obs_dim}"


def ln_mlp(in_dim: int, hidden: int, layers: int) -> nn.Sequential:
    """``layers`` blocks of Linear → LayerNorm → SiLU (DreamerV3's MLP layers)."""
    blocks: list[nn.Module] = []
    for i in range(layers):
        blocks += [nn.Linear(in_dim if i == 0 else hidden, hidden, bias=False)]
        blocks += [nn.LayerNorm(hidden), nn.SiLU()]
    return nn.Sequential(*blocks)


class NormGRUCell(nn.Module):
    """DreamerV2/V3's GRU cell: one linear map of ``[x, h]`` to the reset, candidate and update
    parts, LayerNorm over them, and the update gate biased towards keeping ``h`` (−1)."""

    def __init__(self, in_dim: int, hidden: int):
        super().__init__()
        self.linear = nn.Linear(in_dim + hidden, 3 * hidden, bias=False)
        self.norm = nn.LayerNorm(3 * hidden)

    def forward(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        parts = self.norm(self.linear(torch.cat([x, h], -1)))
        reset, candidate, update = parts.chunk(3, -1)
        candidate = torch.tanh(torch.sigmoid(reset) * candidate)
        update = torch.sigmoid(update - 1.0)
        return update * candidate + (1.0 - update) * h  # (B, hidden)


# ------------------------------------------------------------------ the model
class RSSMWorldModel(nn.Module):
    """DreamerV3-style RSSM over several envs' padded observations and actions (module
    docstring); meets the :class:`~genworld.world_models.base.WorldModel` contract."""

    def __init__(
        self,
        specs: list[EnvSpec],
        cfg: RSSMConfig,
        normalizer: Normalizer,
        act_width: int | None = None,
    ):
        """``act_width``: the padded action width (default: the widest env's); a model moved to
        other envs keeps its source's (:meth:`transferred`)."""
        super().__init__()
        cfg.validate()
        self.specs, self.cfg, self.normalizer = list(specs), cfg, normalizer
        self.obs_max, widest = max(s.obs_dim for s in specs), max(s.act_dim for s in specs)
        self.act_max = widest if act_width is None else act_width
        if self.act_max < widest:
            raise GenworldError(
                f"act_width={act_width} is narrower than an env's actions ({widest}); give at "
                "least the widest (a target's actions must fit the pre-trained model's)"
            )
        groups = [encoder_group(s, cfg.share_encoders) for s in specs]
        self.groups = list(dict.fromkeys(groups))  # one encoder per group, in first-seen order
        group_dims = [specs[groups.index(g)].obs_dim for g in self.groups]
        n, hid, deter, latent = len(self.groups), cfg.hidden, cfg.deter_dim, cfg.latent_width
        stats = 2 * cfg.stoch_dim if cfg.latent == "gaussian" else latent
        self.obs_in = PerEnvLinear(n, self.obs_max, hid, group_dims)
        self.encoder = nn.Sequential(
            nn.LayerNorm(hid), nn.SiLU(), ln_mlp(hid, hid, cfg.mlp_layers - 1)
        )
        self.img_in = ln_mlp(latent + self.act_max, hid, 1)
        self.gru = NormGRUCell(hid, deter)
        self.initial_deter = nn.Parameter(torch.zeros(deter))
        self.prior_net = nn.Sequential(ln_mlp(deter, hid, 1), nn.Linear(hid, stats))
        self.posterior_net = nn.Sequential(ln_mlp(deter + hid, hid, 1), nn.Linear(hid, stats))
        self.decoder = ln_mlp(deter + latent, hid, cfg.mlp_layers)
        self.obs_out = PerEnvLinear(n, hid, self.obs_max, [hid] * n)
        self.reward_net = (
            nn.Sequential(ln_mlp(deter + latent, hid, cfg.mlp_layers), nn.Linear(hid, 1))
            if cfg.reward_head
            else None
        )
        obs_masks = torch.zeros(len(specs), self.obs_max, dtype=torch.bool)
        act_masks = torch.zeros(len(specs), self.act_max, dtype=torch.bool)
        for k, spec in enumerate(specs):
            obs_masks[k, : spec.obs_dim], act_masks[k, : spec.act_dim] = True, True
        self.register_buffer("obs_masks", obs_masks)
        self.register_buffer("act_masks", act_masks)
        group_of_env = torch.tensor([self.groups.index(g) for g in groups], dtype=torch.int64)
        self.register_buffer("group_of_env", group_of_env)

    # ---------------------------------------------------------------- latents
    def _params(self, raw: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """A head's raw output → the latent distribution's parameters: (mean, log-std) of a
        Gaussian, or (log-probabilities ``(..., stoch_dim, classes)``,) with the uniform mix."""
        cfg = self.cfg
        if cfg.latent == "gaussian":
            mean, std = raw.chunk(2, -1)
            return mean, (F.softplus(std) + cfg.min_std).log()
        logits = raw.unflatten(-1, (cfg.stoch_dim, cfg.classes))
        probs = (1.0 - cfg.unimix) * logits.softmax(-1) + cfg.unimix / cfg.classes
        return (probs.log(),)

    def _noise(self, lead: tuple[int, ...], generator, device) -> torch.Tensor:
        """Random numbers for ``lead`` latent draws: standard normal (Gaussian) or uniform in
        (0, 1) for Gumbel-max sampling (categorical)."""
        cfg = self.cfg
        if cfg.latent == "gaussian":
            return torch.randn(*lead, cfg.stoch_dim, generator=generator, device=device)
        uniform = torch.rand(*lead, cfg.stoch_dim, cfg.classes, generator=generator, device=device)
        return uniform.clamp(1e-6, 1.0 - 1e-6)

    def _sample(self, params: tuple[torch.Tensor, ...], noise: torch.Tensor | None) -> torch.Tensor:
        """A flattened latent ``(..., latent_width)``: reparameterised Gaussian or one-hot with
        straight-through gradients; ``noise`` None: the mean / the mode."""
        if self.cfg.latent == "gaussian":
            mean, logstd = params
            return mean if noise is None else mean + logstd.exp() * noise
        (logprobs,) = params
        scores = logprobs if noise is None else logprobs - (-noise.log()).log()  # Gumbel-max
        onehot = F.one_hot(scores.argmax(-1), self.cfg.classes).to(logprobs.dtype)
        probs = logprobs.exp()
        return (onehot + probs - probs.detach()).flatten(-2)

    def _kl(self, *params: torch.Tensor) -> torch.Tensor:
        return (gaussian_kl if self.cfg.latent == "gaussian" else categorical_kl)(*params)

    def _spread(self, params: tuple[torch.Tensor, ...]) -> torch.Tensor:
        """The prior's spread per row ``(B,)``: mean std (Gaussian) or mean entropy (nats)."""
        if self.cfg.latent == "gaussian":
            return params[1].exp().mean(-1)
        (logprobs,) = params
        return -(logprobs.exp() * logprobs).sum(-1).mean(-1)

    # ---------------------------------------------------------------- networks
    def _normalised_obs(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """Raw ``(B, ..., obs_max)`` → per-env normalised, zero on padded dims."""
        norm = self.normalizer
        lead = (slice(None),) + (None,) * (obs.dim() - 2)  # broadcast (B, obs_max) over steps
        obs_n = (obs - norm.obs_mean[env_idx][lead]) / norm.obs_std[env_idx][lead]
        return obs_n * self.obs_masks[env_idx][lead]

    def _embed(self, obs_n: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """The encoder ``e(o)``: normalised ``(B, ..., obs_max)`` → ``(B, ..., hidden)``. The hook
        for pixels: a CNN over images would return the same features."""
        return self.encoder(self.obs_in(obs_n, self.group_of_env[env_idx]))

    def _step(self, deter: torch.Tensor, stoch: torch.Tensor, act: torch.Tensor) -> torch.Tensor:
        """``h_{t+1} = GRU(h_t, [z_t, a_t])`` with masked, zero-padded actions ``(B, act_max)``."""
        return self.gru(self.img_in(torch.cat([stoch, act], -1)), deter)

    def _decode(self, deter, stoch, env_idx) -> torch.Tensor:
        """``d(o | h, z)``'s mean, normalised ``(B, ..., obs_max)``, zero on padded dims."""
        out = self.obs_out(self.decoder(torch.cat([deter, stoch], -1)), self.group_of_env[env_idx])
        lead = (slice(None),) + (None,) * (out.dim() - 2)
        return out * self.obs_masks[env_idx][lead]

    def _reward(self, deter, stoch) -> torch.Tensor:
        """Predicted reward in normalised units ``(B, ...)`` (needs ``reward_head``)."""
        return self.reward_net(torch.cat([deter, stoch], -1))[..., 0]

    # ---------------------------------------------------------------- filtering
    def observe(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        env_idx: torch.Tensor,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> Window:
        """Filter ``T`` raw observations ``(B, T, obs_max)`` with the ``T − 1`` actions between
        them ``(B, T−1, act_max)``: posterior states from ``h_0``; ``deterministic``: the
        posterior's mean / mode instead of samples."""
        b, length = observations.shape[:2]
        embed = self._embed(self._normalised_obs(observations, env_idx), env_idx)  # (B, T, H)
        act = actions * self.act_masks[env_idx][:, None]  # (B, T−1, act_max)
        noise = None if deterministic else self._noise((b, length), generator, embed.device)
        deter = torch.tanh(self.initial_deter).expand(b, -1)  # (B, D) h_0
        deters, stochs, posts = [], [], []
        for t in range(length):
            if t > 0:
                deter = self._step(deter, stochs[-1], act[:, t - 1])
            post = self._params(self.posterior_net(torch.cat([deter, embed[:, t]], -1)))
            stochs.append(self._sample(post, None if noise is None else noise[:, t]))
            deters.append(deter)
            posts.append(post)
        deter_all = torch.stack(deters, 1)  # (B, T, D)
        posterior = tuple(torch.stack(parts, 1) for parts in zip(*posts, strict=True))
        prior = self._params(self.prior_net(deter_all))  # the prior needs only h: one batch
        return Window(deter_all, torch.stack(stochs, 1), posterior, prior)

    # ---------------------------------------------------------------- training
    def observe_batch(self, batch: SeqBatch, generator: torch.Generator | None = None) -> Window:
        """The posterior states of a training window's ``L + 1`` observations ``o_0 … o_L``."""
        observed = torch.cat([batch.observations[:, :1], batch.next_observations], 1)
        return self.observe(observed, batch.actions, batch.env_idx, generator)

    def loss_terms(
        self,
        batch: SeqBatch,
        generator: torch.Generator | None = None,
        *,
        reward_rows: torch.Tensor | None = None,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Eq. 1's terms (means over the window's valid steps), unweighted, and metrics;
        ``reward_rows (B,)`` bool: the rows whose rewards are labelled (None: all), the only
        ones the reward term sees (WPT's fine-tuning mixes in reward-free rows)."""
        return self.window_terms(batch, self.observe_batch(batch, generator), reward_rows)

    def window_terms(
        self, batch: SeqBatch, w: Window, reward_rows: torch.Tensor | None = None
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """:meth:`loss_terms` from the batch's filtered window ``w`` (:meth:`observe_batch`), so a
        caller can start imagination from the same posterior states."""
        cfg, env_idx = self.cfg, batch.env_idx
        observed = torch.cat([batch.observations[:, :1], batch.next_observations], 1)  # o_0 … o_L
        valid = F.pad(batch.step_mask.float(), (1, 0), value=1.0)  # (B, L+1): o_0 always exists
        obs_mask = self.obs_masks[env_idx][:, None].float()  # (B, 1, obs_max)
        target = self._normalised_obs(observed, env_idx)
        squared = (self._decode(w.deter, w.stoch, env_idx) - target).pow(2) * obs_mask
        kl, kl_nats = balanced_kl(
            w.posterior, w.prior, cfg.kl_dyn, cfg.kl_rep, cfg.free_nats, kl=self._kl
        )
        terms = {
            "reconstruction": masked_mean(squared.sum(-1), valid),
            "kl": masked_mean(kl, valid),
        }
        metrics = {
            "wm/obs_mse": (squared.sum(-1) * valid).sum() / (obs_mask.sum(-1) * valid).sum(),
            "wm/kl_nats": masked_mean(kl_nats, valid),
        }
        if cfg.reward_head:
            norm = self.normalizer
            target_rew = normalised(batch.rewards, env_idx, norm.reward_mean, norm.reward_std)
            deter, stoch = w.deter[:, 1:], w.stoch[:, 1:]
            if not cfg.reward_gradient:
                deter, stoch = deter.detach(), stoch.detach()
            error = (self._reward(deter, stoch) - target_rew).pow(2)
            labelled = batch.step_mask.float()  # (B, L)
            if reward_rows is not None:
                labelled = labelled * reward_rows[:, None].float()
            terms["reward"] = masked_mean(error, labelled)
        return terms, {k: v.detach() for k, v in metrics.items()}

    def loss_weights(self) -> dict[str, float]:
        return {"reconstruction": self.cfg.obs_scale, "kl": 1.0, "reward": self.cfg.reward_scale}

    def loss(
        self, batch: SeqBatch, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, dict]:
        """Eq. 1 (plus the reward term with ``reward_head``)."""
        return self.weighted(*self.loss_terms(batch, generator))

    def weighted(self, terms: dict, metrics: dict) -> tuple[torch.Tensor, dict]:
        """The loss of :meth:`loss_terms`' terms with :meth:`loss_weights`, and the metrics."""
        weights = self.loss_weights()
        total = sum(weights[name] * term for name, term in terms.items())
        return total, metrics | {f"wm/{name}": term.detach() for name, term in terms.items()}

    def sample_batch(
        self, dataset: MultiEnvDataset, batch_size: int, generator: torch.Generator
    ) -> SeqBatch:
        batch = dataset.sample_windows(batch_size, self.cfg.seq_len, generator)
        check_finite(observations=batch.observations, actions=batch.actions)
        return batch

    # ---------------------------------------------------------------- imagination
    @torch.no_grad()
    def encode(
        self, dataset: MultiEnvDataset, env_idx: torch.Tensor, index: torch.Tensor
    ) -> RSSMState:
        """The posterior state at transition ``index`` of env ``env_idx``, filtered (means /
        modes) over the up to ``burn_in`` dataset steps before it in its episode."""
        check_compatible(self.specs, dataset)
        m = self.cfg.burn_in + 1
        memory = start_memory(dataset, env_idx, index, m, self.obs_max, dataset.act_max)
        device = self.initial_deter.device
        actions = torch.zeros(len(env_idx), m, self.act_max)
        actions[..., : dataset.act_max] = memory.actions
        env = memory.env_idx.to(device)
        w = self.observe(
            memory.observations.to(device), actions[:, :-1].to(device), env, None, True
        )
        rows, last = torch.arange(len(env), device=device), memory.count.to(device) - 1
        return RSSMState(w.deter[rows, last], w.stoch[rows, last], env)

    @torch.no_grad()
    def next(
        self,
        state: RSSMState,
        observations: torch.Tensor | None,
        actions: torch.Tensor,
        env_idx: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
        deterministic: bool = False,
    ) -> WMStep:
        """Act ``actions (B, act_max)`` in every rollout. The current observation is the state's
        (``observations`` is accepted for the shared interface). ``deterministic``: the prior's
        mean / mode, else a sample; the next observation is always the decoder's mean."""
        env = state.env_idx
        act = torch.zeros(len(env), self.act_max, device=actions.device)
        act[:, : actions.shape[1]] = actions
        deter = self._step(state.deter, state.stoch, act * self.act_masks[env])
        prior = self._params(self.prior_net(deter))
        noise = None if deterministic else self._noise((len(env),), generator, deter.device)
        stoch = self._sample(prior, noise)
        norm, mask = self.normalizer, self.obs_masks[env]
        next_obs = (self._decode(deter, stoch, env) * norm.obs_std[env] + norm.obs_mean[env]) * mask
        if self.reward_net is not None:
            reward = self._reward(deter, stoch) * norm.reward_std[env] + norm.reward_mean[env]
        else:
            reward = torch.zeros(len(env), device=deter.device)
        terminations = registry_terminations(self.specs, next_obs, env)
        return WMStep(
            next_obs, reward, self._spread(prior), terminations, RSSMState(deter, stoch, env)
        )

    @torch.no_grad()
    def with_observations(self, state: RSSMState, observations: torch.Tensor) -> RSSMState:
        """The state continuing from ``observations``: z from the posterior (its mode / mean)
        given them and the state's h."""
        embed = self._embed(self._normalised_obs(observations, state.env_idx), state.env_idx)
        post = self._params(self.posterior_net(torch.cat([state.deter, embed], -1)))
        return RSSMState(state.deter, self._sample(post, None), state.env_idx)

    # ---------------------------------------------------------------- acting and imagination
    def latent(self, state: RSSMState) -> torch.Tensor:
        """``s = [h, z]`` ``(B, deter_dim + latent_width)``: what an actor or critic reads."""
        return torch.cat([state.deter, state.stoch], -1)

    @torch.no_grad()
    def initial_state(self, observations: torch.Tensor, env_idx: torch.Tensor) -> RSSMState:
        """The posterior state (mean / mode) of an episode's first raw observations
        ``(B, obs_max)``, from the learned ``h_0``."""
        deter = torch.tanh(self.initial_deter).expand(len(env_idx), -1)  # (B, D)
        return self.with_observations(RSSMState(deter, deter[:, :0], env_idx), observations)

    @torch.no_grad()
    def posterior_step(
        self, state: RSSMState, actions: torch.Tensor, observations: torch.Tensor
    ) -> RSSMState:
        """Filter one real step: ``h' = GRU(h, [z, a])`` with the executed ``actions (B, ≤
        act_max)``, then z from the posterior (mean / mode) given the next raw ``observations``
        ``(B, obs_max)``: how an agent tracks its state while acting."""
        deter = self._step(state.deter, state.stoch, self._padded_actions(actions, state.env_idx))
        return self.with_observations(RSSMState(deter, state.stoch, state.env_idx), observations)

    def imagine_step(
        self, state: RSSMState, actions: torch.Tensor, generator: torch.Generator | None = None
    ) -> RSSMState:
        """One imagined step with gradients (DreamerV3's actor learns through it): ``h' =
        GRU(h, [z, a])``, ``z' ~ p(z | h')`` reparameterised (Gaussian) or straight-through
        (categorical). ``actions (B, ≤ act_max)``."""
        deter = self._step(state.deter, state.stoch, self._padded_actions(actions, state.env_idx))
        prior = self._params(self.prior_net(deter))
        stoch = self._sample(prior, self._noise((len(deter),), generator, deter.device))
        return RSSMState(deter, stoch, state.env_idx)

    def predicted_reward(self, state: RSSMState) -> torch.Tensor:
        """The reward head's prediction ``(B,)`` in raw units for arriving at ``state`` (the
        reward of the transition into it), with gradients; needs ``reward_head``."""
        if self.reward_net is None:
            raise GenworldError(
                "this RSSM has no reward head (reward-free pre-training): build it with "
                "reward_head on (transferred(..., reward_head=True))"
            )
        norm, env = self.normalizer, state.env_idx
        return self._reward(state.deter, state.stoch) * norm.reward_std[env] + norm.reward_mean[env]

    @torch.no_grad()
    def decoded(self, state: RSSMState) -> torch.Tensor:
        """The decoder's mean observation ``(B, obs_max)`` of ``state``, raw, zero on padding."""
        norm, env = self.normalizer, state.env_idx
        out = self._decode(state.deter, state.stoch, env) * norm.obs_std[env] + norm.obs_mean[env]
        return out * self.obs_masks[env]

    def _padded_actions(self, actions: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """``actions (B, ≤ act_max)`` zero-padded to the model's width and masked to each env's."""
        act = F.pad(actions, (0, self.act_max - actions.shape[-1]))
        return act * self.act_masks[env_idx]

    # ---------------------------------------------------------------- pre-training's uses
    @torch.no_grad()
    def features(self, observations: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        """The encoder's features ``e(o) (N, hidden)`` of raw observations ``(N, obs_max)``:
        the space WPT retrieves in (eq. 5)."""
        return self._embed(self._normalised_obs(observations, env_idx), env_idx)

    def with_burn_in(self, steps: int) -> RSSMWorldModel:
        """This model, its weights shared, with ``encode`` filtering ``steps`` dataset steps
        before each start state: 0 = imagination from the start observation alone (MrCoM's
        context-free baseline), ``context_len − 1`` = the context MrCoM sees (its
        context-augmented DreamerV3 baseline)."""
        if not 0 <= steps < self.cfg.seq_len:
            raise GenworldError(
                f"burn_in={steps}: give 0 ≤ steps < seq_len ({self.cfg.seq_len}), the longest "
                "history the model was trained to filter"
            )
        view = copy.copy(self)  # shares every parameter, buffer and submodule
        view.cfg = replace(self.cfg, burn_in=steps)
        return view

    def transferred(
        self, specs: list[EnvSpec], normalizer: Normalizer, **changes
    ) -> RSSMWorldModel:
        """This model for other envs (a fine-tuning target, a held-out embodiment): every shared
        weight copied, and the per-body encoder input and decoder output layers of the bodies it
        has (:func:`encoder_group`); new bodies start fresh. The action width is kept.
        ``changes``: config fields that change no weight's shape, e.g. ``reward_head=True`` (a
        head this model lacks starts fresh: WPT's fine-tuning learns it from online data)."""
        cfg = replace(self.cfg, **changes)
        other = RSSMWorldModel(specs, cfg, normalizer, act_width=self.act_max)
        other = other.to(self.initial_deter.device)
        per_env = ("obs_in.", "obs_out.", "normalizer.", "obs_masks", "act_masks", "group_of_env")
        state = other.state_dict()
        own = self.state_dict()
        state |= {k: v for k, v in own.items() if k in state and not k.startswith(per_env)}
        for k_new, group in enumerate(other.groups):
            if group not in self.groups:
                continue
            k_old = self.groups.index(group)
            d = next(s.obs_dim for s in specs if encoder_group(s, self.cfg.share_encoders) == group)
            state["obs_in.weight"][k_new, :d] = own["obs_in.weight"][k_old, :d]
            state["obs_in.bias"][k_new] = own["obs_in.bias"][k_old]
            state["obs_out.weight"][k_new, :, :d] = own["obs_out.weight"][k_old, :, :d]
            state["obs_out.bias"][k_new, :d] = own["obs_out.bias"][k_old, :d]
        other.load_state_dict(state)
        return other


__all__ = [
    "NormGRUCell",
    "RSSMConfig",
    "RSSMState",
    "RSSMWorldModel",
    "Window",
    "encoder_group",
    "ln_mlp",
]
