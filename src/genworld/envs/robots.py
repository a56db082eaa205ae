"""The robots: one EnvSpec per Gymnasium MuJoCo v5 robot, under its exact genworld name.

Reference scores: D4RL ``gym_mujoco/__init__.py`` (REF_MIN_SCORE / REF_MAX_SCORE), copied in
docs/PROTOCOL.md. They are D4RL's numbers for the v2/mujoco-py environments; we evaluate in
Gymnasium v5, so our normalized scores are *D4RL-style*.

Observation variants: every env uses Gymnasium v5 defaults except **ant**, which uses
``include_cfrc_ext_in_observation=False`` (27-dim observation, as in most offline-RL code; the
v5 default is 105-dim with contact forces).
"""

from __future__ import annotations

from genworld.envs.termination import (
    ant_termination,
    hopper_termination,
    never_terminates,
    walker2d_termination,
)
from genworld.types import EnvSpec

ENV_SPECS: dict[str, EnvSpec] = {
    "halfcheetah": EnvSpec(
        name="halfcheetah",
        gym_id="HalfCheetah-v5",
        obs_dim=17,
        act_dim=6,
        max_episode_steps=1000,
        ref_min_score=-280.178953,
        ref_max_score=12135.0,
        termination=never_terminates,
        medium_band=(38.0, 48.0),
        expert_target=75.0,
    ),
    "hopper": EnvSpec(
        name="hopper",
        gym_id="Hopper-v5",
        obs_dim=11,
        act_dim=3,
        max_episode_steps=1000,
        ref_min_score=-20.272305,
        ref_max_score=3234.3,
        termination=hopper_termination,
        medium_band=(45.0, 65.0),
    ),
    "walker2d": EnvSpec(
        name="walker2d",
        gym_id="Walker2d-v5",
        obs_dim=17,
        act_dim=6,
        max_episode_steps=1000,
        ref_min_score=1.629008,
        ref_max_score=4592.3,
        termination=walker2d_termination,
        medium_band=(60.0, 85.0),
    ),
    "ant": EnvSpec(
        name="ant",
        gym_id="Ant-v5",
        obs_dim=27,
        act_dim=8,
        max_episode_steps=1000,
        ref_min_score=-325.6,
        ref_max_score=3879.7,
        termination=ant_termination,
        make_kwargs={"include_cfrc_ext_in_observation": False},
        medium_band=(70.0, 95.0),
    ),
}
