"""IQL with environment-agnostic networks: one actor, V and twin Q for every env, whatever its
observation and action sizes (the paper's offline multi-env agent, trained by DD-IQL).

Papers: Kim & Joo 2023, "Agnostic Architecture for Heterogeneous Multi-Environment Reinforcement
Learning" (§3.1 networks, §3.2 normalisation and gradient clipping, §3.3 + Algorithm 2 DD-IQL);
Kostrikov, Nair & Levine 2021, "Offline Reinforcement Learning with Implicit Q-Learning"
(arXiv:2110.06169). The IQL maths (expectile 0.7, beta 3, weights clipped at 100, gamma 0.99,
Polyak 0.005, lr 3e-4, cosine-decayed actor lr, the per-env ``1000 / return range`` reward
scale) is exactly :mod:`genworld.algos.iql`'s, whose helpers this file imports; only the
networks and the batching differ. Networks: :mod:`genworld.nn.agnostic`, or with ``networks =
"env-specific"`` the paper's Multi-Env Specific Agent baseline (:mod:`genworld.nn.env_specific`:
an encoder and a decoder per env around a shared middle), trained the same way.

A state is the sequence of its true dims (padded dims are masked out everywhere), so an env's
outputs never depend on the padding or on the other envs in the batch. The Gaussian actor's mean
is tanh-squashed (CORL ``GaussianPolicy``) and its log-std is state-dependent (paper §3.1, the
SAC-like std decoder); the nll is summed over each env's true action dims.

Batches (DD-IQL, Algorithm 2): every env contributes ``batch_size // num_envs`` rows drawn from
its own stream, seeded by (update seed, env index), so an env's rows are the same whichever
process holds it. The loss is the mean over envs of each env's mean loss; a process holding a
subset of the envs multiplies its sum by ``world_size`` so DDP's gradient average equals the
single-process gradient on the concatenated batch (tests/test_distributed.py checks this).
Rows reach the networks in width groups, each cut to its envs' own observation and action
widths (:meth:`AgnosticIQL.width_groups`): no row carries another env's padding (on
halfcheetah/hopper/walker2d/ant, 6,080 instead of 8,960 tokens per 256-row update), and each
network runs once over all the groups (segments of one token layout, :mod:`genworld.nn.agnostic`).

Deviations:
- The paper sums the envs' losses (L_total = sum_s L_env); we average them, so the gradient-norm
  clip does not scale with the number of envs (a constant factor for Adam otherwise).
- Observation statistics are fitted on the fixed dataset (``ctx.normalizer``; a running mean over
  a fixed dataset converges to them) instead of the paper's running statistics; rewards use IQL's
  return-range scale (paper §3.2 normalises rewards by running statistics in PPO).
- Gradient clipping (paper §3.2) per network at ``max_grad_norm`` = 0.5, the paper's only value
  (Table 2a, PPO); the paper gives none for IQL.
- Dropout 0 (paper Table 2b: 0.1): keeps DDP-vs-single-process and resume checks exact; the full
  preset sets the paper's 0.1.
- The paper's decoder averages over the hidden dim; ours is a linear head (see nn/agnostic.py).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from genworld.algos.iql import (
    IQLConfig,
    advantage_weights,
    cosine_decay,
    reward_scales,
    validate_iql_fields,
)
from genworld.algos.registry import (
    AlgoContext,
    agent_state,
    check_schedule_length,
    load_agent_state,
    resolve_config,
    schedule_length,
)
from genworld.data.multi_env import EnvData, MultiEnvDataset, gather_transitions
from genworld.data.normalization import Normalizer
from genworld.errors import GenworldError
from genworld.nn.agnostic import (
    NET_PRESETS,
    AgnosticActor,
    AgnosticConfig,
    AgnosticCritic,
    Rows,
    per_env_weights,
)
from genworld.nn.env_specific import EnvSpecificActor, EnvSpecificCritic
from genworld.types import Batch, EnvSpec
from genworld.utils.device import fused_optimizer
from genworld.utils.optim import Minimizer

NETWORKS = ("agnostic", "env-specific")
"""``AgnosticIQLConfig.networks``: the agnostic networks or the env-specific baseline's."""
SEED_STRIDE = 0x9E3779B97F4A7C15
"""Mixes the env index into an update's seed (golden-ratio constant, splitmix64)."""


IQL_DEFAULTS = IQLConfig()
"""Plain IQL's settings, whose defaults the agnostic agent's IQL fields take."""


@dataclass(frozen=True)
class AgnosticIQLConfig:
    net: AgnosticConfig = field(default_factory=AgnosticConfig)
    """Sizes of the actor, V and each Q (``num_tasks`` is set from the env count)."""
    networks: str = "agnostic"
    """agnostic (one set of weights for every env: the paper's agent) or env-specific (an
    encoder and a decoder per env around a shared middle: the paper's Multi-Env Specific Agent
    baseline, :mod:`genworld.nn.env_specific`)."""
    task_embedding: bool = True
    """Add a learned per-env task embedding in the residual MLP (paper Fig. 1a)."""
    # IQL's own settings, with IQL's defaults (each lives in IQLConfig, documented there)
    expectile: float = IQL_DEFAULTS.expectile
    """tau of the asymmetric L2 loss for V."""
    beta: float = IQL_DEFAULTS.beta
    """Inverse temperature of the advantage weights exp(beta * A)."""
    max_weight: float = IQL_DEFAULTS.max_weight
    """Advantage weights are clipped at this."""
    gamma: float = IQL_DEFAULTS.gamma
    """Discount."""
    tau: float = IQL_DEFAULTS.tau
    """Polyak rate of the target critics."""
    actor_lr: float = IQL_DEFAULTS.actor_lr
    """Adam learning rate of the actor before its cosine decay."""
    critic_lr: float = IQL_DEFAULTS.critic_lr
    """Adam learning rate of the Q critics."""
    value_lr: float = IQL_DEFAULTS.value_lr
    """Adam learning rate of the value net V."""
    actor_lr_decay_steps: int = IQL_DEFAULTS.actor_lr_decay_steps
    """Cosine decay of the actor lr to 0 over this many updates; 0 = over the run's updates."""
    batch_size: int = IQL_DEFAULTS.batch_size
    """Rows per update over all envs (and all processes): ``batch_size // num_envs`` per env."""
    num_critics: int = IQL_DEFAULTS.num_critics
    """Q critics in the ensemble; V regresses to the minimum over their targets (IQL: twin Q)."""
    max_grad_norm: float = 0.5
    """Per-network gradient-norm clip (paper §3.2, Table 2a); 0 disables."""
    normalize_reward: bool = True
    """Scale each env's rewards by 1000 / its (max - min) episode return (IQL)."""

    def validate(self) -> None:
        validate_iql_fields(self)
        if self.max_grad_norm < 0:
            raise GenworldError(f"max_grad_norm must be >= 0, got {self.max_grad_norm}")
        if self.networks not in NETWORKS:
            raise GenworldError(f"networks {self.networks!r}: use {' or '.join(NETWORKS)}")


PRESETS: dict[str, dict] = {
    # tiny: unit tests and the torchrun smoke test (seconds on CPU)
    "tiny": {"net": NET_PRESETS["tiny"], "batch_size": 24},
    # mini: a CPU-sized network
    "mini": {"net": NET_PRESETS["mini"]},
    # full: the paper's Table 2b network (GPU)
    "full": {"net": NET_PRESETS["full"]},
}


def build(ctx: AlgoContext) -> AgnosticIQL:
    """Registry entry (``genworld.algos.agnostic_iql:build``): all of ``ctx.dataset``'s envs
    in this process."""
    cfg = resolve_config(AgnosticIQLConfig, PRESETS, ctx)
    dataset = ctx.dataset
    scales = reward_scales(dataset) if cfg.normalize_reward else torch.ones(dataset.num_envs)
    return AgnosticIQL(
        dataset,
        cfg,
        ctx.device,
        specs=dataset.specs,
        env_ids=list(range(dataset.num_envs)),
        normalizer=ctx.normalizer,
        reward_scale=scales,
        actor_lr_decay_steps=schedule_length(
            cfg.actor_lr_decay_steps, ctx.updates, "actor_lr_decay_steps"
        ),
    )


def sample_rows(
    envs: Sequence[EnvData],
    env_ids: Sequence[int],
    per_env: int,
    seed: int,
    obs_max: int,
    act_max: int,
) -> Batch:
    """``per_env`` transitions of each env, padded to ``(obs_max, act_max)``; env ``g``'s rows
    come from its own generator seeded by ``(seed, g)`` (independent of the other envs here)."""
    parts = []
    for env, g in zip(envs, env_ids, strict=True):
        stream = torch.Generator().manual_seed((seed + (g + 1) * SEED_STRIDE) % 2**63)
        parts.append((env, torch.randint(len(env), (per_env,), generator=stream), g))
    return gather_transitions(parts, obs_max, act_max)


class IQLNetworks(nn.Module):
    """Actor, V and the Q ensemble; ``forward`` is the whole IQL loss of one step, so one DDP
    wrapper synchronises all three networks' gradients in one backward."""

    def __init__(self, net: AgnosticConfig, cfg: AgnosticIQLConfig, specs: Sequence[EnvSpec]):
        super().__init__()
        self.cfg = cfg
        if cfg.networks == "env-specific":
            self.actor = EnvSpecificActor(net, specs)
            self.value = EnvSpecificCritic(net, specs)
            critics = (EnvSpecificCritic(net, specs, True) for _ in range(cfg.num_critics))
        else:
            self.actor = AgnosticActor(net)
            self.value = AgnosticCritic(net)
            critics = (AgnosticCritic(net, True) for _ in range(cfg.num_critics))
        self.critics = nn.ModuleList(critics)

    def q_values(self, critics: nn.ModuleList, rows: Sequence[Rows]) -> torch.Tensor:
        return torch.stack([q.segments(rows) for q in critics])  # (E, B)

    def forward(self, groups: list[WidthGroup], scale: float):
        """Sum of every row's V, Q and actor losses times ``scale``, and detached metrics; the
        rows come in width groups, each as wide as its envs need, and each network runs once
        over all of them (one call: one DDP forward)."""
        rows = [Rows(*group[:5]) for group in groups]
        target_q, target = (torch.cat([group[k] for group in groups]) for k in (5, 6))  # (B,)
        losses = self.row_losses(rows, target_q, target)
        total = scale * (losses["value"] + losses["critic"] + losses["actor"]).sum()
        return total, {name: row.mean().detach() for name, row in losses.items()}

    def row_losses(self, rows: Sequence[Rows], target_q: torch.Tensor, target: torch.Tensor):
        """Each row's V (expectile), Q (TD) and actor (advantage-weighted nll) loss, with the
        Q values, V and advantage weights the metrics report (rows in segment order)."""
        cfg = self.cfg
        v = self.value.segments(rows)  # (B,)
        advantage = target_q - v  # (B,)
        value_rows = torch.where(advantage < 0, 1.0 - cfg.expectile, cfg.expectile) * advantage.pow(
            2
        )
        q = self.q_values(self.critics, rows)  # (E, B)
        critic_rows = (q - target).pow(2).mean(0)  # (B,)
        weights = advantage_weights(advantage.detach(), cfg.beta, cfg.max_weight)  # (B,)
        gaussians = self.actor.segment_gaussians(rows)  # (B_g, A_g) each
        nll = torch.cat([action_nll(*gauss, r) for gauss, r in zip(gaussians, rows, strict=True)])
        return {
            "value": value_rows,
            "critic": critic_rows,
            "actor": weights * nll,  # (B,)
            "q": q,
            "v": v,
            "advantage": advantage,
            "weight": weights,
        }


def action_nll(mean: torch.Tensor, log_std: torch.Tensor, rows: Rows) -> torch.Tensor:
    """Each row's Gaussian nll of its actions (tanh-squashed mean), summed over its true action
    dims: ``(B, A), (B, A) -> (B,)``."""
    act_mask, actions = rows.act_mask, rows.actions
    mean = torch.tanh(mean) if act_mask is None else torch.tanh(mean) * act_mask
    nll = 0.5 * ((actions - mean) / log_std.exp()).pow(2) + log_std + 0.5 * math.log(2 * math.pi)
    return (nll if act_mask is None else nll * act_mask).sum(-1)  # (B,)


WidthGroup = tuple[torch.Tensor | None, ...]
"""The rows of the envs sharing one (observation, action) width, cut to that width: ``(obs,
obs_mask, env, actions, act_mask, target_q, target)``; the masks are None where no row has
padding (a width group's rows never do), so the networks skip the masking."""


class AgnosticIQL:
    """IQL over the envs ``env_ids`` (global indices into ``specs``) whose data is ``data``."""

    def __init__(
        self,
        data: MultiEnvDataset,
        cfg: AgnosticIQLConfig,
        device: torch.device,
        *,
        specs: Sequence[EnvSpec],
        env_ids: Sequence[int],
        normalizer: Normalizer,
        reward_scale: torch.Tensor,
        actor_lr_decay_steps: int,
    ):
        """``actor_lr_decay_steps``: the cosine decay's length (the config's, or the run's)."""
        if len(env_ids) != data.num_envs:
            raise GenworldError(f"{data.num_envs} local envs but {len(env_ids)} env ids")
        self.cfg, self.data, self.device = cfg, data, device
        self.specs, self.env_ids = list(specs), list(env_ids)
        num_envs = len(self.specs)
        self.obs_max = max(s.obs_dim for s in self.specs)
        self.act_max = max(s.act_dim for s in self.specs)
        self.per_env = max(1, cfg.batch_size // num_envs)
        net = replace(cfg.net, num_tasks=num_envs if cfg.task_embedding else 0)
        self.nets = IQLNetworks(net, cfg, self.specs).to(device)
        # targets are read without dropout (the ``full`` preset's 0.1): a TD target is an
        # estimate, not a training pass
        self.critic_target = copy.deepcopy(self.nets.critics).requires_grad_(False).eval()
        self._polyak = (list(self.critic_target.parameters()), list(self.nets.critics.parameters()))
        self.train_module: nn.Module = self.nets
        self.loss_scale = 1.0 / (self.per_env * num_envs)
        self.opt = torch.optim.Adam(
            [
                {"params": self.nets.actor.parameters(), "lr": cfg.actor_lr},
                {"params": self.nets.critics.parameters(), "lr": cfg.critic_lr},
                {"params": self.nets.value.parameters(), "lr": cfg.value_lr},
            ],
            fused=fused_optimizer(device),
        )
        self.opt_min = Minimizer(self.opt)
        dims = torch.tensor([s.obs_dim for s in self.specs])
        adims = torch.tensor([s.act_dim for s in self.specs])
        self.obs_masks = (torch.arange(self.obs_max)[None] < dims[:, None]).to(device)  # (K, O)
        self.act_masks = (torch.arange(self.act_max)[None] < adims[:, None]).to(device)  # (K, A)
        self.widths = torch.stack([dims, adims], 1).to(device)  # (K, 2): each env's own widths
        self.normalizer = normalizer.to(device)
        self.reward_scale = reward_scale.to(device=device, dtype=torch.float32)  # (K,)
        self.decay_steps = actor_lr_decay_steps
        self.step = 0

    def use_ddp(self, wrap: Callable[[nn.Module], nn.Module], world_size: int) -> None:
        """Train through ``wrap(self.nets)`` (a DistributedDataParallel); this process holds
        ``len(env_ids)`` of the envs, so its loss is scaled by ``world_size`` (see module doc)."""
        self.train_module = wrap(self.nets)
        self.loss_scale = world_size / (self.per_env * len(self.specs))

    def _normalize(
        self, obs: torch.Tensor, env_idx: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        width = obs.shape[1]
        norm = self.normalizer
        mean, std = norm.obs_mean[env_idx, :width], norm.obs_std[env_idx, :width]
        mask = self.obs_masks[env_idx, :width]  # (B, W)
        return (obs - mean) / std * mask, mask

    def sample(self, generator: torch.Generator) -> Batch:
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        return sample_rows(
            self.data.envs, self.env_ids, self.per_env, seed, self.obs_max, self.act_max
        ).to(self.device)

    def update(self, generator: torch.Generator) -> dict[str, torch.Tensor]:
        return self.update_on(self.sample(generator))

    def start_from(self, nets: dict[str, torch.Tensor]) -> list[str]:
        """Start from another run's networks (transfer, paper §4.2): every shared weight is
        copied and the target critics follow; the weights that belong to the envs the other run
        was built for (task embeddings, the env-specific baseline's encoders and decoders:
        :func:`~genworld.nn.agnostic.per_env_weights`) stay as initialised, and their names are
        returned. Shared weights of other sizes (another scale) are an error."""
        own = self.nets.state_dict()
        fresh = per_env_weights(self.nets)
        shared = [k for k in own if k not in fresh]
        misfits = [k for k in shared if k not in nets or nets[k].shape != own[k].shape]
        if misfits:
            raise GenworldError(
                f"the networks to start from lack or misfit {len(misfits)} of {len(shared)} "
                f"shared weights (e.g. {misfits[0]}): they were trained at other sizes or with "
                "other networks (another --scale?); pretrain at this run's scale"
            )
        self.nets.load_state_dict({k: nets[k] for k in shared}, strict=False)
        self.critic_target.load_state_dict(self.nets.critics.state_dict())
        return sorted(fresh)

    def width_groups(self, env: torch.Tensor) -> list[tuple[torch.Tensor, int, int]]:
        """The batch's rows grouped by their env's (observation, action) width: ``(rows,
        obs_width, act_width)`` per group. No row is padded beyond what its own env needs (the
        paper's point against padding): a Humanoid among the envs widens only its own rows."""
        widths = self.widths[env]  # (B, 2)
        keys, group_of = torch.unique(widths, dim=0, return_inverse=True)
        return [
            (torch.nonzero(group_of == k).squeeze(1), int(keys[k, 0]), int(keys[k, 1]))
            for k in range(len(keys))
        ]

    def update_on(self, batch: Batch) -> dict[str, torch.Tensor]:
        groups = self._groups(
            [
                batch.rows(rows, obs_width, act_width)
                for rows, obs_width, act_width in self.width_groups(batch.env_idx)
            ]
        )
        cfg = self.cfg
        self.opt.param_groups[0]["lr"] = cosine_decay(cfg.actor_lr, self.step, self.decay_steps)
        total, metrics = self.train_module(groups, self.loss_scale)
        # param groups: actor, critics, value: a per-network clip
        self.opt_min.minimize(total, cfg.max_grad_norm)
        with torch.no_grad():
            torch._foreach_lerp_(*self._polyak, cfg.tau)
        self.step += 1
        return {f"losses/{k}": v for k, v in metrics.items()}

    @torch.no_grad()
    def _groups(self, parts: Sequence[Batch]) -> list[WidthGroup]:
        """Each width group's normalised inputs and TD targets (min over the target critics;
        V of the next state without dropout: a target is an estimate, not a training pass);
        each target network runs once over all the groups."""
        rows, next_rows = [], []
        for batch in parts:
            env = batch.env_idx
            obs, obs_mask = self._normalize(batch.observations, env)
            next_obs, _ = self._normalize(batch.next_observations, env)
            act_mask = self.act_masks[env, : batch.actions.shape[1]]  # (B, A)
            actions = batch.actions * act_mask
            if bool(obs_mask.all()) and bool(act_mask.all()):  # unpadded: skip the masking
                obs_mask, act_mask = None, None
            rows.append(Rows(obs, obs_mask, env, actions, act_mask))
            next_rows.append(Rows(next_obs, obs_mask, env))
        target_q = self.nets.q_values(self.critic_target, rows).min(0).values  # (B,)
        value = self.nets.value
        value.eval()
        next_v = value.segments(next_rows)  # (B,)
        value.train(self.nets.training)
        env = torch.cat([batch.env_idx for batch in parts])  # (B,)
        rewards = torch.cat([batch.rewards for batch in parts]) * self.reward_scale[env]
        terminations = torch.cat([batch.terminations for batch in parts])  # (B,)
        target = rewards + self.cfg.gamma * (1.0 - terminations) * next_v  # (B,)
        sizes = [len(batch.env_idx) for batch in parts]
        return [
            (*r, q, t)
            for r, q, t in zip(rows, target_q.split(sizes), target.split(sizes), strict=True)
        ]

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, env_idx: torch.Tensor, *, deterministic: bool = True
    ) -> torch.Tensor:
        """Padded raw observations (any width up to the largest env's) → ``(n, act_max)``
        actions in [-1, 1], zero on each env's padded dims."""
        obs, env_idx = obs.to(self.device), env_idx.to(self.device)
        x, obs_mask = self._normalize(obs, env_idx)
        act_mask = self.act_masks[env_idx]
        actor = self.nets.actor
        was_training = actor.training
        actor.eval()
        mean, log_std = actor.gaussian(x, obs_mask, env_idx, act_mask)
        actor.train(was_training)
        mean = torch.tanh(mean) * act_mask  # (n, A)
        if deterministic:
            return mean
        noise = log_std.exp() * torch.randn_like(mean)
        return (mean + noise).clamp(-1.0, 1.0) * act_mask

    def modules(self) -> dict[str, nn.Module | torch.optim.Optimizer]:
        """Every stateful object, so checkpoints forget nothing."""
        return {
            "nets": self.nets,
            "critic_target": self.critic_target,
            "opt": self.opt,
            "normalizer": self.normalizer,
        }

    def state_dict(self) -> dict:
        tensors = {"reward_scale": self.reward_scale}
        return agent_state(
            self.modules(), tensors, step=self.step, actor_lr_decay_steps=self.decay_steps
        )

    def load_state_dict(self, state: dict) -> None:
        check_schedule_length(state, self.decay_steps, "actor_lr_decay_steps")
        load_agent_state(self.modules(), {"reward_scale": self.reward_scale}, state)
        self.step = int(state["step"])
