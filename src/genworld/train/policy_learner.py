"""The SAC settings a study gives the policy learner of every model-based cell: fields
``policy_init_alpha`` (SAC's initial temperature) and ``policy_bc_alpha`` (the RL term's weight
against the mini policy learner's behaviour term) of the unseen-task and scenario studies."""

from __future__ import annotations

from typing import Any

from genworld.errors import GenworldError


def check_policy_learner(init_alpha: float, bc_alpha: float) -> None:
    """A study's SAC settings for its model-based cells: ``policy_init_alpha`` (the initial
    temperature) positive, ``policy_bc_alpha`` (the RL term's weight) ≥ 0."""
    if init_alpha <= 0:
        raise GenworldError(
            f"policy_init_alpha must be positive (SAC's initial temperature), got {init_alpha}"
        )
    if bc_alpha < 0:
        raise GenworldError(f"policy_bc_alpha must be ≥ 0 (0 = plain SAC), got {bc_alpha}")


def policy_learner_overrides(cfg) -> dict[str, Any]:
    """A study's ``policy_init_alpha`` and ``policy_bc_alpha`` as an MBPO agent's overrides."""
    return {"mbpo": {"sac": {"init_alpha": cfg.policy_init_alpha, "bc_alpha": cfg.policy_bc_alpha}}}


__all__ = ["check_policy_learner", "policy_learner_overrides"]
