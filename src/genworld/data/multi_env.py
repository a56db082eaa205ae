"""MultiEnvDataset: several envs' data with different obs/act sizes, padded batches with masks.

Storage is per env (its own dims, contiguous torch tensors); batches are zero-padded to the
largest dims and carry ``obs_mask``, ``act_mask`` and ``env_idx`` (STYLE §4), so one code path
serves one env or many. Sampling is vectorised (index gathers per env, never per sample), seeded
with a ``torch.Generator``, and either *balanced* (equal share per env) or *proportional* (to each
env's number of transitions). Next observations come from the same episode only (Minari layout:
T+1 observations per episode), and sequence windows never cross an episode boundary.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from genworld.data.episodes import Episode
from genworld.errors import GenworldError
from genworld.types import Batch, EnvSpec, SeqBatch

Mode = Literal["balanced", "proportional"]


@dataclass(frozen=True)
class EnvData:
    """One env's transitions, flattened across episodes."""

    spec: EnvSpec
    observations: torch.Tensor  # (N, obs_dim)
    actions: torch.Tensor  # (N, act_dim)
    rewards: torch.Tensor  # (N,)
    next_observations: torch.Tensor  # (N, obs_dim)
    terminations: torch.Tensor  # (N,) float
    timesteps: torch.Tensor  # (N,) int64 step inside the episode
    steps_left: torch.Tensor  # (N,) int64 transitions from here to the episode's end (>= 1)
    episode_returns: np.ndarray  # (episodes,)

    @classmethod
    def from_episodes(cls, spec: EnvSpec, episodes: Sequence[Episode]) -> EnvData:
        if not episodes:
            raise GenworldError(f"{spec.name}: no episodes given")
        for i, ep in enumerate(episodes):
            ep.validate(
                obs_dim=spec.obs_dim, act_dim=spec.act_dim, where=f"{spec.name} episode {i}"
            )
        lengths = np.array([len(ep) for ep in episodes])
        timesteps = np.concatenate([np.arange(n) for n in lengths])
        steps_left = np.concatenate([np.arange(n, 0, -1) for n in lengths])
        cat = lambda name: np.concatenate([getattr(ep, name) for ep in episodes])  # noqa: E731
        return cls(
            spec=spec,
            observations=torch.from_numpy(
                np.concatenate([ep.observations[:-1] for ep in episodes])
            ),
            actions=torch.from_numpy(cat("actions")),
            rewards=torch.from_numpy(cat("rewards")),
            next_observations=torch.from_numpy(
                np.concatenate([ep.observations[1:] for ep in episodes])
            ),
            terminations=torch.from_numpy(cat("terminations").astype(np.float32)),
            timesteps=torch.from_numpy(timesteps),
            steps_left=torch.from_numpy(steps_left),
            episode_returns=np.array([ep.episode_return for ep in episodes]),
        )

    def __len__(self) -> int:
        return len(self.rewards)

    def take(self, rows: torch.Tensor) -> EnvData:
        """The transitions ``rows`` (for transition sampling: windows need whole episodes)."""
        fields = ("observations", "actions", "rewards", "next_observations", "terminations")
        fields += ("timesteps", "steps_left")
        taken = {name: getattr(self, name)[rows] for name in fields}
        return EnvData(spec=self.spec, episode_returns=self.episode_returns, **taken)


class MultiEnvDataset:
    """Per-env storage; ``sample_transitions`` / ``sample_windows`` give padded batches."""

    def __init__(self, data: Sequence[tuple[EnvSpec, Sequence[Episode]]]):
        if not data:
            raise GenworldError("MultiEnvDataset needs at least one (env spec, episodes) pair")
        self._set_envs([EnvData.from_episodes(spec, episodes) for spec, episodes in data])

    def _set_envs(self, envs: list[EnvData]) -> None:
        self.envs = envs
        self.specs = [e.spec for e in self.envs]
        self.obs_max = max(s.obs_dim for s in self.specs)
        self.act_max = max(s.act_dim for s in self.specs)
        self.sizes = torch.tensor([len(e) for e in self.envs], dtype=torch.float64)
        self._packed: _Packed | None = None
        self._rows_of: dict[tuple[int, ...], tuple[torch.Tensor, ...]] = {}

    @classmethod
    def from_minari(cls, dataset_ids: Sequence[str]) -> MultiEnvDataset:
        """Load genworld (or compatible) Minari datasets by id, validated against the registry."""
        from genworld.data.ids import parse_dataset_id
        from genworld.data.minari_io import read_episodes

        data = []
        for text in dataset_ids:
            dataset = parse_dataset_id(text)
            spec = dataset.spec
            data.append(
                (spec, read_episodes(str(dataset), obs_dim=spec.obs_dim, act_dim=spec.act_dim))
            )
        return cls(data)

    def __len__(self) -> int:
        return int(self.sizes.sum())

    def fingerprint(self) -> list[dict]:
        """Per env: its name, transitions, episodes and a SHA-256 (16 hex digits) of its
        observations, actions, rewards and terminations: which data a result was made from."""
        import hashlib

        prints = []
        for env in self.envs:
            digest = hashlib.sha256()
            for values in (env.observations, env.actions, env.rewards, env.terminations):
                digest.update(values.contiguous().numpy().tobytes())
            prints.append(
                {
                    "env": env.spec.name,
                    "transitions": len(env),
                    "episodes": len(env.episode_returns),
                    "sha256": digest.hexdigest()[:16],
                }
            )
        return prints

    def rows(self, rows: Sequence[torch.Tensor]) -> MultiEnvDataset:
        """A dataset of some transitions of each env (``rows[k]``: indices into env ``k``),
        for transition sampling (windows need whole episodes)."""
        if any(len(r) == 0 for r in rows):
            raise GenworldError("every env needs at least one transition in a row subset")
        subset = MultiEnvDataset.__new__(MultiEnvDataset)
        subset._set_envs([env.take(r) for env, r in zip(self.envs, rows, strict=True)])
        return subset

    def extended(self, episodes: Sequence[Sequence[Episode]]) -> MultiEnvDataset:
        """This dataset with ``episodes[k]`` appended to env ``k`` (whole episodes, after its
        own, so windows and histories stay inside episodes); an empty list adds nothing."""
        if len(episodes) != self.num_envs:
            raise GenworldError(
                f"give a list of episodes per env ({self.num_envs}), got {len(episodes)}"
            )
        envs = []
        for env, new in zip(self.envs, episodes, strict=True):
            if not new:
                envs.append(env)
                continue
            more = EnvData.from_episodes(env.spec, new)
            fields = ("observations", "actions", "rewards", "next_observations", "terminations")
            fields += ("timesteps", "steps_left")
            joined = {name: torch.cat([getattr(env, name), getattr(more, name)]) for name in fields}
            returns = np.concatenate([env.episode_returns, more.episode_returns])
            envs.append(EnvData(spec=env.spec, episode_returns=returns, **joined))
        out = MultiEnvDataset.__new__(MultiEnvDataset)
        out._set_envs(envs)
        return out

    def without_rows(self, rows: Sequence[torch.Tensor]) -> MultiEnvDataset:
        """This dataset minus the transitions ``rows[k]`` of each env ``k``."""
        keep = []
        for env, r in zip(self.envs, rows, strict=True):
            mask = torch.ones(len(env), dtype=torch.bool)
            mask[r] = False
            keep.append(torch.nonzero(mask).flatten())
        return self.rows(keep)

    @property
    def num_envs(self) -> int:
        return len(self.envs)

    def obs_masks(self) -> torch.Tensor:
        """``(num_envs, obs_max)`` bool: True on each env's real observation dims."""
        dims = torch.tensor([s.obs_dim for s in self.specs])
        return torch.arange(self.obs_max)[None, :] < dims[:, None]

    def act_masks(self) -> torch.Tensor:
        dims = torch.tensor([s.act_dim for s in self.specs])
        return torch.arange(self.act_max)[None, :] < dims[:, None]

    def env_counts(self, batch_size: int, generator: torch.Generator, mode: Mode) -> list[int]:
        """How many samples each env contributes to a batch."""
        n = self.num_envs
        if mode == "balanced":
            counts = [batch_size // n + (1 if i < batch_size % n else 0) for i in range(n)]
        elif mode == "proportional":
            choice = torch.multinomial(
                self.sizes / self.sizes.sum(), batch_size, True, generator=generator
            )
            counts = torch.bincount(choice, minlength=n).tolist()
        else:
            raise GenworldError(f"unknown sampling mode {mode!r}: use balanced or proportional")
        return counts

    def sample_transitions(
        self, batch_size: int, generator: torch.Generator, mode: Mode = "balanced"
    ) -> Batch:
        """A padded batch: each env's rows drawn uniformly (``torch.randint`` per env, in env
        order), gathered with one ``index_select`` from a packed padded table of all envs. The
        batch's tensors are column views of that gather (fresh memory, never the dataset's)."""
        counts = self.env_counts(batch_size, generator, mode)
        packed = self._packed_table()
        draws = [
            torch.randint(len(env), (count,), generator=generator) + offset
            for env, count, offset in zip(self.envs, counts, packed.offsets, strict=True)
            if count
        ]
        rows = packed.table.index_select(0, draws[0] if len(draws) == 1 else torch.cat(draws))
        obs, next_obs, act, rew, term = rows.split(packed.widths, 1)
        env_idx, obs_mask, act_mask = self._rows_for(tuple(counts))
        return Batch(
            observations=obs,
            actions=act,
            rewards=rew.squeeze(1),
            next_observations=next_obs,
            terminations=term.squeeze(1),
            env_idx=env_idx.clone(),
            obs_mask=obs_mask.clone(),
            act_mask=act_mask.clone(),
        )

    def _packed_table(self) -> _Packed:
        """All envs' transitions as one ``(N, 2 obs_max + act_max + 2)`` float table (obs, next
        obs, action zero-padded; reward; termination), built on first use. It copies the data
        once (4 bytes a value) so that a batch is one gather instead of five per env."""
        if self._packed is None:
            o, a = self.obs_max, self.act_max
            table = torch.zeros(len(self), 2 * o + a + 2)
            offsets, start = [], 0
            for env in self.envs:
                rows = table[start : start + len(env)]
                d, ad = env.spec.obs_dim, env.spec.act_dim
                rows[:, :d], rows[:, o : o + d] = env.observations, env.next_observations
                rows[:, 2 * o : 2 * o + ad] = env.actions
                rows[:, 2 * o + a], rows[:, 2 * o + a + 1] = env.rewards, env.terminations
                offsets.append(start)
                start += len(env)
            self._packed = _Packed(table, tuple(offsets), (o, o, a, 1, 1))
        return self._packed

    def _rows_for(self, counts: tuple[int, ...]) -> tuple[torch.Tensor, ...]:
        """``env_idx``, ``obs_mask``, ``act_mask`` of a batch with these per-env counts
        (cached: balanced sampling repeats the same counts every batch)."""
        if counts not in self._rows_of:
            if len(self._rows_of) > 64:  # proportional sampling: many count vectors
                self._rows_of.clear()
            env_idx = torch.repeat_interleave(torch.arange(self.num_envs), torch.tensor(counts))
            self._rows_of[counts] = (
                env_idx,
                self.obs_masks()[env_idx],
                self.act_masks()[env_idx],
            )
        return self._rows_of[counts]

    def sample_windows(
        self, batch_size: int, length: int, generator: torch.Generator, mode: Mode = "balanced"
    ) -> SeqBatch:
        """Windows of ``length`` steps starting at a uniform transition; past the episode's end
        the steps are zero with ``step_mask`` False (the window never crosses into the next)."""
        counts = self.env_counts(batch_size, generator, mode)
        shape = (batch_size, length)
        obs, next_obs = torch.zeros(*shape, self.obs_max), torch.zeros(*shape, self.obs_max)
        act = torch.zeros(*shape, self.act_max)
        rew, term = torch.zeros(shape), torch.zeros(shape)
        timesteps = torch.zeros(shape, dtype=torch.int64)
        step_mask = torch.zeros(shape, dtype=torch.bool)
        env_idx = torch.empty(batch_size, dtype=torch.int64)
        offsets = torch.arange(length)  # (L,)
        start = 0
        for k, (env, count) in enumerate(zip(self.envs, counts, strict=True)):
            if count == 0:
                continue
            first = torch.randint(len(env), (count,), generator=generator)  # (count,)
            valid = offsets[None, :] < env.steps_left[first][:, None]  # (count, L)
            idx = (first[:, None] + offsets[None, :]).clamp(max=len(env) - 1)  # (count, L)
            rows = slice(start, start + count)
            d, a = env.spec.obs_dim, env.spec.act_dim
            m = valid.float()
            obs[rows, :, :d] = env.observations[idx] * m[..., None]
            next_obs[rows, :, :d] = env.next_observations[idx] * m[..., None]
            act[rows, :, :a] = env.actions[idx] * m[..., None]
            rew[rows] = env.rewards[idx] * m
            term[rows] = env.terminations[idx] * m
            timesteps[rows] = env.timesteps[idx] * valid
            step_mask[rows] = valid
            env_idx[rows] = k
            start += count
        return SeqBatch(
            observations=obs,
            actions=act,
            rewards=rew,
            next_observations=next_obs,
            terminations=term,
            timesteps=timesteps,
            step_mask=step_mask,
            env_idx=env_idx,
            obs_mask=self.obs_masks()[env_idx],
            act_mask=self.act_masks()[env_idx],
        )


@dataclass(frozen=True)
class _Packed:
    table: torch.Tensor  # (N, 2 obs_max + act_max + 2)
    offsets: tuple[int, ...]  # first row of each env
    widths: tuple[int, ...]  # obs, next obs, action, reward, termination columns


def gather_transitions(
    parts: Sequence[tuple[EnvData, torch.Tensor, int]], obs_max: int, act_max: int
) -> Batch:
    """One padded batch from ``(env data, row indices, env id)`` parts, rows in that order;
    masks from each env's own dims."""
    n = sum(len(idx) for _, idx, _ in parts)
    obs, next_obs = torch.zeros(n, obs_max), torch.zeros(n, obs_max)
    act = torch.zeros(n, act_max)
    rew, term = torch.zeros(n), torch.zeros(n)
    env_idx = torch.empty(n, dtype=torch.int64)
    obs_dims, act_dims = torch.empty(n, dtype=torch.int64), torch.empty(n, dtype=torch.int64)
    start = 0
    for env, idx, k in parts:
        rows = slice(start, start + len(idx))
        d, a = env.spec.obs_dim, env.spec.act_dim
        obs[rows, :d], next_obs[rows, :d] = env.observations[idx], env.next_observations[idx]
        act[rows, :a] = env.actions[idx]
        rew[rows], term[rows] = env.rewards[idx], env.terminations[idx]
        env_idx[rows], obs_dims[rows], act_dims[rows] = k, d, a
        start += len(idx)
    return Batch(
        observations=obs,
        actions=act,
        rewards=rew,
        next_observations=next_obs,
        terminations=term,
        env_idx=env_idx,
        obs_mask=torch.arange(obs_max)[None] < obs_dims[:, None],
        act_mask=torch.arange(act_max)[None] < act_dims[:, None],
    )
