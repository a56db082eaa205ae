"""Dataset ids (Minari style ``genworld/<env>/<quality>-v0``) and quality definitions.

Qualities of the MuJoCo robots and task envs follow D4RL (PROTOCOL.md): random, medium,
medium-replay, expert, medium-expert. DeepMind Control tasks and their scenarios have MrCoM's
(seed 002, App. C.2): random, medium, mixed (the behaviour policy's snapshots over its whole
training), expert; and WPT's reward-free ``exploration`` (random play and an exploration
agent's snapshots; rewards stored, not meant to be learnt from). A scenario's env is written as
its slug in ids (``genworld/dmc-cheetah-run_torso1p2/medium-v0``); both forms are accepted.
Meta-World tasks have WPT's ``scripted-noise`` (:mod:`genworld.data.metaworld_build`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from genworld.envs.dmc import DMC_TASKS
from genworld.envs.metaworld import MW_TASKS
from genworld.envs.registry import ENV_SPECS, get_env_spec
from genworld.envs.scenarios import slug, unslug
from genworld.errors import GenworldError
from genworld.types import EnvSpec

NAMESPACE = "genworld"
VERSION = 0
QUALITIES = ("random", "medium", "medium-replay", "expert", "medium-expert")
SCRIPTED_NOISE = "scripted-noise"
MW_QUALITIES = (SCRIPTED_NOISE,)
"""Qualities of Meta-World tasks: scripted policies with action noise (data/metaworld_build.py)."""
DMC_QUALITIES = ("random", "medium", "mixed", "expert", "exploration")
"""Qualities of DeepMind Control tasks and scenarios (module docstring)."""
ALL_QUALITIES = tuple(dict.fromkeys([*QUALITIES, *DMC_QUALITIES, *MW_QUALITIES]))
DEFAULT_STEPS = {
    "random": 1_000_000,
    "medium": 1_000_000,
    "medium-replay": None,  # the whole replay buffer up to medium (size of the original buffer)
    "expert": 1_000_000,
    "medium-expert": 2_000_000,
    "mixed": 1_000_000,
    "exploration": 1_000_000,
}


def qualities_for(env: str) -> tuple[str, ...]:
    """The qualities a dataset of ``env`` can have."""
    if env.startswith("mw-"):
        return MW_QUALITIES
    return DMC_QUALITIES if env.startswith("dmc-") else QUALITIES


_SHORT = re.compile(r"^(?P<env>[a-z0-9]+)-(?P<quality>[a-z-]+?)(?:-v(?P<version>\d+))?$")
_FULL = re.compile(r"^(?P<ns>[\w-]+)/(?P<env>[\w-]+)/(?P<quality>[\w-]+)-v(?P<version>\d+)$")


@dataclass(frozen=True)
class DatasetId:
    env: str
    quality: str
    namespace: str = NAMESPACE
    version: int = VERSION

    @property
    def spec(self) -> EnvSpec:
        return get_env_spec(self.env)

    def __str__(self) -> str:
        return f"{self.namespace}/{slug(self.env)}/{self.quality}-v{self.version}"


def _parse_short(text: str) -> DatasetId:
    """``ENV-QUALITY[-vN]``; ENV may itself contain hyphens (task envs: ``cheetah-vel-7``), so
    the known quality suffix decides where the env name ends."""
    version = 0
    match = re.match(r"^(?P<rest>.+)-v(?P<version>\d+)$", text)
    if match:
        text, version = match["rest"], int(match["version"])
    for quality in sorted(ALL_QUALITIES, key=len, reverse=True):
        if text.endswith(f"-{quality}") and len(text) > len(quality) + 1:
            return DatasetId(unslug(text[: -len(quality) - 1]), quality, NAMESPACE, version)
    match = _SHORT.match(text)
    if not match:
        raise GenworldError(
            f"cannot parse dataset id {text!r}: use ENV-QUALITY (hopper-medium) or "
            "genworld/ENV/QUALITY-v0"
        )
    return DatasetId(match["env"], match["quality"], NAMESPACE, version)


def parse_dataset_id(text: str) -> DatasetId:
    """Accept ``hopper-medium``, ``hopper-medium-v0`` or ``genworld/hopper/medium-v0``."""
    text = text.strip()
    match = _FULL.match(text)
    if match:
        env = unslug(match["env"])
        dataset_id = DatasetId(env, match["quality"], match["ns"], int(match["version"]))
    else:
        dataset_id = _parse_short(text)
    if dataset_id.namespace == NAMESPACE:
        get_env_spec(dataset_id.env)
        allowed = qualities_for(dataset_id.env)
        if dataset_id.quality not in allowed:
            raise GenworldError(
                f"unknown dataset quality {dataset_id.quality!r} for {dataset_id.env}: choose "
                f"one of {', '.join(allowed)}"
            )
    return dataset_id


def all_dataset_ids() -> list[DatasetId]:
    """The D4RL-style set: every robot × every quality (``genworld data build --all``)."""
    return [DatasetId(env, quality) for env in ENV_SPECS for quality in QUALITIES]


def listed_dataset_ids() -> list[DatasetId]:
    """What ``genworld data list`` shows: the D4RL-style set, then every DeepMind Control task
    × every quality (random ones build without a policy; the others name the policy they need),
    then every Meta-World task's scripted-noise data."""
    dmc = [DatasetId(t, q) for t in DMC_TASKS for q in DMC_QUALITIES]
    return [*all_dataset_ids(), *dmc, *(DatasetId(f"mw-{t}", SCRIPTED_NOISE) for t in MW_TASKS)]


def size_warning(
    dataset_id: str, steps: int, expected: int, scale: str, exact: bool = False
) -> str:
    """A one-line warning when the dataset ``dataset_id`` (built earlier, at whatever size) has
    fewer than the ``expected`` transitions of the ``scale`` that is about to train on it (with
    ``exact``: other than ``expected``, for protocols that state the size), with the command
    that rebuilds it at that size; '' when it fits."""
    if steps == expected or (steps > expected and not exact):
        return ""
    than = "fewer than" if steps < expected else "not"
    return (
        f"{dataset_id} has {steps:,} transitions, {than} the {expected:,} the {scale} scale "
        f"expects (results on it are not {scale}-scale results); rebuild it with `genworld data "
        f"build {dataset_id} --force --steps {expected}`"
    )
