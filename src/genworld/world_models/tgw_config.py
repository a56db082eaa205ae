"""TGW's configuration: the sizes and choices of one TGW world model (world_models/tgw.py)."""

from __future__ import annotations

from dataclasses import dataclass

from genworld.errors import GenworldError


@dataclass(frozen=True)
class TGWConfig:
    """Defaults: the paper gives none; we take its group's follow-up (seed 002, App. D):
    embedding 128, prompt length 20, 1 layer, 3 heads, latent 128, lr 1e-4, batch 32, N=5."""

    ensemble_size: int = 5
    """N members (different initialisations), trained together, vectorised."""
    context_len: int = 20
    """M: prompt steps."""
    d_model: int = 128
    """Token / deterministic-state width."""
    n_layers: int = 1
    """Layers of each member's causal transformer (the TransRSSM; seed 002: 1)."""
    n_heads: int = 3
    """Attention heads; width per head = ceil(d_model / n_heads) (128/3 → 43, inner 129)."""
    stoch_dim: int = 128
    """Stochastic state u width."""
    hidden: int = 256
    """Hidden width of the decoder, reward and termination MLPs (ours)."""
    loss: str = "nll"
    """nll (Gaussian negative log-likelihood, eq. 8) or mse."""
    termination: str = "registry"
    """registry (exact functions of the EnvSpec registry) or learned (a BCE head)."""
    intrinsic: str = "reward"
    """reward (default, ours): std of the members' reward predictions (the env's reward units);
    state: Var of deterministic states across members (eq. 4); observation: Var of the
    members' next-observation predictions (normalised units, mean over dims)."""
    use_prompt: bool = True
    """False = ablation 'w/o prompt': a context of the current step only."""
    use_stochastic: bool = True
    """False = ablation 'w/o RSSM': no stochastic state to infer or sample: u is the prior's
    mean, with no posterior and no KL (observation noise is ``sample_obs_noise``'s)."""
    sample_obs_noise: bool = True
    """Imagined next observations are drawn from the observation head's Gaussian (True) or are
    its mean (False); with ``loss="mse"`` there is no variance to draw from."""
    kl_dyn: float = 0.5
    """Weight of KL(sg(posterior) || prior), which trains the prior (DreamerV3's 0.5; the paper,
    built on PlaNet's RSSM, gives no value)."""
    kl_rep: float = 0.1
    """Weight of KL(posterior || sg(prior)), which trains the posterior (DreamerV3's 0.1)."""
    free_nats: float = 1.0
    """Each KL term is clipped below at this many nats (DreamerV3's free bits: 1)."""

    def validate(self) -> None:
        checks = {
            "ensemble_size": self.ensemble_size >= 1,
            "context_len": self.context_len >= 1,
            "d_model": self.d_model > 0,
            "n_heads": self.n_heads >= 1,
            "n_layers": self.n_layers >= 1,
            "stoch_dim": self.stoch_dim >= 1,
            "hidden": self.hidden > 0,
            "loss": self.loss in ("nll", "mse"),
            "termination": self.termination in ("registry", "learned"),
            "intrinsic": self.intrinsic in ("state", "observation", "reward"),
            "kl_dyn": self.kl_dyn >= 0,
            "kl_rep": self.kl_rep >= 0,
            "free_nats": self.free_nats >= 0,
        }
        for name, ok in checks.items():
            if not ok:
                raise GenworldError(
                    f"TGWConfig.{name}={getattr(self, name)!r} is invalid (ensemble_size/context_len/"
                    "n_layers/n_heads ≥ 1, loss nll|mse, kl_dyn/kl_rep/free_nats ≥ 0, "
                    "termination registry|learned, intrinsic state|observation|reward)"
                )

    @property
    def effective_context(self) -> int:
        return self.context_len if self.use_prompt else 1


__all__ = ["TGWConfig"]
