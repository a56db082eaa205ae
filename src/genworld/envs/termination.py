"""Termination functions computed from next observations, exact to Gymnasium MuJoCo v5.

Each function takes ``next_observations`` of shape ``(N, obs_dim)`` and returns a bool array
``(N,)``. They mirror ``is_healthy`` of gymnasium 1.0 ``hopper_v5.py``, ``walker2d_v5.py`` and
``ant_v5.py`` with default arguments (``exclude_current_positions_from_observation=True``) and are
tested against the simulator's own ``terminated`` flag on thousands of real states
(tests/test_termination.py).

One unavoidable caveat (hopper): the simulator checks ``|qvel| < 100`` on the raw velocities, while
the observation holds velocities clipped to ±10, so a state with a raw joint velocity beyond ±100
is not visible in the observation. No such state occurred in our tests.
"""

from __future__ import annotations

import numpy as np

# gymnasium 1.0 hopper_v5 defaults
HOPPER_HEALTHY_STATE_RANGE = (-100.0, 100.0)
HOPPER_HEALTHY_Z_RANGE = (0.7, float("inf"))
HOPPER_HEALTHY_ANGLE_RANGE = (-0.2, 0.2)
# gymnasium 1.0 walker2d_v5 defaults
WALKER_HEALTHY_Z_RANGE = (0.8, 2.0)
WALKER_HEALTHY_ANGLE_RANGE = (-1.0, 1.0)
# gymnasium 1.0 ant_v5 defaults (inclusive bounds there)
ANT_HEALTHY_Z_RANGE = (0.2, 1.0)


def _open_interval(x: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    return (bounds[0] < x) & (x < bounds[1])


def hopper_termination(next_observations: np.ndarray) -> np.ndarray:
    """obs = [z, angle, qpos[3:], clip(qvel, ±10)]; healthy: state, z and angle in range."""
    obs = np.asarray(next_observations)
    z, angle, state = obs[:, 0], obs[:, 1], obs[:, 1:]
    healthy = (
        np.all(_open_interval(state, HOPPER_HEALTHY_STATE_RANGE), axis=1)
        & _open_interval(z, HOPPER_HEALTHY_Z_RANGE)
        & _open_interval(angle, HOPPER_HEALTHY_ANGLE_RANGE)
    )
    return ~healthy


def walker2d_termination(next_observations: np.ndarray) -> np.ndarray:
    """obs = [z, angle, ...]; healthy: z in (0.8, 2.0) and angle in (-1, 1)."""
    obs = np.asarray(next_observations)
    healthy = _open_interval(obs[:, 0], WALKER_HEALTHY_Z_RANGE) & _open_interval(
        obs[:, 1], WALKER_HEALTHY_ANGLE_RANGE
    )
    return ~healthy


def ant_termination(next_observations: np.ndarray) -> np.ndarray:
    """obs = [z, ...]; healthy: every value finite and 0.2 <= z <= 1.0 (inclusive)."""
    obs = np.asarray(next_observations)
    z = obs[:, 0]
    healthy = (
        np.all(np.isfinite(obs), axis=1)
        & (ANT_HEALTHY_Z_RANGE[0] <= z)
        & (z <= ANT_HEALTHY_Z_RANGE[1])
    )
    return ~healthy


def never_terminates(next_observations: np.ndarray) -> np.ndarray:
    """HalfCheetah never terminates; episodes end by truncation only."""
    return np.zeros(len(next_observations), dtype=bool)
