"""Environment-agnostic networks: any number of observation dims in, any number of action dims out.

Paper: Kim & Joo 2023, "Agnostic Architecture for Heterogeneous Multi-Environment Reinforcement
Learning", §3.1 and Fig. 1. A state is read as a *sequence of its true dimensions*: each scalar
becomes a token (value embedding + dimension-id embedding), an S4 block and transformer layers mix
the tokens, a masked global average pool (GAP) gives one vector, a residual MLP adds a task
embedding, and the decoder emits one output per action dimension. No layer has a size that
depends on an environment, so one set of weights serves observation sizes 1..MAX_OBS_DIMS and
action sizes 1..MAX_ACT_DIMS.

S4D blocks: the diagonal S4 layer of Gu, Gupta, Goel & Ré 2022 (``nn/s4d.py``, as the authors'
minimal reference), causal along the dimension axis. Transformer layers are our batch-first
``TransformerLayer`` (tested equal to torch's pre-norm GELU layer).

Padding never contributes (tests/test_agnostic.py): rows are zero-padded at the end (the
``Batch`` contract), padded tokens are zeroed after every block, the causal S4 convolution
never looks forward, attention ignores padded keys, and the GAP averages true tokens only. So an
env's outputs do not depend on the padding width or on which envs share its batch. Rows of
several widths (agnostic IQL's width groups) run together as segments of one token layout
(``dim_tokens.Layout``): the per-token layers see every token at once, and the convolution,
attention and pooling go segment by segment; a mask of None (no padding) skips the masking.

Decoder (deviation, documented): the paper stacks the hidden vector once per output dim, adds a
positional encoding, runs S4 + transformer and averages over the hidden dim. We use
*query-per-action-dim*: output dim ``j`` starts as ``query + action_dim_embedding(j) + h`` (the
same stacking plus a learned query), runs through S4D along the action dims and transformer
decoder layers whose cross-attention reads the encoded state tokens, and a linear head
(a learned weighted average over the hidden dim) gives each dim's scalar: a Gaussian mean and a
state-dependent log-std (the paper's SAC-like std decoder), or one categorical logit per choice.

Other deviations from the paper, each a choice of ours (the seed text does not give these):
- Tokens carry a learned *dimension-id* embedding (a table of ``MAX_OBS_DIMS`` = 512 state and
  ``MAX_ACT_DIMS`` = 64 action ids) and a token-type embedding (state vs action); the paper's S4
  embedding has neither. The table caps the dims an env may have, and ids no training env has
  stay at their initial values, which matters when transferring to a wider env.
- S4D-Lin with ZOH discretisation (the diagonal S4, ``nn/s4d.py``) instead of the paper's S4
  (DPLR, bilinear).
- One decoder trunk for all output types (mean, log-std, logits: separate linear heads on it)
  instead of a decoder per output type.
- Size: the full preset's actor, V and each Q together hold about 5.3M parameters against the
  paper's "4M" (its Table 2b sizes with our dimension-id tables and GLU projections).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import nn

from genworld.nn.agnostic_layers import (  # noqa: F401 (the config is re-exported)
    NET_PRESETS,
    AgnosticConfig,
    SequenceEncoder,
    TransformerLayer,
    s4_blocks,
    transformer_layers,
    zero_padding,
)
from genworld.nn.dim_tokens import DimTokenizer, Layout, pack_tokens, pool
from genworld.nn.tokenizers import PerEnvLinear

MAX_OBS_DIMS = 512
"""Dimension-id table size for states (Humanoid's 376 dims fit)."""
MAX_ACT_DIMS = 64
"""Dimension-id table size for actions (Humanoid's 17 dims fit)."""
NEG_INF = -1e9
"""Logit of a padded categorical choice (finite, so masked softmax stays NaN-free)."""


class Rows(NamedTuple):
    """One segment of a network's input rows, as wide as its envs need: agnostic IQL passes its
    width groups as segments, so every per-token layer runs once for all of them. Masks are
    None where no row has padding."""

    obs: torch.Tensor
    """Observations ``(B, O)``."""
    obs_mask: torch.Tensor | None
    """``(B, O)``, True on true dims."""
    env_idx: torch.Tensor
    """``(B,)`` env index (the task embedding's row)."""
    actions: torch.Tensor | None = None
    """``(B, A)``: the Q critics' inputs; the actor reads only their width."""
    act_mask: torch.Tensor | None = None
    """``(B, A)``, True on true action dims."""


class ResidualMLP(nn.Module):
    """``x + task_embedding(env)`` through pre-norm residual blocks (paper Fig. 1a, middle)."""

    def __init__(self, cfg: AgnosticConfig):
        super().__init__()
        self.task = nn.Embedding(cfg.num_tasks, cfg.d_model) if cfg.num_tasks > 0 else None
        self.blocks = nn.ModuleList(
            nn.Sequential(
                nn.LayerNorm(cfg.d_model),
                nn.Linear(cfg.d_model, cfg.mlp_hidden),
                nn.GELU(),
                nn.Dropout(cfg.dropout),
                nn.Linear(cfg.mlp_hidden, cfg.d_model),
            )
            for _ in range(cfg.mlp_depth)
        )
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(self, x: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        if self.task is not None:
            x = x + self.task(env_idx)  # (B, H)
        for block in self.blocks:
            x = x + block(x)  # (B, H)
        return self.norm(x)


Encoded = tuple[torch.Tensor, Layout, torch.Tensor | None]
"""Token sequences ``(T, H)``, their layout and mask ``(T,)`` (None: every token true)."""


class StateEncoder(nn.Module):
    """Observations ``(B, O)`` (+ optional actions ``(B, A)``) as one token sequence → state
    tokens ``(B, L, H)``, their mask and the pooled, task-conditioned vector ``h (B, H)``."""

    def __init__(self, cfg: AgnosticConfig, with_actions: bool = False):
        super().__init__()
        self.obs_tokens = DimTokenizer(cfg.d_model, MAX_OBS_DIMS, token_type=0)
        self.act_tokens = (
            DimTokenizer(cfg.d_model, MAX_ACT_DIMS, token_type=1) if with_actions else None
        )
        self.encoder = SequenceEncoder(cfg)
        self.mlp = ResidualMLP(cfg)

    def forward(
        self,
        obs: torch.Tensor,
        obs_mask: torch.Tensor | None,
        env_idx: torch.Tensor,
        actions: torch.Tensor | None = None,
        act_mask: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Masks None: every dim is true (an unpadded batch); the returned mask is then None."""
        (tokens, layout, mask), h = self.segments([Rows(obs, obs_mask, env_idx, actions, act_mask)])
        return layout.split(tokens)[0], layout.split_masks(mask)[0], h

    def segments(self, rows: Sequence[Rows]) -> tuple[Encoded, torch.Tensor]:
        """Every segment's tokens, encoded together, and ``h`` of every row (segment order)."""
        parts, masks = [], []
        for obs, obs_mask, _, actions, act_mask in rows:
            tokens = self.obs_tokens(zero_padding(obs, obs_mask), obs_mask)  # (B, O, H)
            mask = obs_mask
            if self.act_tokens is not None:
                if actions is None:
                    raise ValueError("this encoder reads (state, action) sequences: give actions")
                act = self.act_tokens(zero_padding(actions, act_mask), act_mask)  # (B, A, H)
                tokens, mask = pack_tokens(tokens, obs_mask, act, act_mask)  # (B, O+A, H)
            parts.append(tokens)
            masks.append(mask)
        layout = Layout.of(parts)
        mask = layout.join_masks(masks)  # (T,)
        tokens = self.encoder(layout.join(parts), layout, mask)  # (T, H)
        env_idx = rows[0].env_idx if len(rows) == 1 else torch.cat([r.env_idx for r in rows])
        return (tokens, layout, mask), self.mlp(pool(tokens, layout, mask), env_idx)  # (B, H)


class ActionDecoder(nn.Module):
    """``h (B, H)`` + state tokens → one feature per action dim, zero on padding.

    Query-per-action-dim: dim ``j`` starts as ``query + dim_id(j) + h``; S4D runs along the
    action dims, then decoder layers self-attend over the true action dims and cross-attend to
    the true state tokens."""

    def __init__(self, cfg: AgnosticConfig):
        super().__init__()
        self.query = nn.Parameter(torch.zeros(cfg.d_model))
        self.dim_id = nn.Embedding(MAX_ACT_DIMS, cfg.d_model)
        self.s4 = s4_blocks(cfg)
        self.layers = transformer_layers(cfg, cross=True)
        self.norm = nn.LayerNorm(cfg.d_model)

    def forward(
        self,
        h: torch.Tensor,
        memory: Encoded,
        act_masks: Sequence[torch.Tensor | None],
        widths: Sequence[int],
    ) -> Encoded:
        """``h`` of every row of ``memory``'s segments, each segment's action mask ``(B_g,
        A_g)`` (None: every dim true) and width ``A_g`` → one feature per action dim."""
        if max(widths) > MAX_ACT_DIMS:
            raise ValueError(
                f"{max(widths)} action dims exceed the dimension-id table ({MAX_ACT_DIMS})"
            )
        rows = memory[1].rows
        parts = [
            zero_padding((self.query + self.dim_id.weight[:width])[None] + h_g[:, None], mask)
            for h_g, mask, width in zip(h.split(rows), act_masks, widths, strict=True)
        ]  # (B_g, A_g, H) each
        layout = Layout.of(parts)
        mask = layout.join_masks(act_masks)  # (T_a,)
        x = layout.join(parts)  # (T_a, H)
        for block in self.s4:
            x = block(x, layout, mask)  # (T_a, H)
        for layer in self.layers:
            x = zero_padding(layer(x, layout, mask, memory), mask)  # (T_a, H)
        return zero_padding(self.norm(x), mask), layout, mask  # (T_a, H)


class AgnosticActor(nn.Module):
    """Policy: state sequence → per-action-dim Gaussian (mean, log-std) and/or categorical
    logits. Only the heads asked for exist (``continuous``, ``discrete``), so none sits idle."""

    def __init__(
        self,
        cfg: AgnosticConfig,
        *,
        continuous: bool = True,
        discrete: bool = False,
        log_std_bounds: tuple[float, float] = (-5.0, 2.0),
    ):
        super().__init__()
        self.encoder = StateEncoder(cfg)
        self.decoder = ActionDecoder(cfg)
        self.mean = nn.Linear(cfg.d_model, 1) if continuous else None
        self.log_std = nn.Linear(cfg.d_model, 1) if continuous else None
        self.logit = nn.Linear(cfg.d_model, 1) if discrete else None
        self.log_std_bounds = log_std_bounds

    def features(self, obs, obs_mask, env_idx, act_mask) -> torch.Tensor:
        """One feature per action dim ``(B, A, H)`` (zero on padded dims)."""
        f, layout, _ = self.segment_features([Rows(obs, obs_mask, env_idx, act_mask=act_mask)])
        return layout.split(f)[0]  # (B, A, H)

    def segment_features(self, rows: Sequence[Rows]) -> Encoded:
        """One feature per action dim of every segment (each as wide as its ``act_mask``, or
        where that is None its ``actions``)."""
        widths = [r.actions.shape[1] if r.act_mask is None else r.act_mask.shape[1] for r in rows]
        memory, h = self.encoder.segments(rows)
        return self.decoder(h, memory, [r.act_mask for r in rows], widths)

    def segment_gaussians(self, rows: Sequence[Rows]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """:meth:`gaussian_head` of every segment: ``(mean, log-std)``, each ``(B_g, A_g)``."""
        f, layout, mask = self.segment_features(rows)  # (T_a, H)
        mean, log_std = self.gaussian_head(f, mask)  # (T_a,)
        return list(zip(layout.split(mean), layout.split(log_std), strict=True))

    def gaussian_head(self, f: torch.Tensor, act_mask: torch.Tensor | None):
        """Mean and state-dependent log-std ``(B, A)`` (or ``(T,)``), both zero on padding."""
        if self.mean is None or self.log_std is None:
            raise ValueError("this actor was built without a continuous (Gaussian) head")
        low, high = self.log_std_bounds
        log_std = self.log_std(f).squeeze(-1).clamp(low, high)  # (B, A)
        mean = self.mean(f).squeeze(-1)  # (B, A)
        return zero_padding(mean, act_mask), zero_padding(log_std, act_mask)

    def categorical_head(self, f: torch.Tensor, act_mask: torch.Tensor | None) -> torch.Tensor:
        """One logit per choice ``(B, A)`` (a discrete env's choices are its 'action dims');
        padded choices get NEG_INF."""
        if self.logit is None:
            raise ValueError("this actor was built without a discrete (categorical) head")
        logits = self.logit(f).squeeze(-1)  # (B, A)
        return logits if act_mask is None else logits.masked_fill(~act_mask, NEG_INF)

    def heads(self, obs, obs_mask, env_idx, act_mask):
        """Every head this actor has, from one feature pass (for batches mixing Box and Discrete
        envs): ``((mean, log-std) or None, logits or None)``, each ``(B, A)``."""
        f = self.features(obs, obs_mask, env_idx, act_mask)  # (B, A, H)
        gauss = self.gaussian_head(f, act_mask) if self.mean is not None else None
        logits = self.categorical_head(f, act_mask) if self.logit is not None else None
        return gauss, logits

    def gaussian(self, obs, obs_mask, env_idx, act_mask) -> tuple[torch.Tensor, torch.Tensor]:
        return self.gaussian_head(self.features(obs, obs_mask, env_idx, act_mask), act_mask)

    def logits(self, obs, obs_mask, env_idx, act_mask) -> torch.Tensor:
        return self.categorical_head(self.features(obs, obs_mask, env_idx, act_mask), act_mask)


class AgnosticCritic(nn.Module):
    """V(s) (``with_actions=False``) or Q(s, a) over the packed (state, action) sequence."""

    def __init__(self, cfg: AgnosticConfig, with_actions: bool = False):
        super().__init__()
        self.encoder = StateEncoder(cfg, with_actions=with_actions)
        self.head = nn.Linear(cfg.d_model, 1)

    def forward(self, obs, obs_mask, env_idx, actions=None, act_mask=None) -> torch.Tensor:
        return self.segments([Rows(obs, obs_mask, env_idx, actions, act_mask)])  # (B,)

    def segments(self, rows: Sequence[Rows]) -> torch.Tensor:
        """The value of every row of every segment, segment after segment: ``(rows,)``."""
        _, h = self.encoder.segments(rows)
        return self.head(h).squeeze(-1)  # (B,)


class RunningObsNorm(nn.Module):
    """Per-env running mean/variance of observations (Chan et al. parallel update, as
    gymnasium's ``NormalizeObservation``), clipped to ±``clip`` after normalising (CleanRL).

    Buffers ``(num_envs, obs_max)``; padded dims keep mean 0 / var 1 and are masked anyway.
    ``update`` with ``env_idx`` of one env or many; each env's stats move only with its rows."""

    def __init__(self, num_envs: int, obs_max: int, clip: float = 10.0, eps: float = 1e-8):
        super().__init__()
        self.clip, self.eps = clip, eps
        self.register_buffer("count", torch.full((num_envs,), 1e-4, dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(num_envs, obs_max, dtype=torch.float64))
        self.register_buffer("var", torch.ones(num_envs, obs_max, dtype=torch.float64))

    @torch.no_grad()
    def update(self, obs: torch.Tensor, env_idx: torch.Tensor) -> None:
        for k in env_idx.unique().tolist():
            rows = obs[env_idx == k].to(torch.float64)  # (n, W)
            width, n = rows.shape[1], rows.shape[0]
            mean, var, count = self.mean[k, :width], self.var[k, :width], self.count[k]
            batch_mean, batch_var = rows.mean(0), rows.var(0, unbiased=False)
            delta, total = batch_mean - mean, count + n
            m2 = var * count + batch_var * n + delta.pow(2) * count * n / total
            self.mean[k, :width] = mean + delta * n / total
            self.var[k, :width] = m2 / total
            self.count[k] = total

    def forward(self, obs: torch.Tensor, env_idx: torch.Tensor) -> torch.Tensor:
        width = obs.shape[1]
        mean = self.mean[env_idx, :width].to(obs.dtype)  # (B, W)
        std = (self.var[env_idx, :width] + self.eps).sqrt().to(obs.dtype)  # (B, W)
        return ((obs - mean) / std).clamp(-self.clip, self.clip)


def per_env_weights(module: nn.Module) -> set[str]:
    """State-dict keys of ``module``'s weights that each belong to the envs it was built for:
    task embeddings (:class:`ResidualMLP`) and per-env layers (the env-specific baseline's
    :class:`~genworld.nn.tokenizers.PerEnvLinear`). A network moved to other envs (transfer)
    starts them fresh; every other weight is shared by all envs."""
    keys = set()
    for name, child in module.named_modules():
        if isinstance(child, PerEnvLinear) or (
            isinstance(child, nn.Embedding) and name.rpartition(".")[2] == "task"
        ):
            prefix = f"{name}." if name else ""
            keys |= {prefix + key for key in child.state_dict()}
    return keys


def parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
