"""Reward-free world-model pre-training (WPT, seed 004, §3.2 eq. 1): ``genworld pretrain
world-model --scale tiny|mini|full --out DIR``.

The RSSM (world_models/rssm.py) without its reward head, fitted on reward-free, non-expert data
of several embodiments: DeepMind Control ``exploration`` datasets (random play, then snapshots of
a curiosity explorer, as WPT's unsupervised-RL data) and Meta-World ``scripted-noise`` datasets
(scripted policies with Gaussian action noise, WPT's noisy agents). The rewards stored in them
are never read. A pre-training run is a ``genworld train world-model`` run with this preset: the
same config file, loop, checkpoints and resume, and ``genworld eval world-model`` reads it.
"""

from __future__ import annotations

from typing import Any

from genworld.config import check_scale, merge
from genworld.envs.metaworld import MW_TASKS
from genworld.errors import GenworldError
from genworld.train.world_model import WorldModelTrainConfig
from genworld.train.world_model import config_for_scale as wm_config

PRETRAIN_DATASETS: dict[str, tuple[str, ...]] = {
    "tiny": (
        "dmc-cheetah-run-exploration",
        "mw-reach-v3-scripted-noise",
        "mw-push-v3-scripted-noise",
    ),
    "mini": (
        "dmc-cheetah-run-exploration",
        "dmc-walker-walk-exploration",
        "mw-reach-v3-scripted-noise",
        "mw-push-v3-scripted-noise",
        "mw-pick-place-v3-scripted-noise",
        "mw-door-open-v3-scripted-noise",
        "mw-drawer-open-v3-scripted-noise",
    ),
    # WPT §4.1: unsupervised-RL data of the DMC embodiments and noisy data of all 50 Meta-World
    # tasks
    "full": (
        "dmc-cheetah-run-exploration",
        "dmc-walker-walk-exploration",
        "dmc-hopper-hop-exploration",
        "dmc-quadruped-walk-exploration",
        *(f"mw-{task}-scripted-noise" for task in MW_TASKS),
    ),
}
"""The ``datasets`` field's default at each scale (``--datasets`` replaces it): at mini, the two
DMC bodies of the study's tasks (cheetah and walker, both with 6 action dims, so retrieval must
tell them apart) and five Meta-World tasks."""
PRETRAIN_STEPS = {"mini": 18_000}
"""Pre-training updates where the RSSM's preset gives too few: at mini, 3.2× a mini fine-tuning
run's world-model updates, WPT's ratio (200k pre-training updates, about 62k in fine-tuning);
other scales: the RSSM preset's."""

FIXED_FIELDS = ("model", "tgw", "mlp", "mrcom", "rssm.reward_head")
"""Fields of ``WorldModelTrainConfig`` that pre-training sets itself (no option for them)."""


def config_for_scale(scale: str, **overrides: Any) -> WorldModelTrainConfig:
    """The world-model training config of pre-training at ``scale``: the RSSM's preset, the
    scale's reward-free datasets, no reward head; then ``overrides`` (None = keep)."""
    check_scale(scale)
    preset = {"model": "rssm", "datasets": PRETRAIN_DATASETS[scale], "rssm": {"reward_head": False}}
    if scale in PRETRAIN_STEPS:
        preset["steps"] = PRETRAIN_STEPS[scale]
    top = {k: v for k, v in overrides.items() if v is not None}
    cfg = wm_config(scale, **merge(preset, top))
    check_reward_free(cfg)
    return cfg


def check_reward_free(cfg: WorldModelTrainConfig) -> None:
    """Pre-training is eq. 1: the RSSM, reconstruction and KL only."""
    if cfg.model != "rssm":
        raise GenworldError(
            f"pre-training trains the RSSM (model rssm), not {cfg.model!r}; train other models "
            "with `genworld train world-model`"
        )
    if cfg.rssm.reward_head:
        raise GenworldError(
            "pre-training is reward-free: rssm.reward_head must be false (fine-tuning adds it)"
        )


__all__ = [
    "FIXED_FIELDS",
    "PRETRAIN_DATASETS",
    "PRETRAIN_STEPS",
    "check_reward_free",
    "config_for_scale",
]
