"""MOReL: policy learning in a pessimistic MDP with an absorbing HALT state (Kidambi et al. 2020,
"MOReL: Model-Based Offline Reinforcement Learning").

An ensemble of dynamics models is trained on the cell's data; the unknown state-action detector
(USAD) flags ``(s, a)`` as unknown when the ensemble's disagreement
``disc(s, a) = max_{i,j} ||f_i(s, a) − f_j(s, a)||`` (mean next-state predictions) exceeds a
threshold set from the data; such a transition goes to HALT: it is terminal and pays ``−κ``. The
policy is optimised inside this pessimistic MDP.

Reference implementation: mjrl (the authors' code), commit-pinned:
- threshold: https://github.com/aravindr93/mjrl/blob/5b0ce8b9869e509b43aace172186e3a64667b05e/projects/morel/run_morel.py
  (``delta`` = max pairwise disagreement per dataset transition; ``truncate_lim =
  pessimism_coef · max(delta)``);
- HALT: https://github.com/aravindr93/mjrl/blob/8fa5168788e0a89c0d6095284d014dafbba3fd79/mjrl/algos/mbrl/model_based_npg.py
  (a path is cut at its first transition with disagreement ``> truncate_lim``, which becomes
  terminal and gets ``truncate_reward`` added);
- ``pessimism_coef = 3.0`` in its D4RL config
  (https://github.com/aravindr93/mjrl/blob/5ff1a07ce6e591fc182e001d73365427f647a6e4/projects/morel/configs/d4rl_hopper_medium.txt;
  0.5 in its Hopper-v3 example).

κ: the paper's pessimistic MDP pays ``−κ`` at HALT with κ large (its analysis takes κ of the
order of the value range); the authors' D4RL config adds ``truncate_reward = 0`` (the lost future
value is the only penalty); we default to κ = 100, the HALT reward of the PyTorch port
https://github.com/SwapnilPande/MOReL/blob/5594d6e5be542d401fc9bd4fd8dcd4a64bdf8f35/morel/fake_env.py
(``uncertain_penalty = -100``). All three (κ, the pessimism coefficient, the quantile) are
configurable.

Multi-env: one world model over all envs of the cell (one ensemble per env inside it), one USAD
threshold per env (from that env's data), one SAC per env (``MBPOConfig.policy = per_env``, as
TGW and MOPO). Mini: TGW's policy learner exactly (``algos.mopo.MINI``).

Deviations:
- policy optimiser: SAC on MBPO-style branched rollouts (``horizon`` steps from dataset states,
  ``real_ratio`` real data; :mod:`genworld.algos.mbpo`) instead of NPG on full-length model
  rollouts from initial states — the same machinery as MOPO and TGW, so the three differ only in
  how they treat model uncertainty;
- the HALT transition's reward is ``−κ`` (the paper's ``r_P``), not ``r̂ + truncate_reward`` as in
  mjrl; HALT ends the rollout (terminal, no bootstrap) instead of an absorbing state that keeps
  paying ``−κ``;
- the models are the MOPO-style probabilistic ensemble (7 members, 4×200 Swish, Gaussian) rather
  than 4 deterministic 2×512 ReLU MLPs; the disagreement uses their means over all members, in
  raw observation units, and the imagined next state is a sample from a random elite;
- the threshold can be a quantile of the data's disagreement (``threshold_quantile``; 1.0 = the
  reference's max).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from genworld.algos.mbpo import MBPOAgent, MBPOConfig
from genworld.algos.mopo import PRESETS as MOPO_PRESETS
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.algos.sac import SACConfig
from genworld.data.multi_env import MultiEnvDataset
from genworld.errors import GenworldError
from genworld.world_models.base import WMStep

# SAC as in MOPO's reference (OfflineRL-Kit run_mopo.py): MOReL's own optimiser is NPG.
MOREL_SAC = SACConfig(actor_lr=1e-4, critic_lr=3e-4, alpha_lr=1e-4)
THRESHOLD_CHUNK = 8_192
"""Transitions per forward pass when measuring the data's disagreement."""


@dataclass(frozen=True)
class MOReLConfig:
    kappa: float = 100.0
    """HALT reward is −κ (paper: κ large; mjrl D4RL config: 0; SwapnilPande/MOReL: 100)."""
    pessimism: float = 3.0
    """Threshold = pessimism × the data's disagreement statistic (mjrl pessimism_coef: 3.0)."""
    threshold_quantile: float = 1.0
    """Quantile of the data's disagreement the threshold scales (1.0 = max, as mjrl)."""
    usad_members: str = "all"
    """Members compared by USAD: all (MOReL: every model) or elites."""
    mbpo: MBPOConfig = field(
        default_factory=lambda: MBPOConfig(
            beta=0.0, rollout_every=1_000, rollout_batch=50_000, sac=MOREL_SAC
        )
    )
    """Offline MBPO with MOPO's rollout settings (fewer steps where HALT comes first). Its
    ``beta`` stays 0: MOReL's pessimism is the HALT state, not a reward penalty."""

    def validate(self) -> None:
        if self.kappa < 0 or self.pessimism <= 0:
            raise GenworldError(
                f"MOReL needs kappa ≥ 0 and pessimism > 0, got {self.kappa}, {self.pessimism}"
            )
        if not 0 < self.threshold_quantile <= 1:
            raise GenworldError(
                f"threshold_quantile must be in (0, 1], got {self.threshold_quantile}"
            )
        if self.usad_members not in ("all", "elites"):
            raise GenworldError(f"usad_members={self.usad_members!r}: choose all or elites")
        if self.mbpo.beta != 0:
            raise GenworldError(
                f"MOReL's mbpo.beta must be 0 (its pessimism is the HALT reward −kappa), got "
                f"{self.mbpo.beta}: set kappa or pessimism instead"
            )
        self.mbpo.validate()


PRESETS = MOPO_PRESETS
"""The same rollout presets as MOPO (and the same ensemble: the "mlp" world model)."""


def build(ctx: AlgoContext) -> MBPOAgent:
    """The MLP ensemble on the cell's data, USAD thresholds from it, then SAC with HALT."""
    model = ctx.world_model("mlp")
    cfg = resolve_config(MOReLConfig, PRESETS, ctx, skip=("world_model",))
    thresholds = usad_thresholds(
        model, ctx.dataset, cfg.pessimism, cfg.threshold_quantile, cfg.usad_members
    )
    halt = HaltOnUnknown(model, thresholds, cfg.kappa, cfg.usad_members)
    return MBPOAgent(model, ctx.dataset, cfg.mbpo, ctx.device, step_hook=halt)


@torch.no_grad()
def usad_thresholds(
    model, dataset: MultiEnvDataset, pessimism: float, quantile: float, members: str
) -> torch.Tensor:
    """Per env ``(K,)``: ``pessimism × quantile_q`` of the disagreement over its transitions."""
    thresholds = []
    for k, data in enumerate(dataset.envs):
        d, a = data.spec.obs_dim, data.spec.act_dim
        values = []
        for start in range(0, len(data), THRESHOLD_CHUNK):
            obs = data.observations[start : start + THRESHOLD_CHUNK]  # (n, d)
            padded_obs = torch.zeros(len(obs), dataset.obs_max)
            padded_act = torch.zeros(len(obs), dataset.act_max)
            padded_obs[:, :d] = obs
            padded_act[:, :a] = data.actions[start : start + THRESHOLD_CHUNK]
            env_idx = torch.full((len(obs),), k, dtype=torch.int64)
            values.append(model.disagreement(padded_obs, padded_act, env_idx, members))
        thresholds.append(pessimism * torch.quantile(torch.cat(values), quantile))
    return torch.stack(thresholds)


class HaltOnUnknown:
    """MBPO rollout hook: USAD flags a transition whose disagreement exceeds its env's
    threshold; it becomes terminal (HALT) with reward −κ, so that rollout stops there."""

    def __init__(self, model, thresholds: torch.Tensor, kappa: float, members: str = "all"):
        self.model, self.thresholds, self.kappa, self.members = model, thresholds, kappa, members

    def unknown(
        self, observations: torch.Tensor, actions: torch.Tensor, env_idx: torch.Tensor
    ) -> torch.Tensor:
        """``(B,) bool``: disagreement > threshold of the row's env."""
        value = self.model.disagreement(observations, actions, env_idx, self.members)  # (B,)
        return value > self.thresholds[env_idx]

    def __call__(
        self,
        observations: torch.Tensor,
        actions: torch.Tensor,
        env_idx: torch.Tensor,
        step: WMStep,
        rewards: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        halt = self.unknown(observations, actions, env_idx)  # (B,)
        rewards = torch.where(halt, torch.full_like(rewards, -self.kappa), rewards)
        return rewards, step.terminations | halt
