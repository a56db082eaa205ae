"""Episode: one trajectory, validated on creation and on load (STYLE §5).

Shapes follow Minari: ``observations`` has T+1 rows, every other field T rows. A termination may
only be the last step; a truncation is an episode end that is *not* a terminal (DreamerV3's
``is_terminal`` vs ``is_last``) and the two are never both true.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from genworld.errors import GenworldError


@dataclass(frozen=True)
class Episode:
    observations: np.ndarray  # (T+1, obs_dim) float32
    actions: np.ndarray  # (T, act_dim) float32
    rewards: np.ndarray  # (T,) float32
    terminations: np.ndarray  # (T,) bool
    truncations: np.ndarray  # (T,) bool

    def __len__(self) -> int:
        return len(self.actions)

    @property
    def episode_return(self) -> float:
        return float(self.rewards.sum(dtype=np.float64))

    @classmethod
    def from_arrays(
        cls,
        observations,
        actions,
        rewards,
        terminations,
        truncations,
        *,
        obs_dim: int | None = None,
        act_dim: int | None = None,
        where: str = "episode",
    ) -> Episode:
        """Convert to canonical dtypes and validate; errors name ``where`` and the field."""
        episode = cls(
            observations=np.asarray(observations, dtype=np.float32),
            actions=np.asarray(actions, dtype=np.float32),
            rewards=np.asarray(rewards, dtype=np.float32).reshape(-1),
            terminations=np.asarray(terminations, dtype=bool).reshape(-1),
            truncations=np.asarray(truncations, dtype=bool).reshape(-1),
        )
        episode.validate(obs_dim=obs_dim, act_dim=act_dim, where=where)
        return episode

    def validate(
        self, *, obs_dim: int | None = None, act_dim: int | None = None, where: str = "episode"
    ) -> None:
        """Raise GenworldError naming the first broken invariant."""
        o, a = self.observations, self.actions
        steps = len(a)
        if o.ndim != 2 or a.ndim != 2:
            raise GenworldError(
                f"{where}: observations and actions must be 2-D arrays (steps, dim), got "
                f"{o.shape} and {a.shape}"
            )
        if steps == 0:
            raise GenworldError(f"{where}: empty episode (0 actions); drop it from the dataset")
        if len(o) != steps + 1:
            raise GenworldError(
                f"{where}: observations must have one row more than actions "
                f"(got {len(o)} observations, {steps} actions)"
            )
        for field in ("rewards", "terminations", "truncations"):
            n = len(getattr(self, field))
            if n != steps:
                raise GenworldError(f"{where}: {field} has {n} entries, expected {steps}")
        if obs_dim is not None and o.shape[1] != obs_dim:
            raise GenworldError(
                f"{where}: observation dim {o.shape[1]} disagrees with the env spec ({obs_dim}); "
                "the dataset was made for another env or variant"
            )
        if act_dim is not None and a.shape[1] != act_dim:
            raise GenworldError(
                f"{where}: action dim {a.shape[1]} disagrees with the env spec ({act_dim}); "
                "the dataset was made for another env or variant"
            )
        for field in ("observations", "actions", "rewards"):
            values = getattr(self, field)
            if not np.all(np.isfinite(values)):
                bad = int(np.argwhere(~np.isfinite(values).reshape(len(values), -1))[0, 0])
                raise GenworldError(
                    f"{where}: non-finite value (NaN/inf) in {field} at step {bad}; "
                    "regenerate the dataset or drop this episode"
                )
        ends = self.terminations | self.truncations
        if np.any(ends[:-1]):
            bad = int(np.argmax(ends[:-1]))
            raise GenworldError(
                f"{where}: episode ends (terminal/truncation) at step {bad} before its last step "
                f"{steps - 1}; split it into separate episodes"
            )
        if self.terminations[-1] and self.truncations[-1]:
            raise GenworldError(
                f"{where}: last step is marked both terminal and truncated; a truncation is "
                "never a terminal, keep only terminations=True"
            )
