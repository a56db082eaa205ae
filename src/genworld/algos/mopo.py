"""MOPO: offline MBPO with an uncertainty-penalised reward (Yu et al. 2020, "MOPO: Model-based
Offline Policy Optimization", Algorithm 2).

A probabilistic MLP ensemble (``world_models/ensemble_mlp.py``: 7 members, 5 elites, 4×200
Swish, Gaussian over [Δobs, reward]) is trained on the cell's data; SAC then learns on a
``real_ratio`` mix of real transitions and ``horizon``-step rollouts branched from dataset states,
with the penalised reward ``r̃ = r̂ − λ·u(s, a)``, ``u = max_i ||σ_i(s, a)||`` (the largest norm
of a member's predicted std, the paper's "max aleatoric" estimator, §4.3 / App. C).

Reference implementation: OfflineRL-Kit, commit-pinned:
- hyper-parameters: https://github.com/yihaosun1124/OfflineRL-Kit/blob/251bc501c1e7de2c12e752fce65c975e347f8f1b/run_example/run_mopo.py
  (actor lr 1e-4, critic lr 3e-4, alpha lr 1e-4, auto-α with target −|A|, 256×256, γ 0.99,
  τ 0.005, batch 256, rollout every 1000 updates, 50k start states, 5 retained rollouts,
  real ratio 0.05, 7 members / 5 elites);
- the penalty: https://github.com/yihaosun1124/OfflineRL-Kit/blob/14e095a4ce42b691c8e4d58b2191d8943430a27c/offlinerlkit/dynamics/ensemble_dynamics.py
  (``penalty = amax(norm(std, axis=2), axis=0)``; ``reward − penalty_coef · penalty``).

λ and h are tuned per dataset in the paper. The official configs
(https://github.com/tianheyu927/mopo/tree/3d632fc82fb585281a6bd79d79e91d3bc34293a8/examples/config/d4rl)
use (h, λ): halfcheetah random (5, 0.5), medium (1, 1.0), medium-replay (5, 1.0),
medium-expert (5, 5.0); hopper random (5, 1.0), medium (5, 5.0), medium-replay (5, 1.0),
medium-expert (5, 1.0); walker2d random (1, 1.0), medium (5, 5.0), medium-replay (1, 1.0),
medium-expert (1, 2.0). Our default is λ = 1.0 (the most common value there) and h = 5; set them
per dataset with the ``beta`` / ``horizon`` overrides (``mopo-beta=5`` in ``genworld table``).

Multi-env: one world model over all envs of the cell (one ensemble per env inside it, so the envs
share no model parameters) and one SAC per env (``MBPOConfig.policy = per_env``, as TGW), each
updated on its own env's rows of a batch.

Deviations:
- the model's std (hence u) is in per-env normalised target units (Δobs / obs std, reward / reward
  std), not raw units as in OfflineRL-Kit: one λ means the same across envs, but λ values are not
  interchangeable with the reference's;
- no cosine learning-rate schedule on the actor (OfflineRL-Kit anneals it over 3000 epochs);
- world model: a fixed number of steps and elites chosen on a held-out split at each checkpoint
  (MOPO trains to convergence on held-out loss, see ``ensemble_mlp.py``);
- mini: TGW's mini policy learner exactly (:data:`MINI`: MBPO's default rollouts, 5k start
  states every 250 updates at horizon 5; SAC's default learning rates, 3e-4, instead of the
  reference's 1e-4 for the actor and α, which are tuned for 1M updates, not 10k; and
  ``algos.tgw.MINI_POLICY``: half real data per batch, a TD3+BC-form behaviour term), so a mini
  table compares world models, not policy learners.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from genworld.algos.mbpo import MBPOAgent, MBPOConfig
from genworld.algos.registry import AlgoContext, resolve_config
from genworld.algos.sac import SACConfig
from genworld.algos.tgw import AGENT_PRESETS, MINI_POLICY

# OfflineRL-Kit run_mopo.py's SAC (see the module docstring).
MOPO_SAC = SACConfig(actor_lr=1e-4, critic_lr=3e-4, alpha_lr=1e-4)


@dataclass(frozen=True)
class MOPOConfig:
    mbpo: MBPOConfig = field(
        default_factory=lambda: MBPOConfig(rollout_every=1_000, rollout_batch=50_000, sac=MOPO_SAC)
    )
    """Offline MBPO with MOPO's settings: ``beta`` is MOPO's λ, the uncertainty-penalty weight
    (paper: tuned per dataset in {0.5, 1, 2, 5}; ``mopo-beta=<λ>`` variants set it); rollouts
    every 1,000 updates (OfflineRL-Kit rollout_freq) of 50k start states (MOPO), horizon h = 5
    (MOPO: 1 or 5 per dataset), real ratio 0.05."""

    def validate(self) -> None:
        self.mbpo.validate()


_MBPO, _SAC = MBPOConfig(), SACConfig()
MINI: dict = {
    "mbpo": {
        **{k: getattr(_MBPO, k) for k in ("rollout_every", "rollout_batch", "horizon")},
        **MINI_POLICY,
        "sac": {
            **{k: getattr(_SAC, k) for k in ("actor_lr", "critic_lr", "alpha_lr")},
            **MINI_POLICY["sac"],
        },
    }
}
"""MOPO's and MOReL's mini preset: TGW's mini policy learner (MBPO's and SAC's defaults where
MOPO's reference differs, then ``MINI_POLICY``)."""

PRESETS: dict[str, dict] = {
    "tiny": AGENT_PRESETS["tiny"],  # the tiny policy learner of every model-based method
    "mini": MINI,
    "full": {},
}


def build(ctx: AlgoContext) -> MBPOAgent:
    """The MLP ensemble on the cell's data, then SAC on λ-penalised rollouts in it."""
    model = ctx.world_model("mlp")
    cfg = resolve_config(MOPOConfig, PRESETS, ctx, skip=("world_model",))
    return MBPOAgent(model, ctx.dataset, cfg.mbpo, ctx.device)
